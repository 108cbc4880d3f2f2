"""The memory table's Markdown and plot, from the JSON record `benchmarks.memory_table` writes.

    python -m benchmarks.memory_table_report benchmarks/results/memory_table.json    # rebuild .md and .png
"""

from __future__ import annotations

import sys
from pathlib import Path

MIB = 1024**2
CATEGORIES = ("weights", "quantization constants", "gradients", "optimizer", "saved", "other")


def _mib(n) -> str:
    return "-" if n is None else f"{n / MIB:,.1f}"


def _row_result(row: dict) -> dict:
    return row.get("result", row)


def table_lines(config: str, rows: list) -> list:
    lines = [f"### {config}", "",
             "| row | trainable | weights (RSS) | step peak | peak above start | analytic min | ratio | "
             + " | ".join(f"tagged {c}" for c in CATEGORIES) + " | step s | val loss |",
             "|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(CATEGORIES) + "---:|---:|"]
    for row in rows:
        if "peft_record" in row:
            r = row["peft_record"]["result"]
            lines.append(f"| HF + PEFT LoRA r=8 (c_attn) | {r['params']['trainable']:,} | - | "
                         f"{_mib(r['peak_above_model_bytes'])} | - | {_mib(r['analytic']['peak_above_weights'])} (step) | "
                         f"{r['ratio_to_analytic']:.2f} (step) | " + " | ".join("-" for _ in CATEGORIES) + " | - | - |")
            continue
        r = _row_result(row)
        tagged = r["tagged_peak_split"]
        val = "-" if r["val_loss_after"] is None else f"{r['val_loss_before']:.3f} -> {r['val_loss_after']:.3f}"
        lines.append(
            f"| {r['row']} | {r['trainable_parameters']:,} | {_mib(r['weights_rss_bytes'])} | {_mib(r['step_peak_bytes'])} | "
            f"{_mib(r['peak_above_start_bytes'])} | {_mib(r['analytic_total_bytes'])} | {r['ratio_to_analytic']:.2f} | "
            + " | ".join(_mib(tagged[c]) for c in CATEGORIES)
            + f" | {r['median_step_seconds']:.2f} | {val} |")
    return lines


def checks_lines(config: str, rows: list) -> list:
    """The issue's targets, each computed from this run's numbers."""
    by = {_row_result(r)["row"]: _row_result(r) for r in rows if "peft_record" not in r}
    lines = [f"Targets at {config}:", ""]
    q = by.get("qlora")
    if q:
        w = q["weight_report"]
        lines.append(f"- QLoRA weight bytes / float32: {w['total']:,} / {w['float32_total']:,} = **{w['ratio']:.3f}** "
                     f"(target <= 0.27; NF4 + DQ block Linears at {w['bits_per_quantized_value']:.3f} bits per value = "
                     f"{w['bits_per_quantized_value'] / 32:.3f} of float32; the float32 embeddings, biases and "
                     f"LayerNorms are {w['float']:,} bytes)")
    lora, fa = by.get("lora"), by.get("lora-fa")
    if lora and fa:
        diff = lora["tagged_peak_split"]["saved"] - fa["tagged_peak_split"]["saved"]
        expected = lora["analytic"]["saved_activations"] - fa["analytic"]["saved_activations"]
        lines.append(f"- LoRA - LoRA-FA saved activations at the peak: {diff:,} bytes; x - Ax by the analytic model "
                     f"(h1 (N, C) per block, kept by LoRA for dA and shared by q and v): {expected:,} bytes")
    for name, r in by.items():
        ok = "yes" if r["ratio_to_analytic"] <= 1.15 else "NO"
        lines.append(f"- {name}: peak above start / analytic minimum = {r['ratio_to_analytic']:.2f} "
                     f"(step alone {r['step_ratio_to_analytic']:.2f}); <= 1.15: {ok}")
    return lines + [""]


def plot(record: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = record["result"]["configs"]
    fig, axes = plt.subplots(1, len(configs), figsize=(6.5 * len(configs), 4.8), squeeze=False)
    colors = ("#4c72b0", "#8172b2", "#dd8452", "#c44e52", "#55a868", "#b0b0b0")
    for ax, (config, rows) in zip(axes[0], configs.items()):
        rows = [_row_result(r) for r in rows if "peft_record" not in r]
        names = [r["row"] for r in rows]
        bottom = [0.0] * len(rows)
        for cat, color in zip(CATEGORIES, colors):
            values = [r["tagged_peak_split"][cat] / MIB for r in rows]
            ax.bar(names, values, bottom=bottom, color=color, label=cat)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.scatter(names, [r["peak_above_start_bytes"] / MIB for r in rows], marker="_", s=600, color="black",
                   zorder=3, label="RSS: weights + step peak")
        ax.scatter(names, [r["analytic_total_bytes"] / MIB for r in rows], marker="x", color="black", zorder=3,
                   label="analytic minimum")
        ax.set_title(f"{config}: tinylora's accounting at the step's peak")
        ax.set_ylabel("MiB")
        ax.tick_params(axis="x", rotation=20)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(record: dict, md_path, png_path):
    md_path, png_path = Path(md_path), Path(png_path)
    machine = record["machine"]
    lines = ["# Where the memory goes: full FT, LoRA, LoRA-FA, QLoRA, and QLoRA + checkpointing + chunked loss", "",
             f"Command: `{record['command']}`  ", f"Machine: {machine['cpu_model']}, {record['threads']} threads, "
             f"load average {record.get('load_average_before', 0):.1f} before and {record.get('load_average_after', 0):.1f} "
             f"after; {record['timestamp']}.", ""] + ([record["note"], ""] if record.get("note") else []) + [
             "Sizes in MiB. weights (RSS): resident memory the built model added; step peak: VmHWM above the loaded "
             "model over the steps; tagged: tinylora's accounting at its own peak (weights include LoRA's A and B); "
             "analytic min: benchmarks/analytic.py, weights + the smallest possible step peak; ratio: peak above "
             "start / analytic min.", ""]
    for config, rows in record["result"]["configs"].items():
        lines += table_lines(config, rows) + [""] + checks_lines(config, rows)
    lines.append(f"![memory table]({png_path.name})")
    md_path.write_text("\n".join(lines) + "\n")
    plot(record, png_path)
    return md_path, png_path


if __name__ == "__main__":
    import json

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/memory_table.json")
    md, png = write_report(json.loads(path.read_text()), path.with_suffix(".md"), path.with_suffix(".png"))
    print(f"wrote {md}, {png}")
