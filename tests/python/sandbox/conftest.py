"""Fixtures for `qed sandbox` tests: a running service (jailed, with a secret in its environment) and a small
stdlib HTTP client that speaks the NeMo-Skills sandbox protocol."""
import http.client
import json
import os
import pathlib
import re
import subprocess
import threading
import time
import uuid

import pytest

SECRET_NAME = "QED_SANDBOX_TEST_SECRET"
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex


class SandboxClient:
    """One keep-alive connection per call site is plenty for tests; a new one per request keeps threads safe."""

    def __init__(self, port):
        self.port = port

    def request(self, method, path, body=None, headers=None, raw=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            hdrs = {"Content-Type": "application/json"} if payload is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=payload, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None, raw=None, timeout=60):
        status, data = self.request(method, path, body, headers, raw, timeout)
        return status, json.loads(data)

    def execute(self, code, session=None, timeout=5.0, language="ipython", max_output_characters=1000,
                std_input="", expect_status=200, http_timeout=None, **extra):
        body = {"generated_code": code, "timeout": timeout, "language": language,
                "max_output_characters": max_output_characters, "std_input": std_input,
                "traceback_verbosity": "Plain", **extra}
        headers = {}
        if language == "ipython":
            headers["X-Session-ID"] = session or new_session_id()
        status, out = self.json("POST", "/execute", body, headers, timeout=http_timeout or timeout + 30)
        assert status == expect_status, (status, out)
        return out

    def delete(self, session):
        return self.json("DELETE", f"/sessions/{session}")

    def healthy(self):
        status, out = self.json("GET", "/health", timeout=10)
        return status == 200 and out["status"] == "healthy"


def new_session_id():
    return "t-" + uuid.uuid4().hex


class Service:
    def __init__(self, qed_bin, args, env_extra=None):
        env = dict(os.environ)
        env.update(env_extra or {})
        self.proc = subprocess.Popen([qed_bin, "sandbox", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=env, text=True)
        self.log = []
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            m = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("qed sandbox did not start:\n" + "".join(self.log))
        # Keep draining the log so the service never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        self.client = SandboxClient(self.port)

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def sandbox_service(qed_bin):
    # Small limits so bombs hit them fast; the secret must never be visible inside the jail. No pre-imports:
    # nearly every test opens fresh sessions, and `import sympy` costs ~0.7 CPU-seconds per interpreter (the
    # warm pool with pre-imports has its own test).
    svc = Service(qed_bin, ["--workers", "4", "--preimport", "", "--memory-mb", "768", "--max-processes", "24", "--tmpfs-mb", "32",
                            "--max-file-mb", "8", "--cpu-s", "120", "--max-sessions", "300"],
                  env_extra={SECRET_NAME: SECRET_VALUE})
    yield svc
    svc.stop()
    if os.environ.get("QED_SANDBOX_TEST_LOG"):
        pathlib.Path(os.environ["QED_SANDBOX_TEST_LOG"]).write_text("".join(svc.log))
    assert svc.proc.returncode == 0, "".join(svc.log[-50:])


@pytest.fixture(scope="session")
def sandbox(sandbox_service):
    return sandbox_service.client


@pytest.fixture
def host_unaffected(sandbox_service):
    """After the attack: the service process lives, answers /health, and a fresh session computes."""

    def check():
        assert sandbox_service.alive(), "service died:\n" + "".join(sandbox_service.log[-30:])
        client = sandbox_service.client
        assert client.healthy()
        out = client.execute("6 * 7")
        assert out["process_status"] == "completed" and out["stdout"] == "42\n", out

    return check
