"""Inference with tinylora: forward latency of the base, merged-LoRA and unmerged-LoRA models, and generation.

    python -m benchmarks.inference --config gpt2 --rank 8 --lengths 16,64 --threads 2

Latency: batch 1, eval mode, no_grad, short sequences. The paper's claim (Section 4.2): once merged,
W = W0 + (alpha/r) B A is an ordinary weight, so LoRA adds no inference latency; unmerged, every adapted
projection pays two extra thin products, x A^T and (x A^T) B^T. Three models with the same base weights
are timed in interleaved rounds (base, merged, unmerged, then rotated), so a slow moment of a busy
machine hits all three alike; the medians and the ratios to the base are reported.

Generation: tokens per second of tinylora.model.generate.generate (greedy, batch 1) with the KV cache and
without it, on the base model.
"""

from __future__ import annotations

import argparse
import time

from . import common

MODULE = "benchmarks.inference"


def build_variants(shape, rank: int, device: str, seed: int) -> dict:
    """{'base', 'merged', 'unmerged'}: three models with identical base weights; the LoRA ones with B != 0."""
    import tinylora
    from tinylora.lora import apply_lora, lora_layers, merge_lora
    from tinylora.nn import init

    from .tinylora_contender import build_model

    models = {}
    for name in ("base", "merged", "unmerged"):
        model = build_model(shape, device, seed)
        if name != "base":
            apply_lora(model, r=rank, alpha=rank, targets=("q", "v"))
            tinylora.manual_seed(seed + 1)  # the same nonzero B in both LoRA models
            for _, layer in lora_layers(model):
                init.normal_(layer.lora_B, 0.0, 0.02)
            if name == "merged":
                merge_lora(model)
        models[name] = model.eval()
    return models


def forward_latency(models: dict, idx, rounds: int, device) -> dict:
    """Median seconds of one eval forward per model, measured in interleaved, rotating rounds."""
    from tinylora import no_grad
    from tinylora.engine.backend import synchronize

    names = list(models)
    times = {name: [] for name in names}
    with no_grad():
        for name in names:  # warm-up
            models[name](idx)
        for i in range(rounds):
            for name in names[i % len(names):] + names[: i % len(names)]:
                synchronize(device)
                start = time.perf_counter()
                models[name](idx)
                synchronize(device)
                times[name].append(time.perf_counter() - start)
    return {name: common.median(t) for name, t in times.items()}


def generation_speed(model, prompt, new_tokens: int, use_cache: bool, repeats: int, device) -> dict:
    """Median tokens/s of greedy generation of `new_tokens` tokens after `prompt` (1, P)."""
    from tinylora.engine.backend import synchronize
    from tinylora.model.generate import generate

    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        generate(model, prompt, new_tokens, greedy=True, use_cache=use_cache)
        synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = common.median(times)
    return {"seconds": seconds, "tokens_per_second": new_tokens / seconds, "new_tokens": new_tokens,
            "prompt_tokens": int(prompt.shape[1])}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, contender=False)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lengths", default="16,64", help="comma-separated sequence lengths (batch 1)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds per length")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per generation run")
    parser.add_argument("--prompt", type=int, default=16, help="prompt length for generation")
    parser.add_argument("--gen-repeats", type=int, default=3)
    args = common.parse_args(parser, argv)
    args.impl = "tinylora"

    import numpy as np

    import tinylora
    from tinylora.engine.backend import get_device

    from .flops import inference_flops
    from .shapes import get_shape

    shape = get_shape(args.config, args.batch, args.seq)
    lengths = [int(n) for n in args.lengths.split(",")]
    if max(lengths) > shape.block_size or args.prompt + args.new_tokens > shape.block_size:
        parser.error(f"lengths and prompt + new tokens must fit block_size={shape.block_size}")
    device = get_device(args.device)
    models = build_variants(shape, args.rank, args.device, args.seed)
    rng = np.random.default_rng(args.seed)

    latency = {}
    for T in lengths:
        idx = tinylora.tensor(rng.integers(0, shape.vocab_size, size=(1, T)), device=device)
        seconds = forward_latency(models, idx, args.rounds, device)
        one = get_shape(args.config, batch=1, seq=T)
        latency[str(T)] = {
            "seconds": seconds,
            "merged_over_base": seconds["merged"] / seconds["base"],
            "unmerged_over_base": seconds["unmerged"] / seconds["base"],
            "base_gflops_per_second": inference_flops(one) / seconds["base"] / 1e9,
        }
    prompt = tinylora.tensor(rng.integers(0, shape.vocab_size, size=(1, args.prompt)), device=device)
    generation = {
        "with_cache": generation_speed(models["base"], prompt, args.new_tokens, True, args.gen_repeats, device),
        "without_cache": generation_speed(models["base"], prompt, args.new_tokens, False, args.gen_repeats, device),
    }
    result = {"rank": args.rank, "rounds": args.rounds, "latency": latency, "generation": generation}
    record = common.make_record("inference", args, MODULE, result, shape=shape.as_dict(),
                                contender={"impl": "tinylora", "method": "lora", "rank": args.rank,
                                           "label": f"tinylora-lora-r{args.rank}"})
    path = common.write_result(record, args.out, f"inference__{shape.name}__r{args.rank}__{args.device}")
    for T, row in latency.items():
        s = row["seconds"]
        print(f"T={T}: base {s['base'] * 1e3:.2f} ms, merged {s['merged'] * 1e3:.2f} ms "
              f"({row['merged_over_base']:.3f}x), unmerged {s['unmerged'] * 1e3:.2f} ms ({row['unmerged_over_base']:.3f}x)")
    print(f"generation: {generation['with_cache']['tokens_per_second']:.1f} tokens/s with the KV cache, "
          f"{generation['without_cache']['tokens_per_second']:.1f} without -> {path}")
    return record


if __name__ == "__main__":
    main()
