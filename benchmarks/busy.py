"""Training-step time on a busy machine: quiet, then with 1 and 2 competing CPU-bound processes.

    python -m benchmarks.busy                 # a few minutes on 2 cores
    python -m benchmarks.busy --quick         # base-mini only (about a minute)

Rows (each a fresh `python -m benchmarks.speed` process; base-mini rows: the median over --repeats):

    base-mini LoRA r=8 (4 layers, width 128, byte vocabulary, batch 16 x 128): quiet, +1, +2 competitors
    GPT-2 small (124M) LoRA r=8, batch 4 x 256: quiet, +1 competitor

each twice: with tinylora's thread choice (backend/threads.py, the default) and with it switched off
(TINYLORA_ADAPTIVE_THREADS=0: every product gets all threads, as plain NumPy + OpenBLAS does).
A competitor is `python -c "busy loop"` that stops by itself after --competitor-seconds and is killed
when its row ends. The slowdown is (step time) / (quiet step time of the same policy).
The load average is recorded at the start of every row: on a machine that is not otherwise quiet,
"quiet" means "without our competitors".
Writes benchmarks/results/busy.json and busy.md.
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

MODULE = "benchmarks.busy"
REPO_ROOT = Path(__file__).resolve().parent.parent
MINI = ["--config", "mini", "--batch", "16", "--method", "lora", "--rank", "8", "--warmup", "2", "--steps", "10"]
GPT2 = ["--config", "gpt2", "--method", "lora", "--rank", "8", "--warmup", "1", "--steps", "3"]
POLICIES = {"tinylora threads": {}, "all threads (before)": {"TINYLORA_ADAPTIVE_THREADS": "0"}}


def start_competitors(n: int, seconds: float) -> list[subprocess.Popen]:
    """n single-threaded busy loops, each ending by itself after `seconds` at the latest."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def stop(competitors) -> None:
    for p in competitors:
        p.kill()
    for p in competitors:
        p.wait()


def step_time(speed_args, env_extra, threads: int, tmp: Path) -> float:
    out = tmp / "speed.json"
    env = dict(os.environ, **env_extra)
    env.update({name: str(threads) for name in common.THREAD_VARIABLES})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "benchmarks.speed", "--impl", "tinylora", *speed_args, "--threads", str(threads),
           "--out", str(out)]
    subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    return json.loads(out.read_text())["result"]["median_step_seconds"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per base-mini row (default 3)")
    parser.add_argument("--quick", action="store_true", help="base-mini rows only")
    parser.add_argument("--competitor-seconds", type=float, default=300, help="a competitor never outlives this")
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    args = parser.parse_args(argv)

    cases = [("base-mini LoRA r=8, 16 x 128", MINI, n, args.repeats) for n in (0, 1, 2)]
    if not args.quick:
        cases += [("GPT-2 small LoRA r=8, 4 x 256", GPT2, n, 1) for n in (0, 1)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, speed_args, n_competitors, repeats in cases:
            for policy, env_extra in POLICIES.items():
                load = round(os.getloadavg()[0], 2)
                competitors = start_competitors(n_competitors, args.competitor_seconds)
                try:
                    times = [step_time(speed_args, env_extra, args.threads, Path(tmp)) for _ in range(repeats)]
                finally:
                    stop(competitors)
                rows.append({"model": model, "policy": policy, "competitors": n_competitors, "runs": times,
                             "median_step_seconds": common.median(times), "load_average_1min_at_start": load})
                print(f"{model} | {policy} | +{n_competitors}: {common.median(times):.4f} s (load {load})", flush=True)
    for row in rows:
        quiet = next(r for r in rows if r["model"] == row["model"] and r["policy"] == row["policy"] and r["competitors"] == 0)
        row["slowdown"] = row["median_step_seconds"] / quiet["median_step_seconds"]
    record = {"benchmark": "busy", "threads": args.threads, "command": common.command_line(MODULE, argv),
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": common.machine_info(),
              "versions": common.library_versions(), "rows": rows}
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    common.write_result(record, str(results / "busy.json"), "")
    lines = [f"`{record['command']}` ({record['timestamp']}, {args.threads} threads, "
             f"{record['machine']['usable_cpus']} usable cores)", "",
             "| model | thread policy | competitors | median step (s) | slowdown vs quiet | runs (s) | load at start |",
             "|---|---|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['policy']} | {r['competitors']} | {r['median_step_seconds']:.4f} | "
                     f"{r['slowdown']:.2f}x | {', '.join(f'{t:.3f}' for t in r['runs'])} | {r['load_average_1min_at_start']} |")
    (results / "busy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
