"""Loss curves as PNG files. matplotlib is optional: without it, plotting says so and returns."""

from __future__ import annotations

import json
import sys


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no window
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot written; pip install 'tinylora[demo]')", file=sys.stderr)
        return None
    return plt


def read_metrics(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_losses(metrics_path, png_path, title: str = "training") -> bool:
    """Training and validation loss against step, from a metrics.jsonl file. Returns True if written."""
    return plot_runs({"": metrics_path}, png_path, title)


def plot_runs(runs: dict, png_path, title: str) -> bool:
    """Training and validation loss of one or more runs on one plot: runs = {label: metrics.jsonl path}."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, path in runs.items():
        rows = read_metrics(path)
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        name = f"{label} " if label else ""
        line = ax.plot(*zip(*val), "o-", label=f"{name}validation loss")[0] if val else None
        if train:
            ax.plot(*zip(*train), alpha=0.4, color=line.get_color() if line else None, label=f"{name}train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
