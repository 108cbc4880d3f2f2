"""Run a whole benchmark suite, every contender in a fresh process, then write RESULTS.md and the plots.

    python -m benchmarks.run_all --suite gpt2 --threads 2          # the CPU targets (takes about an hour)
    python -m benchmarks.run_all --suite teaching --repeats 1      # teaching sizes, minutes
    python -m benchmarks.run_all --suite gpt2 --dry-run            # print the commands only

Suites (each job is one `python -m benchmarks.<module> ...` process; repeats run each job again in a new
process, and the report takes medians over them):

    smoke     tiny shape, one of everything, 2 steps: keeps the harness from rotting (used by the tests)
    teaching  tiny and mini: memory and speed of every contender, LoRA r = 1, 4, 8, 64 and full FT
    gpt2      GPT-2 small (124M) at batch 4 x 256: the targets; plus inference, adapter sizes, the ceiling
    curve     memory of LoRA r=8 and full FT from tiny to GPT-2 medium (the LoRA / full-FT ratio curve)
    all       teaching + gpt2 + curve

Peers (torch, hf) are included only where PyTorch (and transformers + PEFT) are installed. Jobs run one
after another (never two at once: they would share the cores), with the same thread count, which is set
in each child's environment before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import common

MODULE = "benchmarks.run_all"
RANKS = (1, 4, 8, 64)
REPO_ROOT = Path(__file__).resolve().parent.parent


def installed_impls() -> list[str]:
    """tinylora always; 'torch' if PyTorch is importable; 'hf' if transformers and peft are too."""
    impls = ["tinylora"]
    if importlib.util.find_spec("torch"):
        impls.append("torch")
        if importlib.util.find_spec("transformers") and importlib.util.find_spec("peft"):
            impls.append("hf")
    return impls


def contender_jobs(benchmark: str, config: str, impls, ranks, extra=()) -> list[list[str]]:
    """One job per implementation x (LoRA at each rank, then full fine-tuning)."""
    jobs = []
    for impl in impls:
        for rank in ranks:
            jobs.append([benchmark, "--config", config, "--impl", impl, "--method", "lora", "--rank", str(rank), *extra])
        jobs.append([benchmark, "--config", config, "--impl", impl, "--method", "full", *extra])
    return jobs


def suite_jobs(suite: str, impls, ranks=RANKS, device: str = "cpu") -> list[list[str]]:
    """The jobs of a suite, as argument lists for `python -m benchmarks.<first item> <rest>`.

    `ranks` are the LoRA ranks of the memory jobs (speed and the curve always use r = 8). A GPU step
    takes milliseconds, so there the speed jobs warm up longer and take the median of more steps.
    """
    timing = ["--warmup", "3", "--steps", "20"] if device == "cuda" else ["--warmup", "1", "--steps", "3"]
    if suite == "smoke":
        steps = ["--steps", "2"]
        return [
            *contender_jobs("memory", "tiny", impls, (4,), steps),
            *contender_jobs("speed", "tiny", impls[:1], (4,), ["--warmup", "1", "--steps", "2", "--profile", "1"]),
            *contender_jobs("speed", "tiny", impls[1:], (4,), ["--warmup", "1", "--steps", "2"]),
            ["inference", "--config", "tiny", "--rank", "4", "--lengths", "8", "--rounds", "3", "--new-tokens", "4",
             "--prompt", "4", "--gen-repeats", "1"],
            ["adapter_size", "--config", "tiny", "--ranks", "1,4"],
            ["ceiling", "--config", "tiny", "--repeats", "2"],
        ]
    if suite == "teaching":
        jobs = []
        for config in ("tiny", "mini"):
            jobs += contender_jobs("memory", config, impls, ranks)
            jobs += contender_jobs("speed", config, impls, (8,), timing)
            jobs.append(["speed", "--config", config, "--impl", "tinylora", "--method", "lora", "--rank", "8",
                         "--steps", "0", "--warmup", "1", "--profile", "2", "--out-name", "profile"])
            jobs.append(["inference", "--config", config])
            jobs.append(["adapter_size", "--config", config])
        jobs.append(["ceiling", "--config", "mini", *(["--torch"] if "torch" in impls else [])])
        return jobs
    if suite == "gpt2":
        return [
            ["ceiling", "--config", "gpt2", *(["--torch"] if "torch" in impls else [])],
            *contender_jobs("memory", "gpt2", impls, ranks),
            *contender_jobs("speed", "gpt2", impls, (8,), timing),
            ["speed", "--config", "gpt2", "--impl", "tinylora", "--method", "lora", "--rank", "8", "--steps", "0",
             "--warmup", "1", "--profile", "1", "--out-name", "profile"],
            ["inference", "--config", "gpt2", "--rounds", "9"],
            ["adapter_size", "--config", "gpt2"],
        ]
    if suite == "curve":
        jobs = []
        for config in ("tiny", "mini", "gpt2", "gpt2-medium"):
            jobs += contender_jobs("memory", config, impls, (8,), ["--steps", "2"])
        return jobs
    if suite == "all":
        return (suite_jobs("teaching", impls, ranks, device) + suite_jobs("gpt2", impls, ranks, device)
                + suite_jobs("curve", impls))
    raise ValueError(f"unknown suite '{suite}'")


def _flags(items: list[str]) -> dict:
    """{'--config': 'gpt2', '--torch': True, ...} from an argument list."""
    flags, i = {}, 0
    while i < len(items):
        if i + 1 < len(items) and not items[i + 1].startswith("--"):
            flags[items[i]], i = items[i + 1], i + 2
        else:
            flags[items[i]], i = True, i + 1
    return flags


def job_name(job: list[str], device: str, repeat: int) -> str:
    """A file name from the job's flags, e.g. memory__gpt2__tinylora-lora-r8__cpu__rep0."""
    flags = _flags(job[1:])
    parts = [flags.pop("--out-name", job[0]), flags.get("--config", "tiny")]
    if "--impl" in flags:
        parts.append(common.contender_label(flags["--impl"], flags["--method"], flags.get("--rank")))
    elif "--rank" in flags:
        parts.append(f"r{flags['--rank']}")
    return "__".join([*parts, device, f"rep{repeat}"])


