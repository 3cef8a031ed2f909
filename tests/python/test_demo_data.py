"""Tests of the demo model's data generator and of train.py's torch-free data plumbing (tools/demo/)."""
import collections
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "demo"))

import make_data  # noqa: E402
import train  # noqa: E402

FAMILY_COUNT = len(make_data.FAMILIES)


@pytest.fixture(scope="module")
def data():
    return make_data.generate(seed=7, n_train=4 * FAMILY_COUNT, n_heldout=2 * FAMILY_COUNT)


def all_rows(data):
    return data["train"] + data["heldout"]


def test_generator_is_deterministic_and_independent_of_jobs(data):
    again = make_data.generate(seed=7, n_train=4 * FAMILY_COUNT, n_heldout=2 * FAMILY_COUNT, jobs=2)
    assert again == data
    other = make_data.generate(seed=8, n_train=4 * FAMILY_COUNT, n_heldout=2 * FAMILY_COUNT)
    assert [r["problem"] for r in other["train"]] != [r["problem"] for r in data["train"]]


def test_every_family_is_in_both_splits(data):
    for split, per in (("train", 4), ("heldout", 2)):
        counts = collections.Counter(r["family"] for r in data[split])
        assert counts == {f.name: per for f in make_data.FAMILIES}, split


def test_split_is_by_key_parameter_and_disjoint(data):
    for row in all_rows(data):
        assert make_data.heldout_key(row["split_key"]) == (row["split"] == "heldout"), row["id"]
    train_keys = {(r["family"], r["split_key"]) for r in data["train"]}
    held_keys = {(r["family"], r["split_key"]) for r in data["heldout"]}
    assert not train_keys & held_keys
    assert not {r["problem"] for r in data["train"]} & {r["problem"] for r in data["heldout"]}


def test_tir_output_block_matches_a_real_python_run(data):
    for row in all_rows(data):
        res = subprocess.run([sys.executable, "-c", row["code"]], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and res.stderr == "", (row["id"], res.stderr)
        assert res.stdout == row["code_output"], row["id"]
        block = make_data.format_output_block(res.stdout)
        assert block in row["tir_solution"], row["id"]
        # the code's output is the independently computed answer
        assert res.stdout.strip() == row["expected_answer"], row["id"]


def test_tir_solution_has_the_openmath_byte_format(data):
    for row in all_rows(data):
        sol = row["tir_solution"]
        head, rest = sol.split("\n\n<tool_call>\n", 1)
        assert head and "\n" not in head
        code, rest = rest.split("\n</tool_call>\n```output\n", 1)
        assert code == row["code"]
        stdout, final = rest.split("```\n", 1)
        assert stdout == row["code_output"] and stdout.endswith("\n")
        assert final[:1].isalnum() and "\n" not in final
        assert sol.count("<tool_call>") == sol.count("</tool_call>") == 1
        assert train.extract_boxed(sol) == row["expected_answer"]
        assert train.pending_code(sol.split("\n```output\n")[0]) == "\n" + code + "\n"


def test_plain_solution_states_the_answer_without_code(data):
    for row in all_rows(data):
        assert "<tool_call>" not in row["plain_solution"] and "```" not in row["plain_solution"]
        assert train.extract_boxed(row["plain_solution"]) == row["expected_answer"]


def test_extract_boxed_takes_last_balanced_box():
    assert train.extract_boxed("a \\boxed{1} b \\boxed{\\frac{1}{2}} c") == "\\frac{1}{2}"
    assert train.extract_boxed("no box") is None
    assert train.extract_boxed("\\boxed 5") is None
    assert train.extract_boxed("\\boxed{12") is None


def test_pending_code_only_for_an_open_call():
    assert train.pending_code("x <tool_call>\nprint(1)\n</tool_call>") == "\nprint(1)\n"
    assert train.pending_code("x <tool_call>\nprint(1)\n</tool_call>\n```output\n1\n```\ndone") is None
    assert train.pending_code("x </tool_call>") is None


def test_execute_returns_stdout_then_stderr():
    assert train.execute("print(6 * 7)") == "42\n"
    out = train.execute("print(1)\nraise ValueError('bad')")
    assert out.startswith("1\nTraceback") and out.endswith("ValueError: bad\n")
    assert train.execute("print('x' * 5000)", max_chars=10) == "x" * 10 + "<output cut>"


def test_render_chatml_matches_the_qwen25_template():
    jinja2 = pytest.importorskip("jinja2")
    import json
    template = json.loads((REPO / "tests/fixtures/chat_templates/qwen2.5/tokenizer_config.json").read_text())[
        "chat_template"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = json.dumps
    row = {"problem": "What is 7^2024 mod 1000?", "tir_solution": "T \\boxed{1}", "plain_solution": "P \\boxed{1}"}
    for mode in ("tir", "bare", "plain"):
        for system in (None, "", "Be brief."):
            msgs = make_data.chat_messages(row, mode, system, 3)
            for gen_prompt, m in ((False, msgs), (True, msgs[:-1])):
                expected = env.from_string(template).render(messages=m, add_generation_prompt=gen_prompt, tools=None)
                assert make_data.render_chatml(m, gen_prompt) == expected, (mode, system, gen_prompt)


def test_sample_conversations_mixes_modes_and_systems(data):
    convs = train.sample_conversations(data["train"], seed=1, plain_fraction=0.5, bare_fraction=0.25)
    assert len(data["train"]) < len(convs) <= 2 * len(data["train"])
    users = [c[-2]["content"] for c in convs]
    assert any(u.startswith("Solve the following math problem, integrating") for u in users)
    assert any(u.startswith("Solve the following math problem. Make sure") for u in users)
    assert any(not u.startswith("Solve") for u in users)
    assert {c[0]["role"] for c in convs} == {"system", "user"}
    assert convs == train.sample_conversations(data["train"], seed=1, plain_fraction=0.5, bare_fraction=0.25)


def test_supervised_spans_cover_reply_without_output_blocks(data):
    row = data["train"][0]
    msgs = make_data.chat_messages(row, "tir", "")
    text, spans = train.supervised_spans(msgs)
    taught = "".join(text[a:b] for a, b in spans)
    block = make_data.format_output_block(row["code_output"])
    assert taught == row["tir_solution"].replace(block, "") + "<|im_end|>"
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")


def test_encode_examples_labels_exactly_the_supervised_text(data):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(REPO / "models" / "demo" / "tokenizer.json"))
    convs = [make_data.chat_messages(r, mode, None) for r in data["train"][:FAMILY_COUNT] for mode in ("tir", "plain")]
    for conv, (ids, labels) in zip(convs, train.encode_examples(tok, convs)):
        assert len(ids) == len(labels)
        taught = tok.decode([t for t in labels if t != train.IGNORE], skip_special_tokens=False)
        block = make_data.format_output_block(conv[-1]["content"].split("```output\n")[-1].split("```\n")[0]) \
            if "```output" in conv[-1]["content"] else ""
        assert taught == conv[-1]["content"].replace(block, "") + "<|im_end|>"
        # the prompt is never taught, and the supervised tokens are the tail of the sequence minus the "\n"
        assert labels[-1] == train.IGNORE and labels[-2] == tok.token_to_id("<|im_end|>")
