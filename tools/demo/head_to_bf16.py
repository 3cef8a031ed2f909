#!/usr/bin/env python3
"""Copies a ReDrafter head directory (config.json + fp32 model.safetensors, as `qed train-drafter` writes it) with
its weights rounded to bf16 (round to nearest even, as torch's .to(torch.bfloat16)), to ship it at half the size.
qed's head loader reads either dtype.

    python3 tools/demo/head_to_bf16.py HEAD_DIR OUT_DIR
"""
import json
import pathlib
import struct
import sys


def read_safetensors(path: pathlib.Path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


def to_bf16(raw: bytes) -> bytes:
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    out = []
    for w in words:
        if (w & 0x7F800000) == 0x7F800000 and (w & 0x007FFFFF):
            out.append((w >> 16) | 0x40)  # NaN stays a quiet NaN
        else:
            out.append(((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF)
    return struct.pack(f"<{len(out)}H", *out)


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = pathlib.Path(argv[0]), pathlib.Path(argv[1])
    header, blob = read_safetensors(src / "model.safetensors")
    metadata = header.pop("__metadata__", None)
    new_header, parts, offset = {}, [], 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if info["dtype"] != "F32":
            raise SystemExit(f"{name}: expected F32, found {info['dtype']}")
        begin, end = info["data_offsets"]
        raw = to_bf16(blob[begin:end])
        new_header[name] = {"dtype": "BF16", "shape": info["shape"], "data_offsets": [offset, offset + len(raw)]}
        parts.append(raw)
        offset += len(raw)
    if metadata:
        new_header["__metadata__"] = metadata
    text = json.dumps(new_header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    dst.mkdir(parents=True, exist_ok=True)
    with open(dst / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(parts))
    config = json.loads((src / "config.json").read_text())
    config["torch_dtype"] = "bfloat16"
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    print(f"{dst}: {offset} bytes of bf16 weights", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
