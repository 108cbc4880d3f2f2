"""Peak memory of training steps for one contender, in this (fresh) process.

    python -m benchmarks.memory --config gpt2 --impl tinylora --method lora --rank 8 --threads 2

Headline, on the CPU: the peak resident memory above the loaded model. Once the model, the optimizer and
the batch exist, the kernel's high-water mark is reset (benchmarks/procmem.py); after the steps

    headline = VmHWM after the steps - VmRSS at the reset

On CUDA the same idea uses the allocator's counters: tinylora.engine.backend.memory.cuda_peak_bytes() after
cuda_reset_peak() for tinylora, torch.cuda.max_memory_allocated() after reset_peak_memory_stats() for the
PyTorch peers, minus the bytes allocated at the reset.

Beside the headline: tinylora's own tagged accounting at its peak (parameters, optimizer, gradients,
saved, other) and the analytic minimum of benchmarks/analytic.py, with the ratio headline / minimum.
Run one contender per process: memory a library once touched stays in the process.
"""

from __future__ import annotations

import argparse
import gc
import os

from . import common

MODULE = "benchmarks.memory"
# tinylora's tuning for training keeps freed memory (tinylora/engine/backend/allocator.py); then memory freed while the
# model is built stays resident and inflates the baseline, understating "peak above the model". The peak
# itself is the same either way, so memory is measured with glibc's own defaults, as for the peers.
os.environ.setdefault("TINYLORA_ALLOCATOR", "system")


def measure(contender, idx, targets, steps: int, device: str) -> dict:
    """Run `steps` training steps and return the peak above the memory in use before them (bytes)."""
    from . import procmem

    gc.collect()
    if device == "cuda":
        baseline = contender.device_memory_reset()
    else:
        baseline = procmem.reset_peak()
    if hasattr(contender, "reset_tagged_peak"):
        contender.reset_tagged_peak()
    losses = [contender.train_step(idx, targets) for _ in range(steps)]
    contender.synchronize()
    peak = contender.device_memory_peak() if device == "cuda" else procmem.peak_bytes()
    return {"baseline_bytes": baseline, "peak_bytes": peak, "peak_above_model_bytes": peak - baseline, "losses": losses}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--steps", type=int, default=3, help="training steps measured (default 3)")
    args = common.parse_args(parser, argv)

    from . import analytic, procmem
    from .contenders import build
    from .shapes import get_shape, make_batch

    if args.device == "cpu" and not procmem.available():
        raise SystemExit("memory: /proc/self/clear_refs is not writable here, so the CPU peak cannot be reset")
    shape = get_shape(args.config, args.batch, args.seq)
    rss_start = procmem.rss_bytes() if args.device == "cpu" else None
    contender = build(args.impl, shape, args.method, args.rank, args.device, args.seed, args.threads)
    idx, targets = contender.batch(*make_batch(shape, args.seed))
    rss_model = procmem.rss_bytes() if args.device == "cpu" else None
    measured = measure(contender, idx, targets, args.steps, args.device)

    model = analytic.memory_model(shape, args.method, args.rank)
    result = dict(measured)
    result.update(
        rss_at_start_bytes=rss_start,
        rss_after_build_bytes=rss_model,
        steps=args.steps,
        params=contender.param_counts(),
        tagged=contender.tagged_memory(),
        analytic=model,
        ratio_to_analytic=measured["peak_above_model_bytes"] / model["peak_above_weights"],
    )
    label = common.contender_label(args.impl, args.method, args.rank)
    record = common.make_record(
        "memory", args, MODULE, result,
        contender={"impl": args.impl, "method": args.method, "rank": args.rank if args.method == "lora" else None,
                   "label": label},
        shape=shape.as_dict(),
    )
    path = common.write_result(record, args.out, f"memory__{shape.name}__{label}__{args.device}")
    gib = common.GIB
    print(f"{label} {shape.name} B={shape.batch} T={shape.seq}: peak above model "
          f"{result['peak_above_model_bytes'] / gib:.3f} GiB (analytic minimum {model['peak_above_weights'] / gib:.3f} GiB, "
          f"ratio {result['ratio_to_analytic']:.2f}) -> {path}")
    return record


if __name__ == "__main__":
    main()
