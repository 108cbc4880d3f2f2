"""Turn benchmarks/results/*.json into RESULTS.md (tables, targets) and the PNG plots.

    python -m benchmarks.report [--results-dir benchmarks/results]

Repeats of a job (fresh processes) are combined by their median. Ratios "tinylora / peer" compare runs
of the same suite on the same machine only: a result from another machine or another day is never
divided by this one. Targets are checked at the GPT-2 small shape on the CPU; where that was not
measured, the table says so instead of guessing.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from . import common

GIB, MIB = common.GIB, 1024**2
# The lead's reference measurements (PyTorch 2.13 CPU, GPT-2 124M, 4 x 256, float32, medians of 3 processes)
REFERENCE = {"torch-lora-r8": (4.56, 1.54), "torch-full": (8.75, 2.35), "hf-lora-r8": (5.53, 2.15), "hf-full": (7.17, 3.70)}


def load(results_dir: Path) -> list[dict]:
    records = []
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.name.startswith("suite__"):
            continue
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SystemExit(f"report: {path} is not valid JSON ({err}); delete it or run the job again") from err
        record["_file"] = path.name
        records.append(record)
    return records


def grouped(records, benchmark: str) -> dict:
    """{(device, shape name): {contender label: [records of repeats]}} for one benchmark."""
    out = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("benchmark") == benchmark:
            out[(r["device"], r["shape"]["name"])][r["contender"]["label"]].append(r)
    return out


def med(records, getter):
    values = [v for v in (getter(r) for r in records) if v is not None]
    return common.median(values) if values else None


def fmt(value, spec=".2f", unit="") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def label_order(label: str):
    impl, method, *rank = label.split("-")
    return (common.IMPLS.index(impl), method != "lora", int(rank[0][1:]) if rank else 0)


def shape_text(records) -> str:
    s = records[0]["shape"]
    return f"{s['name']}: L={s['n_layer']}, H={s['n_head']}, C={s['n_embd']}, V={s['vocab_size']}, batch {s['batch']} x {s['seq']}"


# ------------------------------------------------------------------ sections
def machine_section(records) -> list[str]:
    lines = ["## Machine and software", ""]
    seen = set()
    for r in records:
        m, v = r["machine"], r["versions"]
        key = (r["device"], m["cpu_model"], r["threads"], m.get("gpu"))
        if key in seen:
            continue
        seen.add(key)
        gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
        lines.append(f"- {r['device']}: {m['cpu_model']}, {m['physical_cores']} physical cores / {m['usable_cpus']} usable "
                     f"CPUs, {m['mem_total_gib']} GiB{gpu}; {r['threads']} threads; backend {r['backend']}")
        lines.append("  - versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    loads = [r["machine"]["load_average_1min"] for r in records if r["machine"].get("load_average_1min") is not None]
    cpus = min(r["machine"]["usable_cpus"] for r in records)
    if loads and max(loads) > cpus:
        lines.append(f"- **Busy machine**: the 1-minute load average reached {max(loads):.1f} on {cpus} CPUs while "
                     "these numbers were taken, so timings (and to a lesser degree memory) are noisy; rerun on a "
                     "quiet machine before trusting small differences.")
    if not any(r["device"] == "cuda" for r in records):
        lines.append("- **GPU numbers are pending**: no `--device cuda` run is recorded here yet "
                     "(`python -m benchmarks.run_all --suite gpt2 --device cuda`).")
    lines.append("")
    return lines


def memory_section(records) -> list[str]:
    lines = ["## Memory: peak above the loaded model", "",
             "Headline: peak resident memory (VmHWM) during the training steps minus resident memory (VmRSS) once "
             "the model, optimizer and batch exist (CUDA: allocator peak minus allocated). Tagged: tinylora's own "
             "accounting at its peak, parameters excluded. Analytic: the minimum of benchmarks/analytic.py.", ""]
    for (device, shape), by_label in sorted(grouped(records, "memory").items()):
        lines += [f"### {device}, {shape_text(next(iter(by_label.values())))}", "",
                  "| contender | runs | headline GiB | tagged GiB (saved / optimizer / grads / other) | analytic min GiB "
                  "| headline / analytic | tinylora / this |", "|---|---:|---:|---|---:|---:|---:|"]
        headline = {label: med(rs, lambda r: r["result"]["peak_above_model_bytes"]) for label, rs in by_label.items()}
        for label in sorted(by_label, key=label_order):
            rs = by_label[label]
            tagged = rs[0]["result"].get("tagged")
            tagged_text = "-"
            if tagged:
                split = tagged["peak_split"]
                tagged_text = (f"{tagged['peak_above_parameters'] / GIB:.3f} ({split['saved'] / GIB:.3f} / "
                               f"{split['optimizer'] / GIB:.3f} / {split['gradients'] / GIB:.3f} / {split['other'] / GIB:.3f})")
            analytic = rs[0]["result"]["analytic"]["peak_above_weights"]
            ours = headline.get("tinylora-" + label.split("-", 1)[1])
            ratio = ours / headline[label] if ours and not label.startswith("tinylora") else None
            lines.append(f"| {label} | {len(rs)} | {headline[label] / GIB:.3f} | {tagged_text} | {analytic / GIB:.3f} "
                         f"| {headline[label] / analytic:.2f} | {fmt(ratio)} |")
        lines.append("")
    return lines


def ceilings(records) -> dict:
    """{(device, library): best GEMM GFLOP/s} from the ceiling runs."""
    out = {}
    for r in records:
        if r.get("benchmark") == "ceiling":
            for lib, value in r["result"]["ceiling_gflops_per_second"].items():
                out[(r["device"], lib)] = max(value, out.get((r["device"], lib), 0.0))
    return out


def speed_section(records) -> list[str]:
    lines = ["## Speed: one training step (forward, backward, AdamW)", "",
             "Median over processes of each process's median step (after warm-up). GFLOP/s counts matmul FLOPs "
             "(benchmarks/flops.py); % of ceiling divides by the best float32 GEMM rate measured with the same "
             "threads (NumPy for tinylora, torch.mm for the peers when measured).", ""]
    ceil = ceilings(records)
    for (device, shape), by_label in sorted(grouped(records, "speed").items()):
        timed = {label: [r for r in rs if r["result"]["median_step_seconds"]] for label, rs in by_label.items()}
        timed = {label: rs for label, rs in timed.items() if rs}
        if not timed:
            continue
        lines += [f"### {device}, {shape_text(next(iter(timed.values())))}", "",
                  "| contender | runs | median step s | tokens/s | GFLOP/s | % of ceiling | LoRA speed-up vs own full FT "
                  "| tinylora / this (time) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        step = {label: med(rs, lambda r: r["result"]["median_step_seconds"]) for label, rs in timed.items()}
        for label in sorted(timed, key=label_order):
            rs, impl = timed[label], label.split("-")[0]
            gflops = med(rs, lambda r: r["result"]["gflops_per_second"])
            library = "numpy" if impl == "tinylora" else "torch"
            c = ceil.get((device, "cupy" if device == "cuda" and impl == "tinylora" else library)) or ceil.get((device, "numpy"))
            full = step.get(f"{impl}-full")
            speedup = full / step[label] if full and "-lora-" in label else None
            ours = step.get("tinylora-" + label.split("-", 1)[1])
            ratio = ours / step[label] if ours and impl != "tinylora" else None
            lines.append(f"| {label} | {len(rs)} | {step[label]:.3f} | {med(rs, lambda r: r['result']['tokens_per_second']):.0f} "
                         f"| {gflops:.1f} | {fmt(100 * gflops / c if c else None, '.0f', '%')} | {fmt(speedup, '.2f', 'x')} "
                         f"| {fmt(ratio)} |")
        lines.append("")
    if ceil:
        lines.append("Matmul ceilings: " + ", ".join(f"{lib} on {dev} {v:.1f} GFLOP/s" for (dev, lib), v in sorted(ceil.items())))
        lines.append("")
    return lines


def profile_section(records) -> list[str]:
    profiled = [r for r in records if r.get("benchmark") == "speed" and r["result"].get("profile")]
    if not profiled:
        return []
    lines = ["## Where tinylora's step spends its time (op profile)", ""]
    for r in sorted(profiled, key=lambda r: (r["device"], r["shape"]["n_embd"])):
        p = r["result"]["profile"]
        lines += [f"### {r['device']}, {shape_text([r])}, {r['contender']['label']} (profiled step {p['step']:.3f} s)", "",
                  "| category | s per step | share |", "|---|---:|---:|"]
        rows = list(p["categories"].items()) + [("outside ops (graph building, backward walk, Python)", p["outside_ops"])]
        lines += [f"| {name} | {sec:.3f} | {100 * sec / p['step']:.0f}% |" for name, sec in rows]
        lines += ["", "Top op classes: " + ", ".join(f"{name} {sec:.3f} s" for name, sec in list(p["ops"].items())[:8]), ""]
    return lines


def inference_section(records) -> list[str]:
    runs = [r for r in records if r.get("benchmark") == "inference"]
    if not runs:
        return []
    lines = ["## Inference: batch 1, eval mode, no_grad (tinylora)", "",
             "| device, shape | rank | T | base ms | merged ms (/ base) | unmerged ms (/ base) | generation tokens/s, "
             "KV cache / none |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        gen = r["result"]["generation"]
        gen_text = f"{gen['with_cache']['tokens_per_second']:.1f} / {gen['without_cache']['tokens_per_second']:.1f}"
        for T, row in r["result"]["latency"].items():
            s = row["seconds"]
            lines.append(f"| {r['device']}, {r['shape']['name']} | {r['result']['rank']} | {T} | {s['base'] * 1e3:.2f} "
                         f"| {s['merged'] * 1e3:.2f} ({row['merged_over_base']:.3f}) "
                         f"| {s['unmerged'] * 1e3:.2f} ({row['unmerged_over_base']:.3f}) | {gen_text} |")
    lines.append("")
    return lines


def adapter_section(records) -> list[str]:
    runs = [r for r in records if r.get("benchmark") == "adapter_size"]
    if not runs:
        return []
    lines = ["## Adapter file vs full checkpoint (float32 safetensors)", "",
             "| device, shape | full checkpoint MiB | rank | adapter KiB | trainable params (formula) | checkpoint / adapter |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in runs:
        res = r["result"]
        for rank, row in res["adapters"].items():
            lines.append(f"| {r['device']}, {r['shape']['name']} | {res['checkpoint_bytes'] / MIB:.1f} | {rank} | {row['bytes'] / 1024:.1f} "
                         f"| {row['params']} ({row['formula_params']}) | {res['checkpoint_bytes'] / row['bytes']:.0f}x |")
    paper = runs[0]["result"]["paper_gpt3"]
    lines += ["", f"The paper's GPT-3 175B case from the same formula (r = {paper['rank']}, q and v, fp16): "
              f"{paper['adapter_bytes'] / 1e6:.1f} MB adapter vs {paper['checkpoint_bytes'] / 1e9:.0f} GB checkpoint "
              "(the paper: 35 MB vs 350 GB).", ""]
    return lines


def curve_section(records) -> list[str]:
    """LoRA r=8 / full-FT peak ratio as the model grows, measured and analytic."""
    from . import analytic
    from .shapes import SHAPES

    rows = []
    for (device, shape), by_label in grouped(records, "memory").items():
        for impl in common.IMPLS:
            lora, full = by_label.get(f"{impl}-lora-r8"), by_label.get(f"{impl}-full")
            if lora and full:
                a = med(lora, lambda r: r["result"]["peak_above_model_bytes"])
                b = med(full, lambda r: r["result"]["peak_above_model_bytes"])
                rows.append((device, SHAPES[shape].n_embd if shape in SHAPES else 0, shape, impl, a / b))
    if not rows:
        return []
    lines = ["## LoRA / full fine-tuning peak ratio as the model grows (r = 8)", "",
             "| device | shape | contender | measured LoRA / full | analytic LoRA / full |", "|---|---|---|---:|---:|"]
    for device, _, shape, impl, ratio in sorted(rows):
        s = SHAPES[shape]
        theory = analytic.memory_model(s, "lora", 8)["peak_above_weights"] / analytic.memory_model(s, "full")["peak_above_weights"]
        lines.append(f"| {device} | {shape} | {impl} | {ratio:.2f} | {theory:.2f} |")
    lines.append("")
    return lines


def targets_section(records) -> list[str]:
    """The issue's targets at GPT-2 small on the CPU, each marked met, missed (by how much) or not measured."""
    mem = grouped(records, "memory").get(("cpu", "gpt2"), {})
    spd = grouped(records, "speed").get(("cpu", "gpt2"), {})
    peak = {k: med(v, lambda r: r["result"]["peak_above_model_bytes"]) for k, v in mem.items()}
    step = {k: med(v, lambda r: r["result"]["median_step_seconds"]) for k, v in spd.items()}
    lines = ["## Targets (GPT-2 small, batch 4 x 256, float32, CPU)", "",
             "| target | measured | status |", "|---|---|---|"]

    def row(name, value_text, ok, miss_text):
        status = "not measured" if ok is None else ("met" if ok else f"**missed** {miss_text}")
        lines.append(f"| {name} | {value_text} | {status} |")

    ours_step, ours_peak = step.get("tinylora-lora-r8"), peak.get("tinylora-lora-r8")
    for peer in ("torch-lora-r8", "torch-full", "hf-lora-r8", "hf-full"):
        theirs = step.get(peer)
        ok = None if not (ours_step and theirs) else ours_step < theirs
        row(f"tinylora LoRA step faster than {peer}", f"{fmt(ours_step, '.2f', ' s')} vs {fmt(theirs, '.2f', ' s')}", ok,
            f"(tinylora takes {fmt(ours_step / theirs if ok is not None else None, '.2f', 'x')} the peer's time)")
    for peer in ("torch-lora-r8", "torch-full", "hf-lora-r8", "hf-full"):
        theirs = peak.get(peer)
        ok = None if not (ours_peak and theirs) else ours_peak < theirs
        row(f"tinylora LoRA peak below {peer}", f"{fmt(ours_peak and ours_peak / GIB, '.3f', ' GiB')} vs "
            f"{fmt(theirs and theirs / GIB, '.3f', ' GiB')}", ok,
            f"(tinylora needs {fmt(ours_peak / theirs if ok is not None else None, '.2f', 'x')} the peer's peak)")
    full = step.get("tinylora-full")
    speedup = full / ours_step if full and ours_step else None
    row("tinylora LoRA step >= 1.4x faster than its full FT", fmt(speedup, ".2f", "x"),
        None if speedup is None else speedup >= 1.4, f"({fmt(speedup, '.2f', 'x')} < 1.4x)")
    if ours_peak:
        minimum = mem["tinylora-lora-r8"][0]["result"]["analytic"]["peak_above_weights"]
        ratio = ours_peak / minimum
        row("tinylora LoRA peak <= 1.15x its analytic minimum", f"{ratio:.2f}x ({ours_peak / GIB:.3f} vs {minimum / GIB:.3f} GiB)",
            ratio <= 1.15, f"by {100 * (ratio / 1.15 - 1):.0f}% over the 1.15x bound")
    else:
        row("tinylora LoRA peak <= 1.15x its analytic minimum", "-", None, "")
    inf = [r for r in records if r.get("benchmark") == "inference" and r["device"] == "cpu" and r["shape"]["name"] == "gpt2"]
    for r in inf:
        for T, latency in r["result"]["latency"].items():
            x = latency["merged_over_base"]
            row(f"merged-LoRA latency = base within 3% (T={T})", f"{x:.3f}x", abs(x - 1) <= 0.03,
                f"by {100 * (abs(x - 1) - 0.03):.1f} points")
    if not inf:
        row("merged-LoRA latency = base within 3%", "-", None, "")
    lines += ["", "Reference (the issue's reference numbers, PyTorch 2.13 on this machine type, for scale only; the ratios above use peers "
              "measured in the same run): " + ", ".join(f"{k} {s} s / {g} GiB" for k, (s, g) in REFERENCE.items()) + ".", ""]
    return lines


def build_markdown(records, notes: str = "") -> str:
    lines = ["# tinylora benchmark results", "",
             "Generated by `python -m benchmarks.report` from benchmarks/results/*.json; every JSON file records its exact "
             "command, machine, thread count and library versions. See benchmarks/README.md for how to rerun.", ""]
    if notes.strip():  # results/NOTES.md: hand-written context (who ran what, where), kept across regenerations
        lines += ["## Notes", "", notes.strip(), ""]
    for section in (machine_section, targets_section, memory_section, curve_section, speed_section, profile_section,
                    inference_section, adapter_section):
        lines += section(records)
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    results = Path(args.results_dir)
    records = load(results)
    if not records:
        raise SystemExit(f"report: no result files in {results}; run python -m benchmarks.run_all first")
    path = results / "RESULTS.md"
    notes = results / "NOTES.md"
    path.write_text(build_markdown(records, notes.read_text() if notes.exists() else ""))
    print(f"wrote {path}")
    if not args.no_plots:
        try:
            from . import plots
        except ImportError as err:  # matplotlib is optional: the tables do not need it
            print(f"plots skipped: {err}")
        else:
            for png in plots.write_all(records, results):
                print(f"wrote {png}")
    return path


if __name__ == "__main__":
    main()
