#!/usr/bin/env python3
"""Trains the demo model's byte-level BPE tokenizer on the synthetic corpus and writes tokenizer.json +
tokenizer_config.json (issue #12).

The tokenizer is built like Qwen2.5's, so qed takes the same code path for it: NFC normalizer, the Qwen2
pre-tokenizer regex followed by ByteLevel (no prefix space), ByteLevel decoder, and the same added tokens with the
same flags (<|endoftext|>, <|im_start|>, <|im_end|> special; <tool_call>, </tool_call> not special, so they survive
skip_special_tokens). Added tokens get the last ids, after the BPE vocabulary, as in Qwen2.5.
--vocab is an upper bound: the corpus is templated and digits are split one by one (Qwen2 regex), so BPE runs
out of merges well before 3k; train.py pads the embedding to a multiple of 64 rows, as Qwen2.5 pads its own.
tokenizer_config.json carries Qwen2.5's chat template verbatim (eos <|im_end|>, pad <|endoftext|>).

    python3 tools/demo/make_tokenizer.py --data out/demo_data/train.jsonl --out models/demo [--vocab 3072]
"""
import argparse
import json
import pathlib
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_data  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
QWEN25_CONFIG = REPO / "tests" / "fixtures" / "chat_templates" / "qwen2.5" / "tokenizer_config.json"
QWEN2_SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # special: true in Qwen2.5
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]  # special: false in Qwen2.5


def corpus(rows: list, seed: int):
    """Every row rendered as the training conversations use it (train.py samples the same modes/systems)."""
    rng = random.Random(seed)
    for row in rows:
        for mode in ("tir", "plain"):
            system = rng.choice([None, ""])
            yield make_data.render_chatml(make_data.chat_messages(row, mode, system, rng.randint(1, 8)))


def build(rows: list, vocab_size: int, seed: int) -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    n_added = len(SPECIAL_TOKENS) + len(TOOL_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_added, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    # The chat markers are split off before training so that no merge spans them.
    texts = (t for text in corpus(rows, seed) for t in _split_markers(text))
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    # The Python bindings' decoders.ByteLevel() takes no options, so the decoder and post-processor are written
    # into the JSON directly, with Qwen2.5's settings.
    spec = json.loads(tok.to_str())
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    spec["decoder"] = dict(byte_level)
    spec["post_processor"] = dict(byte_level)
    return Tokenizer.from_str(json.dumps(spec))


def _split_markers(text: str):
    for marker in SPECIAL_TOKENS + TOOL_TOKENS:
        text = text.replace(marker, "\0")
    return [t for t in text.split("\0") if t]


def tokenizer_config() -> dict:
    template = json.loads(QWEN25_CONFIG.read_text())["chat_template"]
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {},  # filled in main() with the real ids
        "bos_token": None,
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 1024,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, type=pathlib.Path, help="train.jsonl from make_data.py")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--vocab", type=int, default=3072)
    ap.add_argument("--rows", type=int, default=20000, help="train rows to learn merges from")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args(argv)
    with open(args.data, encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(args.rows), f)]
    tok = build(rows, args.vocab, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out / "tokenizer.json"))
    config = tokenizer_config()
    for t in SPECIAL_TOKENS + TOOL_TOKENS:
        config["added_tokens_decoder"][str(tok.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": t in SPECIAL_TOKENS}
    (args.out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    print(f"vocab {tok.get_vocab_size()} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
