#!/usr/bin/env python3
"""Writes the PyTorch reference for qed's ReDrafter trainer (tests/train/redrafter_fixture_test.cpp).

The draft head and its training loss are built here the way apple/ml-recurrent-drafter trains them
(recurrent_drafting/modeling_drafter.py Drafter, train/model.py ReDrafter.forward, train/loss.py drafter_loss):
  - the state runs over the sequence by torch.roll of the input embeddings, s = SiLU(rnn_u(s) + rnn_w(e)) (rnn)
    or s += e, and logits_i = lm_head([input_proj](cat(h, s))), lm_head = ResBlocks then a bias-free Linear;
  - loss = sum_i CrossEntropy(logits[i, :, :-(i+2)], labels[:, i+2:]) with ignore_index -100;
  - redrafter{i}_top{k} = top-k accuracy over the non-ignored targets.
Everything is computed in float64 from float32-representable inputs, then stored as float32, so the C++ fp32 code
is compared against a reference whose own rounding is negligible.

For each case it writes OUT/<case>/config.json + model.safetensors (the head in RD's checkpoint format, which
RedrafterHead::load reads) and OUT/<case>/fixture.safetensors (hidden, input_ids, labels, embeddings, loss,
loss_per_iteration, topk_accuracy, grad.<parameter>), plus OUT/<case>/fixture.json (versions, exact loss).

Needs only torch (no numpy, no safetensors package):
    python tools/make_redrafter_grad_fixture.py --out tests/fixtures/redrafter_grad
"""
import argparse
import json
import pathlib
import struct
import sys

import torch

IGNORE = -100

CASES = {
    # RD's own layout: rnn=True, and an exit_dim != 2 * hidden so the input projection is exercised too.
    "rnn_input_proj": dict(vocab_size=13, hidden_size=4, exit_dim=6, num_draft_layers=2, rnn=True),
    # NeMo-Skills' layout: exit_dim = 2 * hidden (no input_proj) and the cumulative-sum state.
    "cumsum_no_proj": dict(vocab_size=11, hidden_size=3, exit_dim=6, num_draft_layers=1, rnn=False),
}
N_TOKENS = 3
TOP_K = 3
BATCH, SEQ_LEN = 2, 10


