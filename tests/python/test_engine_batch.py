"""`qed batch`: offline generation through the engine on the tiny HF fixture models.

Checks the output rows against HF's greedy continuations, resume after a kill (no duplicate or lost rows, a
half-written last row is dropped), skipping of ids already done, text prompts + stop strings with a small
byte-level BPE tokenizer trained here, and one-line errors for bad input.
"""

import json
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "hf" / "qwen2_gqa_bias"


def fixture_json():
    return json.loads((FIXTURE / "fixture.json").read_text())


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_batch(qed_bin, inp, out, *extra, model=FIXTURE, timeout=300):
    cmd = [qed_bin, "batch", "--model", str(model), "--input", str(inp), "--output", str(out), "--threads", "2"]
    return subprocess.run(cmd + list(extra), capture_output=True, text=True, timeout=timeout)


def test_batch_rows_match_hf_greedy(qed_bin, tmp_path):
    fx = fixture_json()
    rows = [
        {"id": f"p{i}", "prompt_ids": p, "max_tokens": fx["max_new_tokens"], "temperature": 0, "ignore_eos": True}
        for i, p in enumerate(fx["prompts"])
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_batch(qed_bin, tmp_path / "in.jsonl", tmp_path / "out.jsonl", "--max-batch", "4")
    assert res.returncode == 0, res.stderr
    out = {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert sorted(out) == sorted(r["id"] for r in rows)
    for i, expected in enumerate(fx["greedy"]):
        row = out[f"p{i}"]
        assert row["token_ids"] == expected
        assert row["finish_reason"] == "length"
        assert row["prompt_tokens"] == len(fx["prompts"][i])
        assert row["timings"]["ttft_s"] >= row["timings"]["queue_s"] >= 0
    assert "rows" in res.stderr  # progress on stderr


def test_batch_resume_after_kill_has_no_duplicates_or_losses(qed_bin, tmp_path):
    fx = fixture_json()
    rows = [
        {"id": i, "prompt_ids": fx["prompts"][i % 5][: 1 + i % 7], "max_tokens": 64, "temperature": 0,
         "ignore_eos": True}
        for i in range(60)
    ]
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, rows)
    reference = tmp_path / "reference.jsonl"
    assert run_batch(qed_bin, inp, reference, "--max-batch", "4").returncode == 0

    cmd = [qed_bin, "batch", "--model", str(FIXTURE), "--input", str(inp), "--output", str(out), "--threads", "1",
           "--max-batch", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_jsonl(out))
    assert 3 <= done_before < len(rows), "the kill should land mid-run"
    # A row cut off mid-write by a crash must be dropped, not kept or duplicated.
    with open(out, "a") as f:
        f.write('{"id": 29, "text": "')

    res = run_batch(qed_bin, inp, out, "--max-batch", "4")
    assert res.returncode == 0, res.stderr
    assert f"{done_before} already in" in res.stderr
    got = read_jsonl(out)
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)) == len(rows)
    expected = {r["id"]: r["token_ids"] for r in read_jsonl(reference)}
    assert {r["id"]: r["token_ids"] for r in got} == expected


def test_batch_skips_ids_already_in_output(qed_bin, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(inp, [{"id": "a", "prompt_ids": [1, 2, 3]}, {"id": "b", "prompt_ids": [4, 5]}])
    write_jsonl(out, [{"id": "a", "text": "", "token_ids": [9], "finish_reason": "marker"}])
    res = run_batch(qed_bin, inp, out)
    assert res.returncode == 0, res.stderr
    got = read_jsonl(out)
    assert [r["id"] for r in got] == ["a", "b"]
    assert got[0]["finish_reason"] == "marker"


def test_batch_parallel_samples_are_seeded(qed_bin, tmp_path):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, [{"id": 1, "prompt_ids": [5, 6, 7], "n": 3, "seed": 11, "temperature": 1.0, "max_tokens": 8,
                       "ignore_eos": True}])
    a = run_batch(qed_bin, inp, tmp_path / "a.jsonl")
    b = run_batch(qed_bin, inp, tmp_path / "b.jsonl", "--max-batch", "1", "--no-prefix-cache")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    row_a, row_b = read_jsonl(tmp_path / "a.jsonl")[0], read_jsonl(tmp_path / "b.jsonl")[0]
    assert len(row_a["choices"]) == 3
    assert row_a["choices"] == row_b["choices"]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt_ids": [1]}, "needs an 'id'"),
        ({"id": 1}, "exactly one of 'prompt', 'prompt_ids'"),
        ({"id": 1, "prompt_ids": [1], "temprature": 0}, "unknown field 'temprature'"),
        ({"id": 1, "prompt_ids": [100000]}, "outside the vocabulary"),
        ({"id": 1, "prompt": "hello"}, "no tokenizer.json"),
    ],
)
def test_batch_bad_rows_are_one_line_errors(qed_bin, tmp_path, row, message):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, [row])
    res = run_batch(qed_bin, inp, tmp_path / "out.jsonl")
    assert res.returncode == 1
    assert message in res.stderr
    assert "in.jsonl" in res.stderr


@pytest.fixture(scope="module")
def model_with_tokenizer(tmp_path_factory):
    """The fixture model plus a byte-level BPE tokenizer of < 512 tokens trained here, so text prompts work."""
    tokenizers = pytest.importorskip("tokenizers")
    d = tmp_path_factory.mktemp("model")
    for name in ("config.json", "model.safetensors"):
        shutil.copy(FIXTURE / name, d / name)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["the answer is 42", "compute the sum of the digits", "def f(x): return x * x"] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(d / "tokenizer.json"))
    return d, tok


def test_batch_text_prompt_and_stop_string(qed_bin, tmp_path, model_with_tokenizer):
    model, tok = model_with_tokenizer
    inp = tmp_path / "in.jsonl"
    base = {"prompt": "the answer is", "max_tokens": 30, "temperature": 0, "ignore_eos": True}
    write_jsonl(inp, [{"id": "free", **base}])
    res = run_batch(qed_bin, inp, tmp_path / "free.jsonl", model=model)
    assert res.returncode == 0, res.stderr
    free = read_jsonl(tmp_path / "free.jsonl")[0]
    assert free["prompt_tokens"] == len(tok.encode("the answer is").ids)
    assert free["text"] == tok.decode(free["token_ids"])
    text = free["text"]
    if len(text) < 8:
        pytest.skip("greedy text too short to place a stop string")
    stop = text[3:7]
    write_jsonl(inp, [{"id": "stopped", **base, "stop": [stop]}])
    res = run_batch(qed_bin, inp, tmp_path / "stopped.jsonl", model=model)
    assert res.returncode == 0, res.stderr
    stopped = read_jsonl(tmp_path / "stopped.jsonl")[0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == text[: text.find(stop)]
