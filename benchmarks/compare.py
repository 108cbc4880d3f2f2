"""Step time of several contenders in ONE run: each repeat runs every contender once, in a fresh process,
in turn (so a change of machine load hits all of them alike); medians over the repeats; the load
average (`uptime`) is recorded before every process.

    python -m benchmarks.compare --set allocator     # tinylora LoRA r=8, GPT-2 small: keep vs system allocator
    python -m benchmarks.compare --set gpt2          # LoRA r=8 and full FT: tinylora, PyTorch, HF + PEFT,
                                                     #   "as users run each" and "same allocator for all"
    python -m benchmarks.compare --set teaching      # the same at base-mini's shape (4 layers, width 128, 16 x 128)
    python -m benchmarks.compare --set kernels       # tinylora LoRA r=8 and full FT, GPT-2 small: kernels on vs
                                                     #   TINYLORA_KERNELS=0 (every op's readable lines)

Writes benchmarks/results/compare__<set>.json and .md (one row per contender: the median and every value).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common

MODULE = "benchmarks.compare"
REPO_ROOT = Path(__file__).resolve().parent.parent
KEEP = common.KEEP_FREED_MEMORY
SYSTEM = {"TINYLORA_ALLOCATOR": "system"}
READABLE = {"TINYLORA_KERNELS": "0"}


def _speed(config: str, impl: str, method: str, extra=()) -> list[str]:
    args = ["--config", config, "--impl", impl, "--method", method]
    return args + (["--rank", "8"] if method == "lora" else []) + list(extra)


def contenders(name: str) -> list[tuple[str, list[str], dict]]:
    """(label, speed.py arguments, extra environment) of every contender of a set."""
    if name == "allocator":
        lora = _speed("gpt2", "tinylora", "lora", ("--warmup", "1", "--steps", "3"))
        return [("tinylora-lora-r8 keep (default)", lora, {}), ("tinylora-lora-r8 system", lora, SYSTEM)]
    if name == "kernels":
        rows = []
        for method in ("lora", "full"):
            args = _speed("gpt2", "tinylora", method, ("--warmup", "1", "--steps", "3"))
            label = common.contender_label("tinylora", method, 8)
            rows += [(f"{label} kernels (default)", args, {}), (f"{label} readable ops", args, READABLE)]
        return rows
    if name in ("gpt2", "teaching"):
        config, extra = ("gpt2", ("--warmup", "1", "--steps", "3")) if name == "gpt2" else ("mini", ("--batch", "16", "--warmup", "2", "--steps", "10"))
        rows = []
        for method in ("lora", "full"):
            for impl in ("tinylora", "torch", "hf"):
                label = common.contender_label(impl, method, 8)
                rows.append((f"{label} | as users run it", _speed(config, impl, method, extra), {}))
            for impl in ("tinylora", "torch", "hf"):
                label = common.contender_label(impl, method, 8)
                rows.append((f"{label} | keep-freed for all", _speed(config, impl, method, extra), KEEP))
        return rows
    raise ValueError(f"unknown set '{name}'")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="allocator", choices=("allocator", "gpt2", "teaching", "kernels"))
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per contender (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=None, help="run only contenders whose label contains this text")
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    args = parser.parse_args(argv)
    from tinylora.analysis.provenance import provenance

    started = provenance(common.command_line(MODULE, argv))  # the code that ran, even if the checkout moves on

    rows = [r for r in contenders(args.set) if args.only is None or args.only in r[0]]
    runs = {label: [] for label, _, _ in rows}
    loads = {label: [] for label, _, _ in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for n, (label, speed_args, env_extra) in enumerate(rows):
                env = dict(os.environ, PYTHONUNBUFFERED="1", **env_extra)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
                out = Path(tmp) / f"{repeat}_{n}.json"
                cmd = [sys.executable, "-m", "benchmarks.speed", *speed_args, "--threads", str(args.threads),
                       "--out", str(out)]
                loads[label].append(load_average())
                done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"FAILED {label}: {done.stderr[-2000:]}", file=sys.stderr)
                    runs[label].append(None)
                    continue
                seconds = json.loads(out.read_text())["result"]["median_step_seconds"]
                runs[label].append(seconds)
                print(f"[{repeat + 1}/{args.repeats}] {label}: {seconds:.4f} s (load {loads[label][-1]})", flush=True)

    table = []
    for label, speed_args, env_extra in rows:
        values = [v for v in runs[label] if v is not None]
        env_text = " ".join(f"{k}={v}" for k, v in env_extra.items())
        table.append({"contender": label, "median_step_seconds": common.median(values) if values else None,
                      "runs": runs[label], "load_average_1min": loads[label],
                      "command": f"{env_text} python -m benchmarks.speed {' '.join(speed_args)} --threads {args.threads}".strip()})
    record = {"benchmark": "compare", "set": args.set, "repeats": args.repeats, "threads": args.threads,
              "command": common.command_line(MODULE, argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": common.machine_info(), "versions": common.library_versions(), "provenance": started,
              "rows": table}
    results = Path(args.results_dir)
    common.write_result(record, str(results / f"compare__{args.set}.json"), "")
    lines = [f"`{record['command']}` ({record['timestamp']}, {args.threads} threads, "
             f"{args.repeats} fresh processes per contender, interleaved)", "",
             "| contender | median step (s) | runs (s) | load average (1 min) at each start |", "|---|---:|---|---|"]
    for row in table:
        med = f"{row['median_step_seconds']:.4f}" if row["median_step_seconds"] else "failed"
        runs_text = ", ".join(f"{v:.3f}" if v else "failed" for v in row["runs"])
        lines.append(f"| {row['contender']} | {med} | {runs_text} | {', '.join(map(str, row['load_average_1min']))} |")
    (results / f"compare__{args.set}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
