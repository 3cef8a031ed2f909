"""Byte-exact parity of `qed tokenize` with HF `tokenizers` on tests/tokenizer/corpus.jsonl.

For every tokenizer in ../shared/data/tokenizers/*/ (plus the hand-made tiny one and a Llama-3 variant carrying
the BOS TemplateProcessing that Meta's own tokenizer.json has), qed runs once per mode over the whole corpus and
must give HF's ids for encode (add_special_tokens both ways) and HF's text for decode (skip_special_tokens both
ways) of HF's ids, of byte-token sequences that form invalid UTF-8, and of raw invalid-UTF-8 input (which HF can
only see as bytes.decode("utf-8", errors="replace")).
"""

import base64
import json
import pathlib
import random
import subprocess

import pytest
from tokenizers import Tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "tokenizer" / "corpus.jsonl"
TINY = REPO / "tests" / "tokenizer" / "data" / "tiny_tokenizer.json"

LLAMA3_BOS_POST_PROCESSOR = {
    "type": "Sequence",
    "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000],
                                                     "tokens": ["<|begin_of_text|>"]}},
        },
    ],
}


def load_corpus():
    texts, invalid = [], []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "text" in row:
            texts.append(row["text"])
        else:
            invalid.append(base64.b64decode(row["bytes_b64"]))
    return texts, invalid


def tokenizer_files(shared_dir: pathlib.Path, tmp_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    files = {p.parent.name: p for p in sorted((shared_dir / "data" / "tokenizers").glob("*/tokenizer.json"))}
    files["tiny"] = TINY
    # Fuzz seeds that HF loads: GPT-2-style ByteLevel (prefix space + its own regex) and a vocab missing most
    # bytes (HF drops bytes it has no token for), with ignore_merges and a bare TemplateProcessing.
    for seed in ("valid_gpt2_style", "valid_tiny"):
        files[f"seed:{seed}"] = REPO / "tests" / "fuzz" / "corpus" / "tokenizer_json" / f"{seed}.json"
    if "llama3" in files:
        doc = json.loads(files["llama3"].read_text(encoding="utf-8"))
        doc["post_processor"] = LLAMA3_BOS_POST_PROCESSOR
        variant = tmp_dir / "llama3_bos.json"
        variant.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        files["llama3+bos"] = variant
    return files


def run_qed(qed_bin: str, path: pathlib.Path, args: list[str], stdin: bytes) -> bytes:
    proc = subprocess.run([qed_bin, "tokenize", "--tokenizer", str(path), *args], input=stdin,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    return proc.stdout


def json_lines(values) -> bytes:
    return "".join(json.dumps(v) + "\n" for v in values).encode("utf-8")


def parse_lines(out: bytes):
    # split on "\n" only: str.splitlines() would also split inside JSON strings at U+2028, U+0085, ...
    return [json.loads(line) for line in out.decode("utf-8").split("\n") if line]


def report(name: str, what: str, got, want) -> int:
    same = sum(g == w for g, w in zip(got, want))
    print(f"{name:22s} {what:45s} {same}/{len(want)} identical")
    return len(want) - same if len(got) == len(want) else len(want)


def byte_token_sequences(hf: Tokenizer, texts: list[str], rng: random.Random) -> list[list[int]]:
    """Id sequences of single-byte tokens that break UTF-8: truncated, shuffled and spliced characters."""
    from_byte = {}
    alphabet = [chr(b) for b in range(ord("!"), ord("~") + 1)] + [chr(b) for b in range(0xA1, 0xAD)] + \
        [chr(b) for b in range(0xAE, 0x100)]
    extra = 0
    for b in range(256):
        ch = chr(b) if chr(b) in alphabet else chr(256 + extra)
        if chr(b) not in alphabet:
            extra += 1
        from_byte[b] = hf.token_to_id(ch)
    seqs = []
    multibyte = [t for t in texts if any(ord(c) > 127 for c in t)]
    for t in multibyte[:120]:
        raw = t.encode("utf-8")
        cut = raw[: rng.randint(1, len(raw))]
        seqs.append([from_byte[b] for b in cut])
        dropped = bytearray(raw)
        del dropped[rng.randrange(len(dropped))]
        seqs.append([from_byte[b] for b in dropped])
    for _ in range(80):
        seqs.append([from_byte[rng.randrange(256)] for _ in range(rng.randint(1, 12))])
    # Small test vocabularies lack most byte tokens; keep the ids that exist.
    return [[i for i in seq if i is not None] for seq in seqs]


def test_tokenizer_parity(qed_bin, shared_dir, tmp_path):
    texts, invalid = load_corpus()
    assert len(texts) + len(invalid) >= 500
    files = tokenizer_files(shared_dir, tmp_path)
    assert any(name in files for name in ("qwen3", "llama3")), "no tokenizers found under ../shared/data/tokenizers"
    failures = 0
    for name, path in files.items():
        hf = Tokenizer.from_file(str(path))
        for add_special in (False, True):
            want = [hf.encode(t, add_special_tokens=add_special).ids for t in texts]
            args = ["--json"] + (["--add-special-tokens"] if add_special else [])
            got = parse_lines(run_qed(qed_bin, path, args, json_lines(texts)))
            failures += report(name, f"encode(add_special_tokens={add_special})", got, want)
            for t, g, w in zip(texts, got, want):
                if g != w and failures < 20:
                    print(f"  MISMATCH {t[:80]!r}\n    qed {g[:30]}\n    hf  {w[:30]}")

        id_lists = [hf.encode(t, add_special_tokens=True).ids for t in texts]
        id_lists += byte_token_sequences(hf, texts, random.Random(7))
        for skip in (False, True):
            want = [hf.decode(ids, skip_special_tokens=skip) for ids in id_lists]
            args = ["--json", "--decode"] + (["--skip-special-tokens"] if skip else [])
            got = parse_lines(run_qed(qed_bin, path, args, json_lines(id_lists)))
            failures += report(name, f"decode(skip_special_tokens={skip})", got, want)

        # Raw bytes in (plain mode): HF's realistic view of them is the replacement-decoded string.
        joined = b"\n--\n".join(invalid)
        want_ids = hf.encode(joined.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        got_ids = [int(x) for x in run_qed(qed_bin, path, [], joined).split()]
        failures += report(name, "encode(invalid UTF-8 bytes, joined)", [got_ids], [want_ids])
    assert failures == 0


@pytest.mark.parametrize("args,stdin,needle", [
    (["--json"], b"not json\n", b"line 1"),
    (["--json"], b"[1, 2]\n", b"expected a JSON string"),
    (["--json", "--decode"], b"\"text\"\n", b"expected a JSON array"),
])
def test_tokenize_bad_input_is_one_line_error(qed_bin, args, stdin, needle):
    proc = subprocess.run([qed_bin, "tokenize", "--tokenizer", str(TINY), *args], input=stdin,
                          capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_tokenize_missing_dir_names_it(qed_bin, tmp_path):
    missing = tmp_path / "nope"
    proc = subprocess.run([qed_bin, "tokenize", "--tokenizer", str(missing)], input=b"x", capture_output=True,
                          timeout=60)
    assert proc.returncode != 0
    assert str(missing).encode() in proc.stderr


def test_tokenize_plain_round_trip(qed_bin):
    text = "héllo <|im_start|> wörld\n\n\t😀"
    ids = run_qed(qed_bin, TINY, [], text.encode("utf-8"))
    assert ids.endswith(b"\n")
    back = run_qed(qed_bin, TINY, ["--decode"], ids)
    assert back.decode("utf-8") == text
