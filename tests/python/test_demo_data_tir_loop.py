"""The demo eval's TIR loop (tools/demo/train.py::evaluate) driven by a scripted model that replays the reference
solutions token by token: every round must stop at </tool_call>, run the code, append the exact output block and
finish with the right \\boxed{} answer. Needs torch (runs where it is installed, e.g. the GPU machine)."""
import pathlib
import sys

import pytest

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "demo"))

import make_data  # noqa: E402
import train  # noqa: E402


class ReplayModel:
    """generate() continues each prompt with the reference text of whichever conversation it is a prefix of."""

    def __init__(self, tok, references):
        self.tok, self.refs = tok, [tok.encode(r, add_special_tokens=False).ids for r in references]

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **_):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prefix = [t for t, m in zip(ids, mask) if m]
            ref = next(r for r in self.refs if r[:len(prefix)] == prefix)
            new = []
            for t in ref[len(prefix):len(prefix) + max_new_tokens]:
                new.append(t)
                if t in eos_token_id:
                    break
            rows.append(ids + new)
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


@pytest.mark.parametrize("mode,use_tools", [("tir", True), ("plain", False)])
def test_evaluate_replays_reference_solutions(mode, use_tools):
    tok = tokenizers.Tokenizer.from_file(str(REPO / "models" / "demo" / "tokenizer.json"))
    rows = make_data.generate(seed=5, n_train=0, n_heldout=len(make_data.FAMILIES))["heldout"]
    refs = [make_data.render_chatml(make_data.chat_messages(r, mode, "")) for r in rows]
    ids = dict(im_end=tok.token_to_id("<|im_end|>"), pad=tok.token_to_id("<|endoftext|>"),
               tool_end=tok.token_to_id("</tool_call>"))
    acc, per_family, samples = train.evaluate(torch, ReplayModel(tok, refs), tok, rows, mode, "", use_tools, ids,
                                              "cpu", max_new=400)
    assert acc == 1.0, [s for s in samples if not s["correct"]][:2]
    assert set(per_family) == {f.name for f in make_data.FAMILIES}
    for s, r in zip(samples, rows):
        assert s["code_calls"] == (1 if use_tools else 0)
        expected = r["tir_solution"] if use_tools else r["plain_solution"]
        assert s["generation"] == expected + "<|im_end|>"
