"""`qed serve --config CFG --tokenizer DIR`: random weights of an HF config's shape served with another directory's
tokenizer and chat template (how the 14B shape is measured on the GPU without its checkpoint), here a tiny Qwen2
shape with Qwen3's 152k vocabulary on the CPU backend, driven by the official `openai` client. The token ids the
server reports are checked against HF `tokenizers` and `transformers.apply_chat_template` on the same files."""
import json
import subprocess

import pytest

openai = pytest.importorskip("openai")
tokenizers = pytest.importorskip("tokenizers")

from serve_fixtures import REPO, Server  # noqa: E402

SHAPE = "tiny-qwen2-152k"
# Qwen2 layout (q/k/v bias) at a size the CPU runs in milliseconds, with the 14B shape's vocabulary, so Qwen3's
# tokenizer (ids up to 151668) fits as it does there. tools/gpu_serve_bench.sh --dry-run serves it too.
CONFIG_PATH = REPO / "tests" / "fixtures" / "serve" / SHAPE / "config.json"
CONFIG = json.loads(CONFIG_PATH.read_text())


@pytest.fixture(scope="module")
def tokenizer_dir(shared_dir):
    path = shared_dir / "data" / "tokenizers" / "qwen3"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def config_path():
    return CONFIG_PATH


@pytest.fixture(scope="module")
def server(qed_bin, config_path, tokenizer_dir):
    s = Server(qed_bin, "--seed", "3",
               model_args=("--config", str(config_path), "--tokenizer", str(tokenizer_dir), "--backend", "cpu"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def hf_tok(tokenizer_dir):
    return tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def test_model_id_is_the_config_folder_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [SHAPE]
    assert models.data[0].model_extra["max_model_len"] == CONFIG["max_position_embeddings"]


def test_completion_tokens_are_the_tokenizer_dirs(client, hf_tok):
    prompt = "Problem: What is 17 * 23?\nSolution:"
    r = client.completions.create(model=SHAPE, prompt=prompt, max_tokens=12, temperature=0,
                                  extra_body={"ignore_eos": True, "return_token_ids": True})
    c = r.choices[0]
    assert c.finish_reason == "length" and r.usage.completion_tokens == 12
    assert c.model_extra["prompt_token_ids"] == hf_tok.encode(prompt).ids
    ids = c.model_extra["token_ids"]
    assert len(ids) == 12 and all(0 <= i < CONFIG["vocab_size"] for i in ids)
    assert c.text == hf_tok.decode(ids, skip_special_tokens=True)


def test_chat_uses_the_tokenizer_dirs_template(client, tokenizer_dir):
    transformers = pytest.importorskip("transformers")
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    r = client.chat.completions.create(model=SHAPE, messages=messages, max_tokens=8, temperature=0.7, seed=1,
                                       extra_body={"ignore_eos": True, "return_token_ids": True})
    expected = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir)).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    hf = tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    assert r.choices[0].model_extra["prompt_token_ids"] == hf.encode(expected).ids
    assert r.usage.prompt_tokens == len(hf.encode(expected).ids)
    assert r.usage.completion_tokens == 8 and r.choices[0].finish_reason == "length"


def test_streaming_equals_non_streaming(client):
    kwargs = dict(model=SHAPE, messages=[{"role": "user", "content": "Count to ten."}], max_tokens=16,
                  temperature=0.7, seed=5, extra_body={"ignore_eos": True})
    full = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 16


