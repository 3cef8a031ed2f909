import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared").resolve()


@pytest.fixture(scope="session")
def qed_bin() -> str:
    path = os.environ.get("QED_BIN", str(REPO / "build" / "qed"))
    if not os.path.exists(path):
        pytest.fail(f"qed binary not found at {path}; build first (./setup.sh)")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
    return SHARED