class ResBlock(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.linear = torch.nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        return x + torch.nn.functional.silu(self.linear(x))


class Head(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        h, e = cfg["hidden_size"], cfg["exit_dim"]
        if 2 * h != e:
            self.input_proj = torch.nn.Linear(2 * h, e, bias=True)
        self.lm_head = torch.nn.Sequential(*[ResBlock(e) for _ in range(cfg["num_draft_layers"])],
                                           torch.nn.Linear(e, cfg["vocab_size"], bias=False))
        if cfg["rnn"]:
            self.rnn_u = torch.nn.Linear(h, h, bias=True)
            self.rnn_w = torch.nn.Linear(h, h, bias=False)

    def logits(self, x):
        return self.lm_head(self.input_proj(x) if hasattr(self, "input_proj") else x)


def teacher_forced_logits(head, hidden, input_ids, embeddings, next_n):
    """[next_n, batch, seq, vocab], as RD's ReDrafter.forward."""
    input_embs = torch.nn.functional.embedding(input_ids, embeddings)
    state = torch.zeros_like(input_embs)
    out = []
    for _ in range(next_n):
        input_embs = torch.roll(input_embs, -1, dims=1)
        if head.cfg["rnn"]:
            state = torch.nn.functional.silu(head.rnn_u(state) + head.rnn_w(input_embs))
        else:
            state = state + input_embs
        out.append(head.logits(torch.cat((hidden, state), -1)))
    return torch.stack(out, dim=0)


def drafter_loss(logits, labels, next_n, top_k):
    """RD's drafter_loss: (sum of per-iteration mean CE, [loss_i], [[top-k accuracy]])."""
    loss, per_iteration, accuracy = 0, [], []
    for i in range(next_n):
        logits_i = logits[i, :, : -(i + 2)].reshape(-1, logits.shape[-1])
        labels_i = labels[..., i + 2:].reshape(-1)
        loss_i = torch.nn.functional.cross_entropy(logits_i, labels_i, ignore_index=IGNORE)
        loss = loss + loss_i
        per_iteration.append(loss_i.item())
        keep = labels_i.ne(IGNORE)
        row = []
        for k in range(1, top_k + 1):
            topk = logits_i.topk(k, dim=-1).indices[keep]
            row.append(topk.eq(labels_i[keep].unsqueeze(-1)).any(-1).double().mean().item())
        accuracy.append(row)
    return loss, per_iteration, accuracy


def write_safetensors(path, tensors, metadata=None):
    """Minimal safetensors writer: {name: (dtype string, torch tensor)} in order, little-endian."""
    header, blobs, offset = {}, [], 0
    for name, tensor in tensors.items():
        t = tensor.detach().contiguous().cpu()
        if t.dtype == torch.float32:
            dtype, raw = "F32", struct.pack(f"<{t.numel()}f", *t.reshape(-1).tolist())
        elif t.dtype == torch.int32:
            dtype, raw = "I32", struct.pack(f"<{t.numel()}i", *t.reshape(-1).tolist())
        else:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def make_case(name, cfg, out_dir, seed):
    torch.manual_seed(seed)
    head = Head(cfg)
    # Round every parameter to float32 first, so the C++ side (fp32) starts from exactly these values.
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(p.float())
    head = head.double()
    h, v = cfg["hidden_size"], cfg["vocab_size"]
    embeddings = (torch.randn(v, h) * 0.7).float().double()
    hidden = torch.randn(BATCH, SEQ_LEN, h).float().double()
    input_ids = torch.randint(0, v, (BATCH, SEQ_LEN))
    labels = input_ids.clone()
    labels[0, :4] = IGNORE  # a prompt
    labels[1, :2] = IGNORE
    labels[1, 6] = IGNORE   # a hole inside the reply (e.g. a sandbox output block)

    logits = teacher_forced_logits(head, hidden, input_ids, embeddings, N_TOKENS)
    loss, per_iteration, accuracy = drafter_loss(logits, labels, N_TOKENS, TOP_K)
    head.zero_grad()
    loss.backward()

    case_dir = out_dir / name
    case_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "recurrent_drafting_drafter", "architectures": ["Drafter"], "vocab_size": v,
              "hidden_size": h, "exit_dim": cfg["exit_dim"], "num_draft_layers": cfg["num_draft_layers"],
              "num_lookback_tokens": -1, "rnn": cfg["rnn"], "torch_dtype": "float32"}
    (case_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_safetensors(case_dir / "model.safetensors",
                      {n: p.float() for n, p in head.named_parameters()}, {"format": "pt"})
    tensors = {
        "hidden": hidden.float(),
        "input_ids": input_ids.to(torch.int32),
        "labels": labels.to(torch.int32),
        "embeddings": embeddings.float(),
        "loss": loss.detach().reshape(1).float(),
        "loss_per_iteration": torch.tensor(per_iteration, dtype=torch.float32),
        "topk_accuracy": torch.tensor(accuracy, dtype=torch.float32),
    }
    for n, p in head.named_parameters():
        tensors["grad." + n] = p.grad.float()
    write_safetensors(case_dir / "fixture.safetensors", tensors, {"format": "pt"})
    (case_dir / "fixture.json").write_text(json.dumps({
        "made_by": "tools/make_redrafter_grad_fixture.py", "torch": torch.__version__, "seed": seed,
        "n_tokens": N_TOKENS, "top_k": TOP_K, "loss": loss.item(), "loss_per_iteration": per_iteration,
        "topk_accuracy": accuracy, "parameters": [n for n, _ in head.named_parameters()]}, indent=2) + "\n")
    print(f"{name}: loss {loss.item():.6f} -> {case_dir}", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    for k, (name, cfg) in enumerate(CASES.items()):
        make_case(name, cfg, args.out, args.seed + k)
    return 0


if __name__ == "__main__":
    sys.exit(main())
