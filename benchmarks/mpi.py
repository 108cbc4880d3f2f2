"""Data-parallel training over MPI: bytes all-reduced per step and step time, full FT vs LoRA, 1 and 2 ranks.

    python -m benchmarks.mpi                   # mini shape (base-mini's: 4 layers, width 128), global batch 16 x 128
    python -m benchmarks.mpi --config gpt2     # GPT-2 small, global batch 4 x 256 (slow on 2 cores)

Each row is `mpiexec -n N python -m benchmarks.mpi --worker ...`: the training loop of tinylora.train
(tinylora/train/distributed.py) on a random-token dataset, --steps steps. Reported per row: the gradient
bytes one rank all-reduces per step (from the DataParallel counter, exact), the trainable parameter count,
and the median step time. The check the issue asks for: bytes(LoRA) / bytes(full) == trainable(LoRA) /
trainable(full), since only trainable gradients travel (4 bytes each in float32).
With 2 ranks on a 2-core machine each rank gets one core (OPENBLAS_NUM_THREADS=1 per rank).
Writes benchmarks/results/mpi.json and mpi.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common

MODULE = "benchmarks.mpi"
REPO_ROOT = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    """One rank: train, then rank 0 writes {bytes per step, trainable, step times} to args.worker_out."""
    import numpy as np

    import tinylora
    from tinylora.data import TextDataset
    from tinylora.lora import apply_lora
    from tinylora.train import distributed
    from tinylora.train.loop import TrainConfig, train

    from .shapes import get_shape

    shape = get_shape(args.config, args.batch, args.seq)
    tinylora.manual_seed(0)
    model = tinylora.GPT(tinylora.GPTConfig(vocab_size=shape.vocab_size, block_size=shape.seq, n_layer=shape.n_layer,
                                            n_head=shape.n_head, n_embd=shape.n_embd, dropout=0.0))
    if args.method == "lora":
        apply_lora(model, r=8, alpha=8, targets=("q", "v"))
    data = TextDataset(np.random.default_rng(0).integers(0, shape.vocab_size, size=200_000), block_size=shape.seq)
    config = TrainConfig(max_steps=args.steps, batch_size=shape.batch, lr=1e-4, eval_every=10**9, progress=False)
    result = train(model, data, None, config)
    dp = distributed.current()
    if dp.is_writer:
        Path(args.worker_out).write_text(json.dumps({
            "ranks": dp.size, "bytes_per_step": dp.bytes_reduced / args.steps, "trainable": result.trainable,
            "step_seconds": result.step_times}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mini")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: 16 for mini, the shape's otherwise)")
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--results-dir", default=str(common.RESULTS_DIR))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch is None and args.config == "mini":
        args.batch = 16
    if args.worker:
        worker(args)
        return 0

    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("benchmarks.mpi: no mpiexec on PATH: pip install 'tinylora[mpi]'")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in (int(r) for r in args.ranks.split(",")):
            for method in ("full", "lora"):
                out = Path(tmp) / f"{method}_{ranks}.json"
                cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", MODULE, "--worker", "--method", method,
                       "--config", args.config, "--steps", str(args.steps), "--worker-out", str(out)]
                cmd += ["--batch", str(args.batch)] if args.batch else []
                cmd += ["--seq", str(args.seq)] if args.seq else []
                load = round(os.getloadavg()[0], 2)
                subprocess.run(cmd, env=env, cwd=REPO_ROOT, check=True)
                row = json.loads(out.read_text())
                row.update(method=method, load_average_1min_at_start=load,
                           median_step_seconds=common.median(row["step_seconds"][1:] or row["step_seconds"]))
                rows.append(row)
                print(f"{method} x{ranks}: {row['bytes_per_step'] / 2**20:.3f} MiB all-reduced per step, "
                      f"median step {row['median_step_seconds']:.3f} s (load {load})", flush=True)
    checks = []
    for ranks in sorted({r["ranks"] for r in rows if r["ranks"] > 1}):
        full = next(r for r in rows if r["ranks"] == ranks and r["method"] == "full")
        lora = next(r for r in rows if r["ranks"] == ranks and r["method"] == "lora")
        checks.append({"ranks": ranks, "bytes_ratio": lora["bytes_per_step"] / full["bytes_per_step"],
                       "trainable_ratio": lora["trainable"] / full["trainable"]})
    record = {"benchmark": "mpi", "config": args.config, "global_batch": args.batch, "steps": args.steps,
              "command": common.command_line(MODULE, argv), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": common.machine_info(), "versions": common.library_versions(), "rows": rows, "ratios": checks}
    results = Path(args.results_dir)
    common.write_result(record, str(results / "mpi.json"), "")
    lines = [f"`{record['command']}` ({record['timestamp']}; 1 BLAS thread per rank)", "",
             "| method | ranks | trainable params | bytes all-reduced per step | median step (s) | load at start |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['ranks']} | {r['trainable']:,} | {r['bytes_per_step']:,.0f} | "
                     f"{r['median_step_seconds']:.3f} | {r['load_average_1min_at_start']} |")
    for c in checks:
        lines.append(f"\n{c['ranks']} ranks: bytes LoRA / full = {c['bytes_ratio']:.6f}, "
                     f"trainable LoRA / full = {c['trainable_ratio']:.6f}")
    (results / "mpi.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