def _display_path(path: Path) -> str:
    """`path` relative to the repository when inside it (the recorded command then works from any checkout)."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def child_command(job: list[str], args, out: Path) -> list[str]:
    flags = list(job[1:])
    if "--out-name" in flags:  # only names the result file
        i = flags.index("--out-name")
        del flags[i : i + 2]
    return [sys.executable, "-m", f"benchmarks.{job[0]}", *flags, "--device", args.device,
            "--threads", str(args.threads), "--out", _display_path(out)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="teaching", choices=("smoke", "teaching", "gpt2", "curve", "all"))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per job (the report takes medians)")
    parser.add_argument("--impls", default=None, help="comma-separated subset of tinylora,torch,hf")
    parser.add_argument("--ranks", default=",".join(map(str, RANKS)), help="LoRA ranks of the memory jobs")
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per job before it is stopped")
    parser.add_argument("--allocator", default="default", choices=("default", "keep"),
                        help="'keep': glibc keeps freed memory for reuse, for every contender alike (common.py)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--no-report", action="store_true", help="skip RESULTS.md and the plots")
    args = parser.parse_args(argv)

    impls = installed_impls()
    if args.impls:
        wanted = args.impls.split(",")
        unknown = set(wanted) - set(common.IMPLS)
        if unknown:
            parser.error(f"--impls: unknown implementation(s) {sorted(unknown)}; choose from {common.IMPLS}")
        impls = [i for i in impls if i in wanted]
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({name: str(args.threads) for name in common.THREAD_VARIABLES})
    env["PYTHONUNBUFFERED"] = "1"
    if args.allocator == "keep":
        env.update(common.KEEP_FREED_MEMORY)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))

    jobs = suite_jobs(args.suite, impls, tuple(int(r) for r in args.ranks.split(",")), args.device)
    failures = []
    started = time.perf_counter()
    for n, job in enumerate(jobs, 1):
        repeats = args.repeats if job[0] in ("memory", "speed") else 1
        for repeat in range(repeats):
            out = results / f"{job_name(job, args.device, repeat)}.json"
            cmd = child_command(job, args, out)
            print(f"[{n}/{len(jobs)}] {common.command_line(cmd[2], cmd[3:])}", flush=True)
            if args.dry_run:
                continue
            try:
                done = subprocess.run(cmd, env=env, cwd=REPO_ROOT, timeout=args.timeout)
                if done.returncode != 0:
                    failures.append((cmd, f"exit code {done.returncode}"))
            except subprocess.TimeoutExpired:
                failures.append((cmd, f"timed out after {args.timeout} s"))
    if args.dry_run:
        return 0
    summary = {"suite": args.suite, "device": args.device, "threads": args.threads, "repeats": args.repeats,
               "impls": impls, "seconds": time.perf_counter() - started,
               "command": common.command_line(MODULE, argv), "failures": [[" ".join(c), why] for c, why in failures]}
    (results / f"suite__{args.suite}__{args.device}.json").write_text(json.dumps(summary, indent=2) + "\n")
    if not args.no_report:
        from . import report

        report.main(["--results-dir", str(results)])
    for cmd, why in failures:
        print(f"FAILED ({why}): {' '.join(cmd)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
