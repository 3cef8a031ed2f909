"""Writes tests/tokenizer/data/tiny_tokenizer.json: a hand-made byte-level BPE small enough to reason about.

Its merges are chosen so that tests can tell rank order from left-to-right order ("abc" → a + bc), see overlapping
equal-rank merges ("aaaaa" → aaaa + a) and see ignore_merges matter; its added tokens cover every flag
(special / not, lstrip, rstrip, single_word, normalized) and a content whose characters are outside the byte-level
alphabet (a space), which decode must pass through verbatim. Rerun after editing; the JSON is committed.
"""

import json
import pathlib

QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte → printable character table, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


MERGES = [
    ("b", "c"),  # rank 0: beats ("a","b") below, so "abc" → a + bc
    ("a", "b"),
    ("a", "a"),
    ("aa", "aa"),
    ("l", "l"),
    ("h", "e"),
    ("he", "ll"),
    ("hell", "o"),
    ("Ġ", "w"),
    ("o", "r"),
    ("Ġw", "or"),
    ("l", "d"),
    ("Ġwor", "ld"),
    ("Ġ", "Ġ"),
    ("Ċ", "Ċ"),
]
# In the vocab but reachable only without merges: with ignore_merges the whole word "xyz" is one token.
WHOLE_WORDS = ["xyz"]

ADDED = [
    dict(content="<|endoftext|>", special=True),
    dict(content="<|im_start|>", special=True),
    dict(content="<tool_call>", special=False),
    dict(content="<mask>", special=True, lstrip=True, rstrip=True),
    dict(content="[W]", special=False, single_word=True),
    dict(content="café", special=False, normalized=True),
    dict(content="<my token>", special=True),
]


def main() -> None:
    vocab = {c: i for i, c in enumerate(byte_level_alphabet())}
    for a, b in MERGES:
        vocab.setdefault(a + b, len(vocab))
    for w in WHOLE_WORDS:
        vocab.setdefault(w, len(vocab))
    added = []
    for t in ADDED:
        entry = dict(id=len(vocab) + len(added), content=t["content"], single_word=t.get("single_word", False),
                     lstrip=t.get("lstrip", False), rstrip=t.get("rstrip", False),
                     normalized=t.get("normalized", False), special=t["special"])
        added.append(entry)
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in MERGES]},
    }
    out = pathlib.Path(__file__).parent / "data" / "tiny_tokenizer.json"
    out.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
