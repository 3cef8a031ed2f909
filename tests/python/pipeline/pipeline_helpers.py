"""Helpers for the pipeline tests (a module of its own: `conftest` is ambiguous with tests/python/conftest.py)."""
import json
import pathlib
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
START_CLUSTER = REPO / "tools" / "slurm" / "start_cluster.sh"


def poll(condition, timeout_s: float, what: str, interval_s: float = 0.25):
    """Returns condition()'s first truthy value; fails the test after timeout_s. The only way these tests wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


class Qed:
    def __init__(self, binary: str):
        self.binary = binary

    def run(self, *args, check=True, timeout=240, input=None):
        r = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                           input=input)
        if check and r.returncode != 0:
            pytest.fail(f"qed {' '.join(map(str, args))} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
        return r

    def status(self, out_dir) -> dict:
        return json.loads(self.run("pipeline", "status", out_dir, "--json").stdout)


def sacct_states(job_ids) -> dict:
    """JobID -> State for the allocations of job_ids (array tasks as ID_i), from the accounting database."""
    r = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State"],
                       capture_output=True, text=True, check=True)
    states = {}
    for line in r.stdout.splitlines():
        job, state = line.split("|")
        states[job] = state.split(" ")[0]
    return states


def queue_empty(job_ids) -> bool:
    r = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True)
    live = {line.split("_")[0] for line in r.stdout.split()}
    return not (live & set(job_ids))
