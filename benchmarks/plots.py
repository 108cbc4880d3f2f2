"""PNG plots of the benchmark results (the only module that imports matplotlib).

    memory__<device>__<shape>.png    peak above the model per contender, with the analytic minimum
    speed__<device>__<shape>.png     median step time per contender
    profile__<device>__<shape>__<contender>.png   tinylora's step time per op category
    ratio_curve__<device>.png        LoRA r=8 / full-FT peak ratio against model size, measured and analytic
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from . import analytic, common  # noqa: E402
from .report import grouped, label_order, med  # noqa: E402
from .shapes import SHAPES  # noqa: E402

COLORS = {"tinylora": "tab:blue", "torch": "tab:orange", "hf": "tab:green"}


def _bars(ax, labels, values, ylabel):
    ax.bar(range(len(labels)), values, color=[COLORS[label.split("-")[0]] for label in labels])
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_ylabel(ylabel)


def memory_plots(records, out: Path) -> list[Path]:
    paths = []
    for (device, shape), by_label in grouped(records, "memory").items():
        labels = sorted(by_label, key=label_order)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        values = [med(by_label[k], lambda r: r["result"]["peak_above_model_bytes"]) / common.GIB for k in labels]
        _bars(ax, labels, values, "peak above loaded model (GiB)")
        minimum = [by_label[k][0]["result"]["analytic"]["peak_above_weights"] / common.GIB for k in labels]
        ax.scatter(range(len(labels)), minimum, color="black", marker="_", s=400, zorder=3, label="analytic minimum")
        ax.set_title(f"training-step memory, {shape} on {device}")
        ax.legend()
        fig.tight_layout()
        paths.append(out / f"memory__{device}__{shape}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def speed_plots(records, out: Path) -> list[Path]:
    paths = []
    for (device, shape), by_label in grouped(records, "speed").items():
        steps = {k: med(v, lambda r: r["result"]["median_step_seconds"]) for k, v in by_label.items()}
        labels = sorted((k for k, v in steps.items() if v), key=label_order)
        if not labels:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        _bars(ax, labels, [steps[k] for k in labels], "median step time (s)")
        ax.set_title(f"training-step time, {shape} on {device}")
        fig.tight_layout()
        paths.append(out / f"speed__{device}__{shape}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def profile_plots(records, out: Path) -> list[Path]:
    paths = []
    for r in records:
        profile = r.get("result", {}).get("profile") if r.get("benchmark") == "speed" else None
        if not profile:
            continue
        rows = list(profile["categories"].items()) + [("outside ops", profile["outside_ops"])]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh([name for name, _ in rows][::-1], [sec for _, sec in rows][::-1], color="tab:blue")
        ax.set_xlabel("seconds per step")
        ax.set_title(f"tinylora {r['contender']['label']} step by op category, {r['shape']['name']} on {r['device']}")
        fig.tight_layout()
        paths.append(out / f"profile__{r['device']}__{r['shape']['name']}__{r['contender']['label']}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def ratio_curve(records, out: Path) -> list[Path]:
    paths = []
    by_device = {}
    for (device, shape), by_label in grouped(records, "memory").items():
        for impl in common.IMPLS:
            lora, full = by_label.get(f"{impl}-lora-r8"), by_label.get(f"{impl}-full")
            full_peak = med(full, lambda r: r["result"]["peak_above_model_bytes"]) if full else 0
            if lora and full_peak > 0 and shape in SHAPES:  # 0: a process whose heap already had room (no ratio)
                ratio = med(lora, lambda r: r["result"]["peak_above_model_bytes"]) / full_peak
                params = analytic.parameter_counts(SHAPES[shape], "full")["total"]
                by_device.setdefault(device, {}).setdefault(impl, []).append((params, ratio))
    for device, by_impl in by_device.items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for impl, points in by_impl.items():
            points.sort()
            ax.plot([p for p, _ in points], [q for _, q in points], "o-", color=COLORS[impl], label=f"{impl} measured")
        theory = sorted((analytic.parameter_counts(s, "full")["total"],
                         analytic.memory_model(s, "lora", 8)["peak_above_weights"]
                         / analytic.memory_model(s, "full")["peak_above_weights"]) for s in SHAPES.values())
        ax.plot([p for p, _ in theory], [q for _, q in theory], "k--", label="analytic minimum")
        ax.set_xscale("log")
        ax.set_xlabel("model parameters")
        ax.set_ylabel("LoRA r=8 peak / full-FT peak")
        ax.set_title(f"LoRA memory relative to full fine-tuning ({device})")
        ax.legend()
        fig.tight_layout()
        paths.append(out / f"ratio_curve__{device}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def write_all(records, out) -> list[Path]:
    out = Path(out)
    return [*memory_plots(records, out), *speed_plots(records, out), *profile_plots(records, out), *ratio_curve(records, out)]
