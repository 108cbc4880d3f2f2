"""Training-step time of one contender: warm up, then the median of several steps, in this (fresh) process.

    python -m benchmarks.speed --config gpt2 --impl tinylora --method lora --rank 8 --threads 2 [--profile]

A step is forward, loss, backward, AdamW step and zero_grad, timed from start to a synchronised end
(tinylora.engine.backend.synchronize / torch.cuda.synchronize on a GPU). Reported: median step time, tokens/s
(B*T / median) and achieved GFLOP/s (the matmul FLOPs of benchmarks/flops.py / median); the report
divides the latter by the machine's matmul ceiling (benchmarks/ceiling.py, same thread count).

With --profile (tinylora only), further steps run under benchmarks.op_profile.OpProfiler and the result
holds the time per op class and per category (matmul, elementwise, softmax & cross-entropy, optimizer, ...).
Profiled steps are never part of the median. On CUDA the result also holds the allocator's peak during the
steps above the memory held before them (the model, optimizer and batch), so one GPU process gives both.
"""

from __future__ import annotations

import argparse
import time

from . import common

MODULE = "benchmarks.speed"


def time_steps(contender, idx, targets, warmup: int, steps: int) -> list[float]:
    """Seconds of each of `steps` training steps, after `warmup` untimed ones."""
    for _ in range(warmup):
        contender.train_step(idx, targets)
    contender.synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        contender.train_step(idx, targets)
        contender.synchronize()
        times.append(time.perf_counter() - start)
    return times


def profile_steps(contender, idx, targets, steps: int) -> dict:
    """Per-op breakdown (seconds per step) of `steps` tinylora training steps."""
    from .op_profile import OpProfiler

    with OpProfiler(contender.device) as prof:
        prof.time_optimizer(contender.optimizer)
        start = time.perf_counter()
        for _ in range(steps):
            contender.train_step(idx, targets)
        contender.synchronize()
        elapsed = (time.perf_counter() - start) / steps
    breakdown = prof.breakdown(steps)
    breakdown["step"] = elapsed
    breakdown["outside_ops"] = elapsed - breakdown["total"]  # node building, the backward walk, Python glue
    return breakdown


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--steps", type=int, default=5,
                        help="timed steps; the median is reported (default 5; 0 with --profile: profile only)")
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="after timing, profile K more steps per op class (tinylora only)")
    args = common.parse_args(parser, argv)
    if args.profile and args.impl != "tinylora":
        parser.error("--profile instruments tinylora's ops; it does not apply to the peers")
    if args.steps < 0 or (args.steps == 0 and not args.profile):
        parser.error("--steps must be at least 1 (or 0 with --profile K: a profile-only run)")

    from .contenders import build
    from .flops import step_flops
    from .shapes import get_shape, make_batch

    shape = get_shape(args.config, args.batch, args.seq)
    contender = build(args.impl, shape, args.method, args.rank, args.device, args.seed, args.threads)
    idx, targets = contender.batch(*make_batch(shape, args.seed))
    at_reset = contender.device_memory_reset() if args.device == "cuda" else None  # the model, optimizer, batch
    times = time_steps(contender, idx, targets, args.warmup, args.steps)
    median = common.median(times) if times else None  # None: a profile-only run
    flops = step_flops(shape, args.method, args.rank)
    result = {
        "step_seconds": times,
        "median_step_seconds": median,
        "tokens_per_second": shape.tokens / median if median else None,
        "step_flops": flops,
        "gflops_per_second": flops / median / 1e9 if median else None,
        "warmup": args.warmup,
        "params": contender.param_counts(),
        # CUDA: the allocator's peak during the steps above what existed before them (as benchmarks.memory)
        "cuda_peak_above_model_bytes": contender.device_memory_peak() - at_reset if at_reset is not None else None,
        "profile": profile_steps(contender, idx, targets, args.profile) if args.profile else None,
    }
    label = common.contender_label(args.impl, args.method, args.rank)
    record = common.make_record(
        "speed", args, MODULE, result,
        contender={"impl": args.impl, "method": args.method, "rank": args.rank if args.method == "lora" else None,
                   "label": label},
        shape=shape.as_dict(),
    )
    path = common.write_result(record, args.out, f"speed__{shape.name}__{label}__{args.device}")
    if median:
        print(f"{label} {shape.name} B={shape.batch} T={shape.seq}: median step {median:.3f} s, "
              f"{result['tokens_per_second']:.0f} tokens/s, {result['gflops_per_second']:.1f} GFLOP/s -> {path}")
    if result["profile"]:
        prof = result["profile"]
        top = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in prof["categories"].items())
        print(f"profiled step {prof['step']:.3f} s: {top}, outside ops {prof['outside_ops']:.3f} s -> {path}")
    return record


if __name__ == "__main__":
    main()
