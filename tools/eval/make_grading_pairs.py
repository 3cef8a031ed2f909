"""Builds tests/eval/data/grading_pairs.jsonl: (pred, ref) pairs in real answer styles with the reference
grader's verdict (NeMo-Skills' math_equal over math-verify, tests/python/eval/ns_math_equal.py).

References come from ../shared/data/math (MATH-500, GSM8K, AIME); each gets a prediction written the way models
write the same answer (\\dfrac, $...$, \\boxed{}, spacing, decimals, \\left/\\right, units, degrees) and one
that is wrong (a changed digit, a flipped sign, swapped brackets). A hand-written list adds the styles that
decide graders' edge cases. Judgements of rows where qed disagrees live in grading_disagreements.jsonl.

    .venv/bin/python tools/eval/make_grading_pairs.py
"""
import json
import pathlib
import random
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python" / "eval"))
from ns_math_equal import math_equal  # noqa: E402

DATA = REPO / ".." / "shared" / "data" / "math"
OUT = REPO / "tests" / "eval" / "data" / "grading_pairs.jsonl"

# (pred, ref, style): hand-picked styles that graders disagree on.
HAND = [
    ("1,000", "1000", "thousands separator"), ("1{,}000", "1000", "thousands separator"),
    ("1\\,000", "1000", "thousands separator"), ("12,345.5", "12345.5", "thousands separator"),
    ("1,001", "1000", "thousands separator, wrong"),
    ("50\\%", "50", "percent"), ("50%", "50", "percent"), ("0.5", "50\\%", "percent as fraction"),
    ("12.5\\%", "12.5", "percent"), ("\\$18", "18", "dollars"), ("18 dollars", "18", "unit word"),
    ("\\$18.00", "18", "dollars with cents"), ("30^\\circ", "30", "degrees"), ("30^{\\circ}", "30^\\circ", "degrees"),
    ("30", "30^\\circ", "degrees"), ("31^\\circ", "30^\\circ", "degrees, wrong"), ("30\\degree", "30", "degrees"),
    ("5 \\text{ cm}", "5", "unit"), ("5\\text{ cm}^2", "5", "unit squared"), ("864 \\text{ inches}^2", "864 \\mbox{ inches}^2", "unit"),
    ("10 \\text{ meters}", "10", "unit"), ("12 \\text{ inches}", "13", "unit, wrong"),
    ("x = 5", "5", "assignment"), ("5", "x = 5", "assignment in ref"), ("k=3", "3", "assignment"),
    ("x=4", "5", "assignment, wrong"), ("y = -2x", "y = -2x", "equation"), ("y=-2x", "y = -2x", "equation spacing"),
    ("y = 2x", "y = -2x", "equation, wrong"), ("x \\in [-2,7]", "[-2,7]", "membership"), ("[-2,7]", "x \\in [-2,7]", "membership in ref"),
    ("(-2,7]", "[-2,7]", "interval bracket, wrong"), ("[-2, 7]", "[-2,7]", "interval spacing"),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty,2)\\cup(3,\\infty)", "union"),
    ("(3, \\infty) \\cup (-\\infty, 2)", "(-\\infty,2)\\cup(3,\\infty)", "union order"),
    ("(-\\infty, 2] \\cup (3, \\infty)", "(-\\infty,2)\\cup(3,\\infty)", "union, wrong bracket"),
    ("\\{1, 2, 3\\}", "\\{1,2,3\\}", "set"), ("\\{3, 2, 1\\}", "\\{1,2,3\\}", "set order"), ("\\{1, 2\\}", "\\{1,2,3\\}", "set, wrong"),
    ("1, 2, 3", "1,2,3", "list"), ("3, 2, 1", "1, 2, 3", "list order"), ("-2, 1", "-2,1", "list"), ("1,-2", "-2,1", "list order"),
    ("(1, 2)", "(1,2)", "point"), ("(2, 1)", "(1,2)", "point order, wrong"),
    ("\\left( \\frac{3}{2}, -13 \\right)", "\\left( \\frac{3}{2}, -13 \\right)", "point with left/right"),
    ("(1.5, -13)", "\\left( \\frac{3}{2}, -13 \\right)", "point decimal"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "vector"),
    ("\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "vector, wrong"),
    ("\\begin{bmatrix} 1 & 2 \\\\ 3 & 4 \\end{bmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "matrix brackets"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 5 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "matrix, wrong"),
    ("\\frac{1}{2}", "0.5", "fraction vs decimal"), ("1/2", "\\frac{1}{2}", "slash fraction"), ("\\frac12", "\\frac{1}{2}", "short frac"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", "dfrac"), ("\\tfrac{1}{2}", "\\frac{1}{2}", "tfrac"), ("2/4", "\\frac{1}{2}", "unreduced"),
    ("0.333", "\\frac{1}{3}", "rounded decimal, wrong"), ("0.333333", "\\frac{1}{3}", "6-decimal rounding"),
    ("0.3333333333", "\\frac{1}{3}", "long decimal"), ("\\frac{1}{3}", "0.333333", "decimal ref"),
    ("3.14", "\\pi", "pi decimal, wrong"), ("3.141593", "\\pi", "pi 6 decimals"), ("\\pi", "\\pi", "pi"),
    ("2\\pi", "2 \\pi", "pi spacing"), ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", "pi fraction"), ("\\pi/2", "\\frac{\\pi}{2}", "pi slash"),
    ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", "rationalized"), ("\\sqrt{3}/3", "\\frac{\\sqrt{3}}{3}", "radical slash"),
    ("\\sqrt3", "\\sqrt{3}", "sqrt no braces"), ("\\sqrt{12}", "2\\sqrt{3}", "radical simplification"),
    ("2\\sqrt{2}", "\\sqrt{8}", "radical"), ("\\sqrt{2}", "\\sqrt{3}", "radical, wrong"), ("1.414214", "\\sqrt{2}", "radical decimal"),
    ("\\sqrt[3]{8}", "2", "cube root"), ("2^{10}", "1024", "power"), ("2^10", "1024", "power no braces"),
    ("10!", "3628800", "factorial"), ("\\binom{5}{2}", "10", "binomial"), ("\\dbinom{6}{3}", "20", "dbinom"),
    ("-\\frac{35}{9}", "-\\frac{35}{9}", "negative fraction"), ("\\frac{-35}{9}", "-\\frac{35}{9}", "negative numerator"),
    ("-3.89", "-\\frac{35}{9}", "rounded, wrong"), ("-(1/2)", "-\\frac{1}{2}", "parenthesized"),
    ("6r^2-4r-24", "6r^2 -4r -24", "polynomial spacing"), ("-4r + 6r^2 - 24", "6r^2-4r-24", "polynomial order"),
    ("2(3r^2-2r-12)", "6r^2-4r-24", "factored polynomial"), ("6r^2-4r-25", "6r^2-4r-24", "polynomial, wrong"),
    ("(x+1)^2", "x^2+2x+1", "expanded square"), ("x^2+2x+1", "(x+1)^2", "expanded square, reversed"),
    ("(x+1)(x-1)", "x^2-1", "factored"), ("x^2+1", "x^2-1", "sign, wrong"), ("2k", "2k", "variable"), ("k2", "2k", "variable order"),
    ("2n", "2k", "other variable, wrong"), ("\\frac{x}{2}", "0.5x", "coefficient decimal"),
    ("6+9i", "6+9i", "complex"), ("9i+6", "6+9i", "complex order"), ("6-9i", "6+9i", "complex, wrong"),
    ("\\text{east}", "\\text{east}", "text"), ("east", "\\text{east}", "bare text"), ("East", "\\text{east}", "text case"),
    ("\\text{west}", "\\text{east}", "text, wrong"), ("\\text{Evelyn}", "\\text{Evelyn}", "name"), ("Evelyn", "\\text{Evelyn}", "bare name"),
    ("\\text{(C)}", "C", "choice"), ("(C)", "C", "choice"), ("C", "C", "choice"), ("B", "C", "choice, wrong"), ("\\text{C}", "C", "choice text"),
    ("\\textbf{(E)}", "E", "choice bold"), ("\\text{odd}", "\\text{odd}", "text"), ("\\text{even}", "\\text{odd}", "text, wrong"),
    ("\\boxed{204}", "204", "boxed"), ("The answer is \\boxed{204}.", "204", "boxed in text"), ("\\boxed{205}", "204", "boxed, wrong"),
    ("$204$", "204", "dollars math"), ("\\(204\\)", "204", "paren math"), ("\\[204\\]", "204", "bracket math"),
    ("204.", "204", "full stop"), ("204.0", "204", "decimal zero"), ("0204", "204", "leading zero"), ("-0", "0", "negative zero"),
    ("137 \\frac{1}{2}", "137 \\frac{1}{2}", "mixed number"), ("137.5", "137 \\frac{1}{2}", "mixed number decimal"),
    ("\\frac{275}{2}", "137 \\frac{1}{2}", "mixed number improper"), ("1\\frac{4}{5}", "1\\frac{4}{5}", "mixed number"),
    ("\\frac{9}{5}", "1\\frac{4}{5}", "mixed number improper"),
    (".0000672", ".0000672", "leading dot"), ("0.0000672", ".0000672", "leading dot"), ("6.72 \\times 10^{-5}", ".0000672", "scientific"),
    ("2516_8", "2516_8", "base subscript"), ("2516", "2516_8", "base dropped"),
    ("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{19}", "plus-minus"), ("1+\\sqrt{19}, 1-\\sqrt{19}", "1 \\pm \\sqrt{19}", "plus-minus spelled"),
    ("\\infty", "\\infty", "infinity"), ("-\\infty", "\\infty", "infinity sign, wrong"),
    ("\\ln 2", "\\log 2", "natural log"), ("\\log_2 8", "3", "log base"), ("e^2", "e^{2}", "exponential"),
    ("\\sin 30^\\circ", "\\frac{1}{2}", "trig degrees"), ("\\frac{\\sqrt{2}}{2}", "\\cos\\frac{\\pi}{4}", "trig value"),
    ("a=1, b=2", "a=1,b=2", "several assignments"), ("x=1 \\text{ or } x=2", "1, 2", "or-list"),
    ("", "5", "empty prediction"), ("None", "5", "no answer text"), ("5", "5", "same integer"),
    ("123456789012345678901234", "123456789012345678901234", "big integer"),
    ("123456789012345678901235", "123456789012345678901234", "big integer, last digit wrong"),
    ("3 \\cdot 4", "12", "cdot"), ("3 \\times 4", "12", "times"), ("\\frac{6}{8}", "\\frac{3}{4}", "unreduced fraction"),
    ("0.75", "\\frac 34", "decimal of spaced frac"), ("\\frac{3}{4}", "\\frac 34", "spaced frac"),
    ("\\left(\\frac{1}{2}\\right)", "\\frac{1}{2}", "left right"), ("\\left[ 1, 2 \\right]", "[1,2]", "left right interval"),
    ("2 \\sqrt{2} + 1", "1+2\\sqrt2", "radical sum order"), ("\\frac{1+\\sqrt{5}}{2}", "\\frac{\\sqrt{5}+1}{2}", "golden ratio"),
    ("\\frac{1-\\sqrt{5}}{2}", "\\frac{1+\\sqrt{5}}{2}", "conjugate, wrong"),
    ("-\\frac{24}{25}", "-\\frac{24}{25}", "negative fraction"), ("-0.96", "-\\frac{24}{25}", "negative decimal"),
    ("\\frac{24}{25}", "-\\frac{24}{25}", "sign, wrong"),
]


def equal_variant(ref: str, k: int) -> str:
    styles = [
        lambda r: f"${r}$",
        lambda r: r.replace("\\frac", "\\dfrac") if "\\frac" in r else f"\\boxed{{{r}}}",
        lambda r: r.replace(" ", "") if " " in r else f" {r} ",
        lambda r: f"The final answer is $\\boxed{{{r}}}$.",
        lambda r: r.replace("(", "\\left(").replace(")", "\\right)") if "(" in r else f"\\({r}\\)",
    ]
    return styles[k % len(styles)](ref)


def wrong_variant(ref: str, rng: random.Random) -> str:
    digits = [m.start() for m in re.finditer(r"\d", ref)]
    if digits:
        i = rng.choice(digits)
        d = int(ref[i])
        return ref[:i] + str((d + rng.randint(1, 8)) % 10) + ref[i + 1:]
    if "-" in ref:
        return ref.replace("-", "+", 1)
    return ref + "+1"


def main():
    rng = random.Random(20261201)
    refs = []
    for name, count in (("math500", 130), ("gsm8k", 12), ("aime24", 8)):
        rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
        for row in rng.sample(rows, count):
            refs.append((name, row["id"], row["expected_answer"]))
    pairs = []
    for k, (name, rid, ref) in enumerate(refs):
        pairs.append({"pred": equal_variant(ref, k), "ref": ref, "style": f"{name} {rid}: rewritten"})
        pairs.append({"pred": wrong_variant(ref, rng), "ref": ref, "style": f"{name} {rid}: perturbed"})
    for pred, ref, style in HAND:
        pairs.append({"pred": pred, "ref": ref, "style": style})
    with OUT.open("w") as f:
        for p in pairs:
            p["math_verify"] = math_equal(p["ref"], p["pred"])
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    print(f"{len(pairs)} pairs -> {OUT}")


if __name__ == "__main__":
    main()