def test_bench_serve_aimo_preset_with_overrides(qed_bin, server, tmp_path):
    out = tmp_path / "aimo.json"
    res = subprocess.run([qed_bin, "bench", "serve", "--url", server.url, "--preset", "aimo", "--problem",
                          "What is 2 + 2?", "--tir", "false", "--max-tokens", "24", "--ignore-eos", "--note",
                          "tools off: no sandbox here", "--output", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + res.stdout
    data = json.loads(out.read_text())
    d = data["details"]
    assert d["preset"]["overrides"] == {"max_tokens": 24, "ignore_eos": True, "tir": False}
    assert d["preset"]["notebook"]["max_tokens"] == 20000 and d["preset"]["notebook"]["samples"] == 12
    assert d["max_tokens"] == 24 and d["note"] == "tools off: no sandbox here"
    assert d["failed"] == 0 and d["generations"] + d["cut"] == 12 and d["generations"] >= 10
    # ignore_eos: every sample that was not cut ran to the overridden max_tokens.
    assert all(s["output_tokens"] == 24 for s in d["samples"] if s["cut"] is None)
    assert {r["workload"] for r in data["results"]} == {"aimo_12x24_keep10"}
    assert {r["model"] for r in data["results"]} == {SHAPE}


def qed_serve_error(qed_bin, *args):
    res = subprocess.run([qed_bin, "serve", "--port", "0", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.startswith("qed: error:")]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_bad_flag_combinations_fail_with_one_line(qed_bin, config_path, tokenizer_dir):
    cfg, tok = str(config_path), str(tokenizer_dir)
    assert "not both" in qed_serve_error(qed_bin, "--config", cfg, "--tokenizer", tok, "--model", str(REPO))
    assert "--tokenizer" in qed_serve_error(qed_bin, "--config", cfg)
    assert "no such file" in qed_serve_error(qed_bin, "--config", cfg + ".missing", "--tokenizer", tok)
    assert "need --backend cuda" in qed_serve_error(qed_bin, "--config", cfg, "--tokenizer", tok, "--dtype", "fp8")
    assert "--dtype applies to --config" in qed_serve_error(qed_bin, "--dtype", "fp8")
    assert "needs --model" in qed_serve_error(qed_bin, "--config", cfg, "--tokenizer", tok, "--spec", "redrafter",
                                              "--drafter", "x")


def test_tokenizer_beyond_the_vocab_is_refused(qed_bin, tmp_path, tokenizer_dir):
    small = tmp_path / "small" / "config.json"
    small.parent.mkdir()
    # Qwen's BPE ids only, without its special tokens (the EOS goes too: it would be outside the vocabulary).
    small.write_text(json.dumps({k: v for k, v in dict(CONFIG, vocab_size=151643).items() if k != "eos_token_id"}))
    line = qed_serve_error(qed_bin, "--config", str(small), "--tokenizer", str(tokenizer_dir))
    assert "ids up to 151668" in line and "vocab_size 151643" in line
    # The same check for a checkpoint with another directory's tokenizer (the demo model's vocabulary is small).
    line = qed_serve_error(qed_bin, "--model", str(REPO / "models" / "demo"), "--tokenizer", str(tokenizer_dir))
    assert "ids up to 151668" in line and "beyond vocab_size" in line



def test_merge_into_refuses_a_file_it_did_not_write(qed_bin, server, tmp_path):
    target = tmp_path / "other.json"
    target.write_text(json.dumps({"provenance": {}, "results": []}))  # a single run's JSON: no runs, no details map
    res = subprocess.run([qed_bin, "bench", "serve", "--url", server.url, "--requests", "1", "--max-tokens", "2",
                          "--merge-into", str(target)], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and res.stderr.startswith("qed: error: --merge-into"), res.stderr
    assert json.loads(target.read_text()) == {"provenance": {}, "results": []}


def test_merge_into_keeps_repeated_workloads_apart(qed_bin, server, tmp_path):
    target = tmp_path / "merged.json"
    for _ in range(2):
        res = subprocess.run([qed_bin, "bench", "serve", "--url", server.url, "--requests", "2", "--max-tokens", "3",
                              "--ignore-eos", "--merge-into", str(target)], capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
    data = json.loads(target.read_text())
    workload = "serve_random32w_c8_n2_3tok"
    assert list(data["details"]) == [workload, workload + "#2"]
    assert [r["workload"] for r in data["runs"]] == [workload, workload + "#2"]
    # Both runs' rows, in order: each run has one output_tok_per_s row.
    assert [r["metric"] for r in data["results"]].count("output_tok_per_s") == 2
    assert len(data["results"]) % 2 == 0
    assert all(d["total_output_tokens"] == 6 for d in data["details"].values())
    assert data["provenance"] == {k: v for k, v in data["runs"][0].items() if k != "workload"}
