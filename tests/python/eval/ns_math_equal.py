"""The reference grader: NeMo-Skills' math_equal (facts §2.3) on top of math-verify, re-stated from its documented
steps (MCQ letters, the % / trailing-dot clean-up, the literal check on normalize_latex, then math-verify's
parse + verify with numeric_precision=15). This is what `qed eval grade` is measured against."""
import re

from latex2sympy2_extended import NormalizationConfig, normalize_latex
from math_verify import LatexExtractionConfig, StringExtractionConfig, parse, verify

_CHOICES = "ABCDEFGHIJ"
_LATEX_ENV = re.compile(r"\$.*\$|\\\(.*\\\)|\\\[.*\\\]|\\boxed\{", re.DOTALL)


def _clean(expr: str) -> str:
    m = re.fullmatch(r"(\d+\.?\d*)(?:\\%|%)", expr)
    if m:
        expr = m.group(1)
    return expr.rstrip(".\\")


def math_equal(ref, pred, take_modulo=None) -> bool:
    if pred is None:
        return False
    ref, pred = str(ref), str(pred)
    if take_modulo is not None:
        try:
            return int(pred) % take_modulo == int(ref) % take_modulo
        except ValueError:
            return False
    if re.fullmatch("|".join(_CHOICES), ref.strip()):
        config = [StringExtractionConfig(strings=tuple(_CHOICES))]
        if verify(parse(ref, config), parse(pred, config)):
            return True
    ref, pred = _clean(ref), _clean(pred)
    # NeMo-Skills passes the NormalizationConfig class itself: its class defaults (basic latex only).
    nref, npred = normalize_latex(ref, NormalizationConfig), normalize_latex(pred, NormalizationConfig)
    literal = r"[a-zA-Z ,]+|[0-9 ]+"
    same = nref.replace(" ", "") == npred.replace(" ", "")
    if (re.fullmatch(literal, nref) and re.fullmatch(literal, npred)) or same:
        return same
    if not _LATEX_ENV.search(ref):
        ref = f"${ref}$"
    if not _LATEX_ENV.search(pred):
        pred = f"${pred}$"
    return bool(verify(parse(ref, [LatexExtractionConfig()]), parse(pred, [LatexExtractionConfig()]),
                       numeric_precision=15, timeout_seconds=10))
