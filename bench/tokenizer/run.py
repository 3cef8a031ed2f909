#!/usr/bin/env python3
"""Tokenizer encode throughput: qed (1 thread) vs HF `tokenizers` (1 thread), same documents, same ids.

Documents: every problem of ../shared/data/math/*.jsonl plus the text rows of tests/tokenizer/corpus.jsonl,
repeated until the total passes --mb megabytes (default 3). Both engines encode one document per call
(HF: Tokenizer.encode per document, and also encode_batch of all documents, both with TOKENIZERS_PARALLELISM=false
and RAYON_NUM_THREADS=1) and report the best of --repeat passes; the ratio is against the faster HF mode. The ids must agree (checksum), otherwise the run fails. Writes
bench/results/tokenizer-<date>.json with provenance and prints one ratio line per tokenizer.

  .venv/bin/python bench/tokenizer/run.py [--build build-bench] [--mb 3] [--repeat 3]
(builds the bench_tokenizer target with -DQED_BENCH=ON in --build first).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[2]


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def documents(shared: pathlib.Path, megabytes: float) -> list[str]:
    base = []
    for path in sorted((shared / "data" / "math").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            base.append(json.loads(line)["problem"])
    for line in (REPO / "tests" / "tokenizer" / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "text" in row:
            base.append(row["text"])
    docs, size = [], 0
    while size < megabytes * 1e6:
        for d in base:
            docs.append(d)
            size += len(d.encode("utf-8"))
    return docs


def hf_encode(tokenizer_json: pathlib.Path, docs: list[str], repeat: int) -> dict:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    best = float("inf")
    tokens = checksum = 0
    for _ in range(repeat):
        tokens, checksum = 0, 0
        start = time.perf_counter()
        for d in docs:
            ids = tok.encode(d, add_special_tokens=False).ids
            tokens += len(ids)
            for i in ids:
                checksum = (checksum * 1000003 + i) % (1 << 64)
        best = min(best, time.perf_counter() - start)
    # The checksum loop above is Python work HF is not responsible for: time encode alone for the score.
    best_encode = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for d in docs:
            tok.encode(d, add_special_tokens=False)
        best_encode = min(best_encode, time.perf_counter() - start)
    # encode_batch on one rayon thread: the same work without a Python round trip per document.
    best_batch = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        tok.encode_batch(docs, add_special_tokens=False)
        best_batch = min(best_batch, time.perf_counter() - start)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    return {"tokens": tokens, "checksum": str(checksum), "seconds": best_encode, "bytes": nbytes,
            "bytes_per_s": nbytes / best_encode, "tokens_per_s": tokens / best_encode,
            "batch_seconds": best_batch, "batch_bytes_per_s": nbytes / best_batch,
            "batch_tokens_per_s": tokens / best_batch}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build-bench")
    ap.add_argument("--mb", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bench-bin", help="use this bench_tokenizer binary instead of building one")
    ap.add_argument("--shared", default=str(REPO / ".." / "shared"), help="folder holding data/tokenizers, data/math")
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    shared = pathlib.Path(args.shared).resolve()

    build = REPO / args.build
    bench_bin = pathlib.Path(args.bench_bin) if args.bench_bin else build / "bench" / "tokenizer" / "bench_tokenizer"
    if not args.bench_bin:
        subprocess.run(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                        "-DQED_BENCH=ON", "-DBUILD_TESTING=OFF"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "bench_tokenizer"], check=True)

    docs = documents(shared, args.mb)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    results, lines = [], []
    with tempfile.TemporaryDirectory() as tmp:
        docs_path = pathlib.Path(tmp) / "docs.jsonl"
        docs_path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        for tok_dir in sorted((shared / "data" / "tokenizers").glob("*/")):
            name = tok_dir.name
            qed = json.loads(subprocess.run([str(bench_bin), str(tok_dir), str(docs_path), "--repeat",
                                             str(args.repeat)], check=True, capture_output=True,
                                            text=True).stdout)
            hf = hf_encode(tok_dir / "tokenizer.json", docs, args.repeat)
            if (qed["tokens"], qed["checksum"]) != (hf["tokens"], hf["checksum"]):
                print(f"{name}: qed and HF ids differ ({qed['tokens']} vs {hf['tokens']} tokens)", file=sys.stderr)
                return 1
            # The ratio is against HF's faster mode, so it never flatters qed.
            hf_best = max(hf["bytes_per_s"], hf["batch_bytes_per_s"])
            ratio = qed["bytes_per_s"] / hf_best
            workload = f"encode_{qed['bytes'] / 1e6:.1f}MB_{len(docs)}docs_1thread"
            rows = [("qed", "bytes_per_s", qed["bytes_per_s"]), ("qed", "tokens_per_s", qed["tokens_per_s"]),
                    ("hf-tokenizers-encode", "bytes_per_s", hf["bytes_per_s"]),
                    ("hf-tokenizers-encode", "tokens_per_s", hf["tokens_per_s"]),
                    ("hf-tokenizers-encode_batch", "bytes_per_s", hf["batch_bytes_per_s"]),
                    ("hf-tokenizers-encode_batch", "tokens_per_s", hf["batch_tokens_per_s"]),
                    ("qed", "speedup_vs_best_hf", ratio)]
            for engine, metric, value in rows:
                results.append({"engine": engine, "model": name, "precision": "n/a", "spec": "none",
                                "workload": workload, "metric": metric, "value": value})
            lines.append(f"{name}: qed {qed['bytes_per_s'] / 1e6:.1f} MB/s vs HF tokenizers "
                         f"{hf['bytes_per_s'] / 1e6:.1f} MB/s (encode per doc) / "
                         f"{hf['batch_bytes_per_s'] / 1e6:.1f} MB/s (encode_batch), single thread → {ratio:.2f}x "
                         f"the faster HF mode ({len(docs)} docs, {qed['tokens']} tokens, identical ids)")

    import tokenizers

    sha = os.environ.get("QED_GIT_SHA") or subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO,
                                                          capture_output=True, text=True).stdout.strip()
    now = datetime.datetime.now(datetime.timezone.utc)
    report = {
        "provenance": {
            "git_sha": sha, "device": cpu_model(), "cpu_model": cpu_model(), "driver": None, "cuda": None,
            "date": now.isoformat(timespec="seconds"), "command": " ".join([sys.executable] + sys.argv),
            "threads": 1, "hf_tokenizers_version": tokenizers.__version__,
            "hf_mode": "Tokenizer.encode per document, and encode_batch of all documents; "
                       "TOKENIZERS_PARALLELISM=false, RAYON_NUM_THREADS=1",
            "qed_mode": "Tokenizer::encode per document, 1 thread (bench_tokenizer)",
            "timing": f"best of {args.repeat} passes over all documents",
        },
        "results": results,
        "summary": lines,
    }
    out = pathlib.Path(args.out_dir) / f"tokenizer-{now.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for line in lines:
        print(line)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
