"""Pre-tokenizer and normalizer variants the real tokenizers do not use, checked against HF on the tiny
tokenizer: every Split behaviour, invert, literal String patterns, patterns that match empty strings,
GPT-2-style ByteLevel (prefix space + built-in regex), and other normalization forms."""

import json
import pathlib
import subprocess

import pytest
from tokenizers import Tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "tokenizer" / "data" / "tiny_tokenizer.json"

TEXTS = [
    "hello world", "  hello   world  ", "a, b; c!", "x\n\ny\tz", "abc aaaaa xyz", "it's 123,456.78",
    "é e\u0301 ﬁ Ω", "<|im_start|>hi <tool_call> x", "", " ", "a", "中文 😀 ok", "...", "trailing ",
]


def split(pattern, behavior, invert=False, literal=False):
    return {"type": "Split", "pattern": {"String" if literal else "Regex": pattern}, "behavior": behavior,
            "invert": invert}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}

VARIANTS = {
    **{f"split-{b}": [split(r"\s+", b), BYTE_LEVEL]
       for b in ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")},
    **{f"split-inverted-{b}": [split(r"\p{L}+", b, invert=True), BYTE_LEVEL]
       for b in ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")},
    "split-literal": [split(" ", "MergedWithNext", literal=True), BYTE_LEVEL],
    "split-empty-matches": [split(r"\s*", "Isolated"), BYTE_LEVEL],
    "split-lookbehind": [split(r"(?<=o)", "Isolated"), BYTE_LEVEL],
    "gpt2-byte-level": [{"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}],
    "split-then-prefix": [split(r"\d+", "Isolated"),
                          {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": False}],
}
NORMALIZERS = {"NFD": {"type": "NFD"}, "NFKC": {"type": "NFKC"}, "NFKD": {"type": "NFKD"},
               "Sequence": {"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "NFC"}]}, "none": None}


def check(qed_bin, tmp_path, doc, name):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    hf = Tokenizer.from_file(str(path))
    want = [hf.encode(t, add_special_tokens=False).ids for t in TEXTS]
    proc = subprocess.run([qed_bin, "tokenize", "--tokenizer", str(path), "--json"],
                          input="".join(json.dumps(t) + "\n" for t in TEXTS).encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.decode().split("\n") if line]
    for t, g, w in zip(TEXTS, got, want):
        assert g == w, f"{name}: {t!r}"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_pre_tokenizer_variant_matches_hf(qed_bin, tmp_path, name):
    doc = json.loads(TINY.read_text(encoding="utf-8"))
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": VARIANTS[name]}
    check(qed_bin, tmp_path, doc, name)


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_normalizer_variant_matches_hf(qed_bin, tmp_path, name):
    doc = json.loads(TINY.read_text(encoding="utf-8"))
    doc["normalizer"] = NORMALIZERS[name]
    check(qed_bin, tmp_path, doc, name)
