#!/usr/bin/env python3
"""Benchmark of `qed sandbox` (not a test): latency of a trivial call in a warm session, of a session's first
call (served from the warm pool, and with the pool empty), and 64 concurrent sessions. A bare
`python3 -c 'print(1+1)'` subprocess (no jail, no service) is measured in the same run as the peer.

    .venv/bin/python bench/sandbox/bench_sandbox.py --qed build/qed

Writes one JSON file under bench/results/ (see shared/design.md, "Formats").
"""
import argparse
import datetime
import http.client
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parents[2]


class Service:
    def __init__(self, qed, args):
        self.proc = subprocess.Popen([qed, "sandbox", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.port = None
        for line in self.proc.stdout:
            m = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise RuntimeError("qed sandbox did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Client:
    """Keep-alive connection, like NeMo-Skills' httpx client."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        self.conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read())

    def execute(self, code, session):
        status, out = self.call("POST", "/execute", {"generated_code": code, "timeout": 10.0, "language": "ipython"},
                                {"X-Session-ID": session})
        if status != 200 or out.get("process_status") != "completed":
            raise RuntimeError(f"call failed: {status} {out}")
        return out


def percentile(values, q):
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def wait_for_pool(client, size, limit_s=180):
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if client.call("GET", "/health")[1]["idle_workers"] >= size:
            return
        time.sleep(0.05)
    raise RuntimeError("warm pool did not refill")


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def provenance(command):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    cpu = "unknown"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"git_sha": sha or "unknown", "device": f"{cpu} ({os.cpu_count()} cores, CPU only)", "driver": "n/a",
            "cuda": "n/a", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command, "host": platform.node(), "kernel": platform.release()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--qed", default=str(REPO / "build" / "qed"))
    parser.add_argument("--warm-calls", type=int, default=300)
    parser.add_argument("--cold-sessions", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=64)
    parser.add_argument("--calls-per-session", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []

    def add(engine, workload, metric, value):
        results.append({"engine": engine, "workload": workload, "metric": metric, "value": round(value, 3)})
        print(f"{engine:20s} {workload:28s} {metric:12s} {value:10.2f}")

    pool = 8
    svc = Service(args.qed, ["--workers", str(pool), "--max-sessions", "1024"])
    try:
        client = Client(svc.port)
        wait_for_pool(client, pool)

        # 1. Warm session: the same session, trivial cell, one call after another.
        sid = "bench-" + uuid.uuid4().hex
        client.execute("print(1+1)", sid)
        warm = [timed(lambda: client.execute("print(1+1)", sid)) for _ in range(args.warm_calls)]
        add("qed-sandbox", "warm_print_1_plus_1", "p50_ms", statistics.median(warm))
        add("qed-sandbox", "warm_print_1_plus_1", "p99_ms", percentile(warm, 0.99))

        # 2. New session served by the warm pool (sympy+numpy already imported); pool refilled in between.
        cold = []
        for _ in range(args.cold_sessions):
            wait_for_pool(client, pool)
            sid = "bench-" + uuid.uuid4().hex
            cold.append(timed(lambda: client.execute("print(1+1)", sid)))
            client.call("DELETE", f"/sessions/{sid}")
        add("qed-sandbox", "new_session_from_pool", "p50_ms", statistics.median(cold))
        add("qed-sandbox", "new_session_from_pool", "p99_ms", percentile(cold, 0.99))

        # 3. 64 concurrent sessions (more sessions than the pool holds: the rest start on demand).
        wait_for_pool(client, pool)
        errors = []
        latencies = []
        lock = threading.Lock()

        def one_session(i):
            c = Client(svc.port)
            s = f"bench-conc-{i}-{uuid.uuid4().hex}"
            try:
                for _ in range(args.calls_per_session):
                    ms = timed(lambda: c.execute("print(1+1)", s))
                    with lock:
                        latencies.append(ms)
                c.call("DELETE", f"/sessions/{s}")
            except Exception as e:  # counted, reported
                with lock:
                    errors.append(str(e))

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrent) as ex:
            list(ex.map(one_session, range(args.concurrent)))
        wall = time.perf_counter() - t0
        add("qed-sandbox", f"concurrent_{args.concurrent}_sessions", "errors", len(errors))
        add("qed-sandbox", f"concurrent_{args.concurrent}_sessions", "total_s", wall)
        add("qed-sandbox", f"concurrent_{args.concurrent}_sessions", "p50_ms", statistics.median(latencies))
        add("qed-sandbox", f"concurrent_{args.concurrent}_sessions", "p99_ms", percentile(latencies, 0.99))
    finally:
        svc.stop()

    # 4. Pool empty: every new session starts a jail; with and without the sympy/numpy pre-import.
    for label, extra in (("jail_start_with_preimport", []), ("jail_start_no_preimport", ["--preimport", ""])):
        svc = Service(args.qed, ["--workers", "0", *extra])
        try:
            client = Client(svc.port)
            client.execute("print(1+1)", "bench-" + uuid.uuid4().hex)  # takes the startup probe worker
            starts = [timed(lambda: client.execute("print(1+1)", "bench-" + uuid.uuid4().hex)) for _ in range(10)]
            add("qed-sandbox", label, "p50_ms", statistics.median(starts))
        finally:
            svc.stop()

    # Peer: a bare interpreter per call, no jail, no service.
    bare = [timed(lambda: subprocess.run(["/usr/bin/python3", "-c", "print(1+1)"], capture_output=True, check=True))
            for _ in range(30)]
    add("python3-subprocess", "print_1_plus_1_per_process", "p50_ms", statistics.median(bare))

    out = pathlib.Path(args.out) if args.out else (
        REPO / "bench" / "results" / f"sandbox-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "bench/sandbox/bench_sandbox.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None)
    out.write_text(json.dumps({"provenance": provenance(command), "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
