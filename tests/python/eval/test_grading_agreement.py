"""`qed eval grade` agrees with math-verify (as NeMo-Skills' math_equal drives it) on ≥ 99% of the committed
(pred, ref) pairs, math-verify's committed verdicts are what it says live, and every disagreement is listed and
judged in grading_disagreements.jsonl."""
import json
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ns_math_equal import math_equal  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "eval" / "data"


def load(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_qed_grade_agrees_with_math_verify(qed_bin, tmp_path):
    pairs = load("grading_pairs.jsonl")
    assert len(pairs) >= 300
    live = [math_equal(p["ref"], p["pred"]) for p in pairs]
    stale = [p for p, v in zip(pairs, live) if v != p["math_verify"]]
    assert not stale, f"math-verify's verdicts changed (rerun tools/eval/make_grading_pairs.py): {stale[:5]}"

    out = tmp_path / "graded.jsonl"
    subprocess.run([qed_bin, "eval", "grade", "--input", str(DATA / "grading_pairs.jsonl"), "--output", str(out)],
                   check=True, timeout=120, capture_output=True)
    graded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(g["pred"], g["ref"]) for g in graded] == [(p["pred"], p["ref"]) for p in pairs]

    disagreements = {(g["pred"], g["ref"]) for g, v in zip(graded, live) if g["correct"] != v}
    judged = {(d["pred"], d["ref"]): d for d in load("grading_disagreements.jsonl")}
    assert disagreements == set(judged), (
        f"unlisted: {disagreements - set(judged)}; listed but agreeing now: {set(judged) - disagreements}")
    for d in judged.values():
        assert d["right"] in ("qed", "math_verify") and d["why"]
        assert d["math_verify"] == math_equal(d["ref"], d["pred"])
    agreement = 1 - len(disagreements) / len(pairs)
    assert agreement >= 0.99, f"agreement {agreement:.4f}"
