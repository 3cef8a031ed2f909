#!/usr/bin/env python3
"""Plots the demo model's training loss (loss.csv written by train.py) to a PNG for models/demo/README.md.

    .venv/bin/python tools/demo/plot_loss.py OUT_DIR/loss.csv models/demo/loss_curve.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    lr = [float(r["lr"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, loss, lw=1, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (assistant tokens, log scale)", color="tab:blue")
    ax.grid(True, which="both", alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(steps, lr, lw=1, color="tab:orange")
    ax2.set_ylabel("learning rate", color="tab:orange")
    ax.set_title(f"qed demo model: final loss {loss[-1]:.4f} after {steps[-1]} steps")
    fig.tight_layout()
    fig.savefig(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
