"""Speculative decoding through the CLI: `--spec ngram` on qed generate, batch and serve leaves greedy outputs
token-identical, reports its acceptance, and bad flags are one-line errors."""
import json
import subprocess

import pytest

from serve_fixtures import httpx, DEMO, MODEL, Server  # noqa: F401

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
PROMPT = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 92^2420 modulo 745?<|im_end|>\n"
          "<|im_start|>assistant\n")


def generate(qed_bin, *extra):
    r = subprocess.run([qed_bin, "generate", "--model", str(DEMO), "--prompt", PROMPT, "--max-tokens", "48",
                        "--temperature", "0", "--threads", "2", "--json", *extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_generate_with_ngram_drafts_is_token_identical(qed_bin):
    plain = generate(qed_bin)
    spec = generate(qed_bin, "--spec", "ngram", "--num-draft-tokens", "3")
    assert spec["token_ids"] == plain["token_ids"] and spec["text"] == plain["text"]
    assert "speculation" not in plain
    s = spec["speculation"]
    assert s["spec"] == "ngram" and s["num_draft_tokens"] == 3
    assert 0 < s["accepted_tokens"] <= s["draft_tokens"] <= 3 * s["verify_steps"]
    assert s["mean_accepted_length"] == pytest.approx(1 + s["accepted_tokens"] / s["verify_steps"])


@pytest.mark.parametrize("flags", [["--spec", "medusa"], ["--spec", "ngram", "--num-draft-tokens", "0"]])
def test_bad_spec_flags_are_one_line_errors(qed_bin, flags):
    r = subprocess.run([qed_bin, "generate", "--model", str(DEMO), "--prompt", "x", *flags],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip() and "--" in r.stderr


def test_batch_reports_speculation_and_keeps_outputs(qed_bin, tmp_path):
    rows = [{"id": i, "prompt": PROMPT.replace("92^2420", f"{80 + i}^{1000 + i}"), "max_tokens": 40, "temperature": 0}
            for i in range(4)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    outputs = {}
    for label, extra in [("none", []), ("ngram", ["--spec", "ngram"])]:
        out, stats = tmp_path / f"{label}.jsonl", tmp_path / f"{label}.json"
        subprocess.run([qed_bin, "batch", "--model", str(DEMO), "--input", str(tmp_path / "in.jsonl"), "--output",
                        str(out), "--threads", "2", "--max-batch", "4", "--stats", str(stats), *extra],
                       check=True, capture_output=True, text=True, timeout=300)
        outputs[label] = {json.loads(l)["id"]: json.loads(l)["token_ids"] for l in out.read_text().splitlines()}
        summary = json.loads(stats.read_text())
        assert summary["speculation"]["spec"] == label
    assert outputs["ngram"] == outputs["none"]
    assert summary["speculation"]["accepted_tokens"] > 0


def test_serve_with_ngram_drafts_answers_the_same_and_counts_acceptance(qed_bin):
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 40, "temperature": 0}
    texts = {}
    for label, extra in [("none", []), ("ngram", ["--spec", "ngram", "--num-draft-tokens", "4"])]:
        server = Server(qed_bin, *extra)
        try:
            before = server.metrics()
            r = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
            assert r.status_code == 200, r.text
            texts[label] = r.json()["choices"][0]["text"]
            after = server.metrics()
        finally:
            server.stop()
        accepted = after["qed:spec_decode_num_accepted_tokens_total"] - before["qed:spec_decode_num_accepted_tokens_total"]
        drafts = after["qed:spec_decode_num_draft_tokens_total"] - before["qed:spec_decode_num_draft_tokens_total"]
        if label == "none":
            assert accepted == 0 and drafts == 0
        else:
            assert 0 < accepted <= drafts
    assert texts["ngram"] == texts["none"]


def write_rd_head(path, vocab, hidden, layers=2, seed=0):
    """A random ReDrafter head in apple/ml-recurrent-drafter's layout, written by the safetensors library (what
    Drafter.save_pretrained writes: RD's config.json + model.safetensors with its module names)."""
    np = pytest.importorskip("numpy")
    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(seed)
    exit_dim = 2 * hidden

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    tensors = {}
    for i in range(layers):
        tensors[f"lm_head.{i}.linear.weight"] = w(exit_dim, exit_dim)
        tensors[f"lm_head.{i}.linear.bias"] = w(exit_dim)
    tensors[f"lm_head.{layers}.weight"] = w(vocab, exit_dim)
    tensors["rnn_u.weight"], tensors["rnn_u.bias"], tensors["rnn_w.weight"] = w(hidden, hidden), w(hidden), w(hidden, hidden)
    path.mkdir()
    st.save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({
        "model_type": "recurrent_drafting_drafter", "vocab_size": vocab, "hidden_size": hidden, "exit_dim": exit_dim,
        "num_draft_layers": layers, "num_lookback_tokens": -1, "rnn": True}))


def test_generate_with_a_reference_layout_redrafter_head_is_token_identical(qed_bin, tmp_path):
    config = json.loads((DEMO / "config.json").read_text())
    write_rd_head(tmp_path / "head", config["vocab_size"], config["hidden_size"])
    plain = generate(qed_bin)
    spec = generate(qed_bin, "--spec", "redrafter", "--drafter", str(tmp_path / "head"), "--num-beams", "3",
                    "--num-draft-tokens", "2")
    assert spec["token_ids"] == plain["token_ids"]
    s = spec["speculation"]
    assert s["spec"] == "redrafter" and s["verify_steps"] > 0 and s["draft_tokens"] > 0


def test_redrafter_without_a_head_is_a_one_line_error(qed_bin):
    r = subprocess.run([qed_bin, "generate", "--model", str(DEMO), "--prompt", "x", "--spec", "redrafter"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--drafter" in r.stderr
