"""Checks the shipped demo model folder (models/demo/): tokenizer built like Qwen2.5's, ChatML template, config and
weights that qed's Qwen2 loader expects, size budget."""
import json
import pathlib
import struct
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"
sys.path.insert(0, str(REPO / "tools" / "demo"))

import make_data  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tok():
    return tokenizers.Tokenizer.from_file(str(DEMO / "tokenizer.json"))


@pytest.fixture(scope="module")
def tok_json():
    return json.loads((DEMO / "tokenizer.json").read_text())


def test_pipeline_matches_qwen(tok_json, shared_dir):
    qwen = shared_dir / "data" / "tokenizers" / "qwen3" / "tokenizer.json"
    if not qwen.exists():
        pytest.skip(f"{qwen} not present")
    ref = json.loads(qwen.read_text())
    for key in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        assert tok_json[key] == ref[key], key
    assert tok_json["model"]["type"] == "BPE" and tok_json["model"]["byte_fallback"] is False


def test_added_tokens_are_qwen25s(tok, tok_json):
    added = {t["content"]: t for t in tok_json["added_tokens"]}
    assert {k: v["special"] for k, v in added.items()} == {
        "<|endoftext|>": True, "<|im_start|>": True, "<|im_end|>": True, "<tool_call>": False, "</tool_call>": False}
    size = tok.get_vocab_size()
    assert sorted(v["id"] for v in added.values()) == list(range(size - 5, size))
    text = "a<|im_start|>b<tool_call>\nprint(1)\n</tool_call><|im_end|>"
    ids = tok.encode(text, add_special_tokens=False).ids
    for t in added:
        if t in text:
            assert tok.token_to_id(t) in ids


def test_roundtrip_and_output_block_tokenizes_the_same_alone(tok):
    data = make_data.generate(seed=3, n_train=len(make_data.FAMILIES), n_heldout=len(make_data.FAMILIES))
    for row in data["train"] + data["heldout"]:
        for mode in ("tir", "plain"):
            text = make_data.render_chatml(make_data.chat_messages(row, mode, None, 8))
            assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text
        # The TIR loop appends the tokens of the output block to the generated ids; they must be the tokens the
        # model saw in training, where the block was tokenized inside the whole text.
        sol = row["tir_solution"]
        block = make_data.format_output_block(row["code_output"])
        head, tail = sol.split(block)
        whole = tok.encode(sol, add_special_tokens=False).ids
        parts = [tok.encode(p, add_special_tokens=False).ids for p in (head, block, tail)]
        assert whole == parts[0] + parts[1] + parts[2], row["id"]


def test_tokenizer_config_has_qwen25_chatml():
    cfg = json.loads((DEMO / "tokenizer_config.json").read_text())
    qwen = json.loads((REPO / "tests/fixtures/chat_templates/qwen2.5/tokenizer_config.json").read_text())
    assert cfg["chat_template"] == qwen["chat_template"]
    assert cfg["eos_token"] == "<|im_end|>" and cfg["pad_token"] == "<|endoftext|>" and cfg["bos_token"] is None


def test_transformers_renders_the_same_prompt_as_the_training_code():
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(DEMO))
    row = {"problem": "What is 7^2024 mod 1000?", "tir_solution": "x", "plain_solution": "y"}
    for system in (None, ""):
        msgs = make_data.chat_messages(row, "tir", system, 8)[:-1]
        assert hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == \
            make_data.render_chatml(msgs, add_generation_prompt=True)


def _safetensors_header(path: pathlib.Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def test_weights_config_and_size(tok):
    weights = DEMO / "model.safetensors"
    if not weights.exists():
        pytest.skip("models/demo/model.safetensors not trained yet")
    cfg = json.loads((DEMO / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
    assert cfg["tie_word_embeddings"] is True
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    assert cfg["num_key_value_heads"] < cfg["num_attention_heads"]  # GQA
    assert tok.get_vocab_size() <= cfg["vocab_size"] and cfg["vocab_size"] % 64 == 0
    header = _safetensors_header(weights)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert {v["dtype"] for v in tensors.values()} == {"BF16"}
    assert tensors["model.embed_tokens.weight"]["shape"] == [cfg["vocab_size"], cfg["hidden_size"]]
    assert "lm_head.weight" not in tensors
    assert "model.layers.0.self_attn.q_proj.bias" in tensors
    gen = json.loads((DEMO / "generation_config.json").read_text())
    assert tok.token_to_id("<|im_end|>") in gen["eos_token_id"]
    total = sum(p.stat().st_size for p in DEMO.iterdir() if p.is_file())
    assert total <= 30 * 1024 * 1024, total


def test_qed_cpu_backend_solves_with_a_real_tool_call(qed_bin, tok):
    """Two greedy rounds on qed's CPU backend with a Python run in between: the demo model must write the code,
    read the real output block and box it (the issue's 'What is 7^2024 mod 1000?')."""
    if not (DEMO / "model.safetensors").exists():
        pytest.skip("models/demo/model.safetensors not trained yet")
    import subprocess
    import train

    def qed_generate(ids):
        res = subprocess.run([qed_bin, "generate", "--model", str(DEMO), "--prompt-ids", ",".join(map(str, ids)),
                              "--temperature", "0", "--max-tokens", "160", "--threads", "1", "--json"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["token_ids"]

    tool_end = tok.token_to_id("</tool_call>")
    prompt = tok.encode(make_data.render_chatml([{"role": "user", "content": "What is 7^2024 mod 1000?"}], True)).ids
    first = qed_generate(prompt)
    assert tool_end in first
    first = first[:first.index(tool_end) + 1]
    code = train.pending_code(tok.decode(first, skip_special_tokens=False))
    assert code == "\nprint(pow(7, 2024, 1000))\n"
    first += tok.encode(make_data.format_output_block(train.execute(code))).ids
    text = tok.decode(first + qed_generate(prompt + first), skip_special_tokens=False)
    assert "```output\n401\n```\n" in text and text.endswith("<|im_end|>")
    assert train.extract_boxed(text) == "401"
