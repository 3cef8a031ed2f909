import os
import subprocess

import pytest
from pipeline_helpers import START_CLUSTER, Qed


@pytest.fixture(scope="session")
def qed(qed_bin) -> Qed:
    return Qed(qed_bin)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node Slurm cluster on this machine, started (and installed) by tools/slurm/start_cluster.sh.

    The daemons are left running for the next session; the script is idempotent. Needs root, as in CI."""
    if os.geteuid() != 0:
        pytest.skip("Slurm tests need root to install and start slurmctld/slurmd/munge (CI runs as root)")
    r = subprocess.run([str(START_CLUSTER)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"{START_CLUSTER} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout.strip()
