"""The LoRA paper's Table 1 in miniature: inference latency of adapters (and prefixes) against the base model.

    python -m benchmarks.table1_latency            GPT-2 small shape, one CPU thread, ~2 CPU-minutes

The paper (Section 3, Table 1; GPT-2 medium on a GPU, batch × sequence 32×512, 16×256, 1×128) finds that
Adapter^L and Adapter^H add 2-3% latency at large batch × long sequence and 20-30% at batch 1 × short
sequence, while fine-tuning and merged LoRA cost exactly the base model. Here the same question is
asked of tinylora's GPT at the GPT-2 small shape (12 layers, d = 768, vocabulary 50257) on this
machine's CPU, at three settings scaled down so the run takes minutes:

    batch × sequence     1 × 8      2 × 16      4 × 32         (8, 32 and 128 real tokens per forward)

Contenders, one forward pass in eval mode under no_grad (logits included):
    base           the GPT itself: what FT and merged LoRA cost (merged LoRA *is* this model)
    lora-unmerged  LoRA r = 8 on W_q, W_v, not merged (two thin extra matmuls per adapted layer)
    adapter-l      Adapter^L, bottleneck r (--adapter-dim), one adapter + LayerNorm per block
    adapter-h      Adapter^H, two adapters per block
    prefix-embed   PreEmbed with l_p = l_i = 8: the same real tokens plus 16 virtual ones
    prefix-layer   PreLayer with l_p = l_i = 8

Timing: each contender runs in its own fresh process (--repeats processes per contender, in rotating
order so a busy moment of a shared machine falls on all of them alike); each process builds its model,
warms up, then times --trials forwards per setting. The table shows the median over all trials of all
processes, ± half the interquartile range, and the percentage over the base (as the paper shows).

What is timed: the CPU time of the process (time.process_time) with one BLAS thread. The machine this
was written on is shared by several people at once (load averages of 10-16 on 2 cores), where wall-clock
times measure the scheduler more than the model; the CPU time of a single thread is what one forward
pass costs the core it runs on, and for a single thread it is what the latency would be on an idle
machine. Wall-clock times are recorded next to it in the JSON.
Results: benchmarks/results/table1_latency__gpt2__cpu.{json,md}, with the machine's load (`uptime`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from . import common

MODULE = "benchmarks.table1_latency"
CONTENDERS = ("base", "lora-unmerged", "adapter-l", "adapter-h", "prefix-embed", "prefix-layer")
SETTINGS = ((1, 8), (2, 16), (4, 32))  # (batch, real tokens per sequence)
PREFIX_LEN = INFIX_LEN = 8  # the paper's best PreLayer setting for GPT-3 (App. D.4)


# ------------------------------------------------------------------ one fresh process: one contender
def build(contender: str, config: str, adapter_dim: int, seed: int):
    """The GPT of shape `config` with `contender` applied (random weights; the adapters' W_up made nonzero)."""
    import tinylora
    from tinylora import methods
    from tinylora.lora import apply_lora

    from .shapes import get_shape
    from .tinylora_contender import build_model

    model = build_model(get_shape(config), "cpu", seed)
    if contender == "lora-unmerged":
        apply_lora(model, r=8, targets=("q", "v"))
    elif contender == "adapter-l":
        methods.apply_adapter_l(model, r=adapter_dim)
    elif contender == "adapter-h":
        methods.apply_adapter_h(model, r=adapter_dim)
    elif contender == "prefix-embed":
        methods.apply_prefix_embed(model, prefix_len=PREFIX_LEN, infix_len=INFIX_LEN)
    elif contender == "prefix-layer":
        methods.apply_prefix_layer(model, prefix_len=PREFIX_LEN, infix_len=INFIX_LEN)
    tinylora.manual_seed(seed + 1)
    for p in model.trainable_parameters():  # nonzero trained-looking values (timing does not depend on them)
        if contender not in ("base", "prefix-embed", "prefix-layer"):
            tinylora.nn.init.normal_(p, 0.0, 0.02)
    return model.eval()


def time_contender(contender: str, config: str, adapter_dim: int, trials: int, seed: int) -> dict:
    """{"cpu": {"BxT": [CPU seconds per forward, ...]}, "wall": {...}} for every setting, in this process."""
    import numpy as np

    import tinylora

    model = build(contender, config, adapter_dim, seed)
    rng = np.random.default_rng(seed)
    virtual = model.virtual_tokens
    times = {"cpu": {}, "wall": {}}
    with tinylora.no_grad():
        for batch, length in SETTINGS:
            ids = rng.integers(0, model.config.vocab_size, size=(batch, length))
            if virtual is not None:  # the prompt is fed as prefix + tokens + infix
                ids = np.asarray([virtual.wrap(row) for row in ids])
            idx = tinylora.tensor(ids, device="cpu")  # the model is built on the CPU (a CPU benchmark), whatever the default device
            model(idx)  # warm-up
            cpu, wall = [], []
            for _ in range(trials):
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                model(idx)
                cpu.append(time.process_time() - start_cpu)
                wall.append(time.perf_counter() - start_wall)
            times["cpu"][f"{batch}x{length}"], times["wall"][f"{batch}x{length}"] = cpu, wall
    return times


# ------------------------------------------------------------------ the driver
def quartiles(values) -> tuple:
    import numpy as np

    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float((q3 - q1) / 2)


def table(rows: dict) -> str:
    """The paper's layout: one row per contender, one column per setting, ms ± and % over the base."""
    settings = [f"{b}x{t}" for b, t in SETTINGS]
    head = "| batch × sequence | " + " | ".join(s.replace("x", " × ") for s in settings) + " |"
    lines = [head, "|" + "---|" * (len(settings) + 1)]
    lines.append("| real tokens per forward | " + " | ".join(str(b * t) for b, t in SETTINGS) + " |")
    for name, row in rows.items():
        cells = []
        for s in settings:
            median, spread = row[s]["median_ms"], row[s]["half_iqr_ms"]
            extra = "" if name == "base" else f" ({row[s]['percent_over_base']:+.1f}%)"
            cells.append(f"{median:.1f} ± {spread:.1f}{extra}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="gpt2", help="model shape (benchmarks/shapes.py), default gpt2")
    parser.add_argument("--adapter-dim", type=int, default=64, help="adapter bottleneck r (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per contender (default 3)")
    parser.add_argument("--trials", type=int, default=7, help="timed forwards per setting per process (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1: CPU time = latency)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/...)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: time one contender
    args = parser.parse_args(argv)
    common.pin_threads(args.threads)
    if args.worker:
        print(json.dumps(time_contender(args.worker, args.config, args.adapter_dim, args.trials, args.seed)))
        return {}

    contenders = args.contenders.split(",")
    uptime_before = _uptime()
    started = time.perf_counter()
    samples = {c: {f"{b}x{t}": [] for b, t in SETTINGS} for c in contenders}  # CPU seconds
    wall = {c: {f"{b}x{t}": [] for b, t in SETTINGS} for c in contenders}
    for rep in range(args.repeats):
        order = contenders[rep % len(contenders):] + contenders[: rep % len(contenders)]
        for contender in order:
            command = [sys.executable, "-m", MODULE, "--worker", contender, "--config", args.config,
                       "--adapter-dim", str(args.adapter_dim), "--trials", str(args.trials),
                       "--threads", str(args.threads), "--seed", str(args.seed)]
            out = subprocess.run(command, capture_output=True, text=True,
                                 env={**os.environ, **{v: str(args.threads) for v in common.THREAD_VARIABLES}})
            if out.returncode:
                raise RuntimeError(f"{contender} failed:\n{out.stderr[-2000:]}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            for setting in measured["cpu"]:
                samples[contender][setting].extend(measured["cpu"][setting])
                wall[contender][setting].extend(measured["wall"][setting])
            print(f"repeat {rep + 1}/{args.repeats}: {contender} done ({time.perf_counter() - started:.0f} s)",
                  flush=True)

    rows = {}
    for contender in contenders:
        rows[contender] = {}
        for setting, values in samples[contender].items():
            median, spread = quartiles(values)
            rows[contender][setting] = {"median_ms": 1e3 * median, "half_iqr_ms": 1e3 * spread, "n": len(values),
                                        "wall_median_ms": 1e3 * quartiles(wall[contender][setting])[0]}
    if "base" in rows:
        for contender in contenders:
            for setting, cell in rows[contender].items():
                cell["percent_over_base"] = 100.0 * (cell["median_ms"] / rows["base"][setting]["median_ms"] - 1)

    args.device, args.threads_pinned_before_import = "cpu", True
    result = {"settings": [list(s) for s in SETTINGS], "adapter_dim": args.adapter_dim, "lora_rank": 8,
              "prefix_len": PREFIX_LEN, "infix_len": INFIX_LEN, "repeats": args.repeats, "trials": args.trials,
              "rows": rows, "timed": "CPU time of one thread (time.process_time)", "cpu_samples_s": samples,
              "wall_samples_s": wall, "uptime_before": uptime_before, "uptime_after": _uptime(),
              "wall_s": time.perf_counter() - started, "table_md": table(rows)}
    record = common.make_record("table1_latency", args, MODULE, result, shape={"config": args.config})
    path = common.write_result(record, args.out, f"table1_latency__{args.config}__cpu")
    md = path.with_suffix(".md")
    md.write_text(f"# Table 1 in miniature ({args.config} shape, CPU, {args.threads} thread(s))\n\n"
                  f"Command: `{record['command']}`\n\n{table(rows)}\n\n"
                  f"CPU ms per forward pass: median over {args.repeats} fresh processes × {args.trials} trials, "
                  f"± half the interquartile range; % over base. Adapter r = {args.adapter_dim}; "
                  f"prefixes l_p = l_i = {PREFIX_LEN} on top of the real tokens.\n\n"
                  f"Load: before `{uptime_before}`, after `{result['uptime_after']}`.\n")
    print(table(rows))
    print(f"-> {path}, {md} ({result['wall_s']:.0f} s)")
    return record


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
