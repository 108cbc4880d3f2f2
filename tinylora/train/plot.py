"""Loss curves as PNG files. matplotlib is optional: without it, plotting says so and returns.

A run's loss plot is a side output: plot_losses never stops the run that called it (a full disk,
a broken matplotlib: one warning line, and the run goes on to save its result). PNGs are written
atomically, so a failed write leaves no half file.
"""

from __future__ import annotations

import sys
import warnings

from tinylora.io import _atomic_write, parse_json


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
    """The rows of a metrics.jsonl file; a line that is not a JSON object is an error naming file and line."""
    with open(path, encoding="utf-8") as f:
        return [parse_json(line, f"{path}:{number}", dict) for number, line in enumerate(f, 1) if line.strip()]


def plot_losses(metrics_path, png_path, title: str = "training") -> bool:
    """Training and validation loss against step, from a metrics.jsonl file. Returns True if written.

    Never raises: the plot is not what a run is for, so a failure is a warning naming the file."""
    try:
        return plot_runs({"": metrics_path}, png_path, title)
    except Exception as err:  # noqa: BLE001 (any failure of a side output; the run's result matters more)
        warnings.warn(f"{png_path} was not written ({' '.join(str(err).split()) or type(err).__name__}); "
                      "the run's results are unaffected", RuntimeWarning, stacklevel=2)
        return False


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
    try:
        _atomic_write(png_path, lambda temp: fig.savefig(temp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return True
