"""The near task's table and plot: LoRA's validation loss against full fine-tuning's, for each base size.

    python -m benchmarks.near_task report      (reads benchmarks/results/near_task/*.json)

writes REPORT.md, summary.json and gap_vs_size.png beside the run files. For each base and method the
loss is the mean over the seeds run (listed in the table). The gap is (LoRA - full) / full and LoRA's share
of the gain is (base - LoRA) / (base - full), against full fine-tuning's runs of the same seeds (the
validation batches are drawn with the run's seed, so the base's loss also differs a little between seeds).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (base, method): mean loss over seeds, and its gap and share against that base's full FT."""
    groups = defaultdict(list)
    for run in runs:
        groups[(run["base"], run["method"], run["steps"], run["batch"], run["lr"])].append(run)
    full = {(k[0], k[2], k[3]): g for k, g in groups.items() if k[1] == "full"}
    rows = []
    for (base, method, steps, batch, lr), group in sorted(groups.items(), key=lambda kv: (kv[1][0]["base_parameters"],
                                                                                        kv[0][1] != "full", kv[0][1])):
        mean = sum(r["val_loss_after"] for r in group) / len(group)
        row = {"base": base, "base_parameters": group[0]["base_parameters"], "method": method,
               "trainable": group[0]["trainable"], "lr": lr, "steps": steps, "batch": batch,
               "seeds": sorted(r["seed"] for r in group),
               "val_loss_before": sum(r["val_loss_before"] for r in group) / len(group),  # its sample depends on the seed
               "val_loss_after": mean, "files": sorted(r["file"] for r in group)}
        reference = [r for r in full.get((base, steps, batch), []) if r["seed"] in row["seeds"]]
        if method != "full" and reference:  # against full FT's runs of the same seeds
            full_loss = sum(r["val_loss_after"] for r in reference) / len(reference)
            before = sum(r["val_loss_before"] for r in reference) / len(reference)
            row["gap"] = (mean - full_loss) / full_loss
            row["share_of_gain"] = (before - mean) / (before - full_loss)
            by_seed = {r["seed"]: r["val_loss_after"] for r in reference}
            row["gap_by_seed"] = [(r["val_loss_after"] - by_seed[r["seed"]]) / by_seed[r["seed"]]
                                  for r in sorted(group, key=lambda r: r["seed"])]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| base | base parameters | method | trainable | lr | seeds | val loss before | val loss after | "
             "gap to full FT | LoRA's share of the gain |", "|---|---:|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        gap = f"{100 * r['gap']:+.1f}%" if "gap" in r else ""
        share = f"{100 * r['share_of_gain']:.0f}%" if "share_of_gain" in r else ""
        lines.append(f"| {Path(r['base']).name} | {r['base_parameters']:,} | {r['method']} | {r['trainable']:,} | "
                     f"{r['lr']:g} | {','.join(map(str, r['seeds']))} | {r['val_loss_before']:.4f} | "
                     f"{r['val_loss_after']:.4f} | {gap} | {share} |")
    return "\n".join(lines)


def plot(rows: list[dict], path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({r["method"] for r in rows if "gap" in r}):
        points = sorted((r["base_parameters"], 100 * r["gap"]) for r in rows if r["method"] == method and "gap" in r)
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=method)
    ax.axhline(5, color="k", linestyle=":", label="5% above full FT")
    ax.set_xscale("log")
    ax.set_xlabel("base parameters")
    ax.set_ylabel("LoRA's val loss above full FT's (%)")
    ax.set_title("near task (NumPy's source): the gap against base size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(runs: list[dict], out_dir) -> dict:
    """REPORT.md, summary.json (with this report's provenance) and gap_vs_size.png in out_dir."""
    from tinylora.analysis.provenance import provenance

    rows = summarize(runs)
    machines = sorted({json.dumps(run.get("machine_key")) for run in runs})
    if len(machines) > 1:
        raise ValueError(f"near task runs from {len(machines)} machines ({', '.join(machines)}): one table, one machine")
    missing = [run["file"] for run in runs if not run.get("commit")]
    if missing:
        raise ValueError(f"runs without a recorded git commit (measured before provenance was recorded; rerun them): "
                         f"{', '.join(missing)}")
    summary = {"rows": rows, "provenance": provenance("python -m benchmarks.near_task report"), "machines": machines}
    out_dir = Path(out_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(rows, out_dir / "gap_vs_size.png")
    (out_dir / "REPORT.md").write_text(
        "# Near task: LoRA against full fine-tuning on Python the bases never saw (NumPy's source)\n\n"
        "Every base was pretrained on the top-level *.py files of Python's standard library with base-mini's "
        "recipe (`python -m benchmarks.near_task pretrain`; base-mini is the shipped one). Each row fine-tunes "
        "it on NumPy's installed *.py files (10% of the chunks held out) and reports the validation loss in "
        "nats per byte; one result file per run beside this report (each with its command and provenance).\n\n"
        f"{table(rows)}\n\nCommand: `python -m benchmarks.near_task report`.\n")
    print(table(rows))
    return summary
