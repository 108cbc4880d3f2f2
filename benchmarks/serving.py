"""Serving many adapters on one base: tokens/s of three ways to answer a stream of requests.

R requests arrive in round-robin order over N adapters (request j wants adapter j mod N), each a
prompt of P random tokens to continue by G tokens (greedy, KV cache). Strategies:

    mixed         one batch of all R requests, each row with its own adapter (tinylora/lora/mixed.py,
                  gather strategy): the base matmuls run once over R rows
    mixed-group   the same batch, LoRA branch grouped per adapter (PEFT's way)
    per-adapter   one batch per adapter: set_adapter, then generate its R/N requests together
    merge-batch   one batch per adapter with that adapter merged into W0 (merge, generate, unmerge)
    merge-swap    one request at a time, in arrival order, with its adapter merged into W0
                  (merge when the adapter changes, unmerge before the next): no LoRA cost per token,
                  but batch 1 and a merge per switch (what the paper's §4.2 deployment implies)
    base          all R requests through the base model alone (no LoRA): the ceiling

    python -m benchmarks.serving --config mini --adapters 1,4,16,64 --threads 2
    python -m benchmarks.serving --config gpt2 --adapters 1,4,16,64 --requests 64 --prompt 8 --new 4 --threads 2

The weights are random (the shape is what costs time, not what the weights say); B is random too,
so every adapter's ΔW is nonzero. Each (strategy, N) is timed --repeats times (the median kept),
after one warm-up generation. One process runs every strategy, one after another, so they share the
machine's load at that moment (recorded as load_average_1min).
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import add_common_args, make_record, parse_args, write_result

STRATEGIES = ("mixed", "mixed-group", "per-adapter", "merge-batch", "merge-swap", "base")


def build(shape, n_adapters: int, rank: int, seed: int):
    import numpy as np

    from tinylora import manual_seed
    from tinylora.lora import add_adapter, set_adapter
    from tinylora.lora.apply import lora_layers
    from tinylora.model.gpt import GPT, GPTConfig

    manual_seed(seed)
    config = GPTConfig(vocab_size=shape.vocab_size, block_size=shape.block_size, n_layer=shape.n_layer,
                       n_head=shape.n_head, n_embd=shape.n_embd, dropout=0.0)
    model = GPT(config)
    rng = np.random.default_rng(seed)
    for i in range(n_adapters):
        add_adapter(model, f"task{i}", r=rank, targets=("q", "v"))
        set_adapter(model, f"task{i}")
        for _, layer in lora_layers(model):
            layer.lora_B.data[...] = rng.normal(0, 0.02, layer.lora_B.shape)
    model.eval()
    return model


def serve(model, strategy: str, prompts, names, new_tokens: int):
    """Answer every request (prompts (R, P), names[j] its adapter) with `strategy`; returns nothing."""
    from tinylora.lora import merge_lora, mixed_adapters, set_adapter, unmerge_lora
    from tinylora.lora.adapters import adapters_disabled
    from tinylora.model.generate import generate

    if strategy == "mixed":
        generate(model, prompts, new_tokens, greedy=True, adapter_ids=names)
    elif strategy == "mixed-group":
        with mixed_adapters(model, names, strategy="group"):
            generate(model, prompts, new_tokens, greedy=True)
    elif strategy == "per-adapter":
        for name in dict.fromkeys(names):
            rows = [j for j, n in enumerate(names) if n == name]
            set_adapter(model, name)
            generate(model, prompts[rows], new_tokens, greedy=True)
    elif strategy == "merge-batch":
        for name in dict.fromkeys(names):
            rows = [j for j, n in enumerate(names) if n == name]
            set_adapter(model, name)
            merge_lora(model)
            generate(model, prompts[rows], new_tokens, greedy=True)
            unmerge_lora(model)
    elif strategy == "merge-swap":
        current = None
        for j, name in enumerate(names):
            if name != current:
                unmerge_lora(model)
                set_adapter(model, name)
                merge_lora(model)
                current = name
            generate(model, prompts[j:j + 1], new_tokens, greedy=True)
        unmerge_lora(model)
    else:
        with adapters_disabled(model):
            generate(model, prompts, new_tokens, greedy=True)


def measure(model, strategy, prompts, names, new_tokens, repeats: int) -> float:
    """Median seconds to answer all requests, after one warm-up."""
    import numpy as np

    serve(model, strategy, prompts[: min(len(names), 2)], names[:2], 1)  # warm-up (allocations, BLAS threads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        serve(model, strategy, prompts, names, new_tokens)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, contender=False)
    parser.add_argument("--adapters", default="1,4,16,64", help="numbers of adapters N (comma list)")
    parser.add_argument("--requests", type=int, default=64, help="requests R (default 64)")
    parser.add_argument("--prompt", type=int, default=16, help="prompt tokens P (default 16)")
    parser.add_argument("--new", type=int, default=8, help="generated tokens G per request (default 8)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parse_args(parser, argv)

    import numpy as np

    from benchmarks.shapes import get_shape
    from tinylora.engine.backend import tune_for_training

    tune_for_training()  # the allocator and thread settings train() runs with (tinylora/engine/backend/tuning.py)

    shape = get_shape(args.config)
    counts = [int(n) for n in args.adapters.split(",")]
    strategies = args.strategies.split(",")
    prompts = np.random.default_rng(args.seed).integers(0, shape.vocab_size, (args.requests, args.prompt))
    rows = []
    for n in counts:
        model = build(shape, n, args.rank, args.seed)
        names = [f"task{j % n}" for j in range(args.requests)]
        for strategy in strategies:
            seconds = measure(model, strategy, prompts, names, args.new, args.repeats)
            rows.append({"adapters": n, "strategy": strategy, "seconds": seconds,
                         "tokens_per_s": args.requests * args.new / seconds})
            print(f"N={n:3d} {strategy:12s} {seconds:8.3f} s  {rows[-1]['tokens_per_s']:9.1f} generated tokens/s",
                  flush=True)
    result = {"requests": args.requests, "prompt_tokens": args.prompt, "new_tokens": args.new, "rank": args.rank,
              "targets": ["q", "v"], "rows": rows, "fastest": fastest(rows)}
    record = make_record("serving", args, "benchmarks.serving", result, shape=shape.as_dict())
    path = write_result(record, args.out, f"serving__{args.config}__{args.device}")
    path.with_suffix(".md").write_text(markdown(record))
    plot(record, path.with_suffix(".png"))
    print(f"wrote {path} and its .md table (and .png plot if matplotlib is installed)")
    return record


def markdown(record: dict) -> str:
    """A table of generated tokens/s: one row per N, one column per strategy; the fastest LoRA strategy marked."""
    result, shape = record["result"], record["shape"]
    strategies = list(dict.fromkeys(row["strategy"] for row in result["rows"]))
    by = {(row["adapters"], row["strategy"]): row["tokens_per_s"] for row in result["rows"]}
    lines = [f"Serving on the {shape['name']} shape: {result['requests']} requests x ({result['prompt_tokens']} prompt + "
             f"{result['new_tokens']} generated tokens), LoRA r = {result['rank']} on q, v; generated tokens/s "
             f"(higher is better; **bold**: the fastest LoRA strategy). Load average "
             f"{record['machine']['load_average_1min']} at the end, {record['threads']} thread(s).", "",
             "`" + record["command"] + "`", "",
             "| N adapters | " + " | ".join(strategies) + " |", "|---:|" + "---:|" * len(strategies)]
    for n in dict.fromkeys(row["adapters"] for row in result["rows"]):
        best = result["fastest"][str(n)]["strategy"]
        cells = [f"**{by[n, s]:.1f}**" if s == best else f"{by[n, s]:.1f}" for s in strategies]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(record: dict, path) -> bool:
    """Generated tokens/s against N, one line per strategy (False if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = record["result"]["rows"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for strategy in dict.fromkeys(row["strategy"] for row in rows):
        mine = [row for row in rows if row["strategy"] == strategy]
        ax.plot([row["adapters"] for row in mine], [row["tokens_per_s"] for row in mine], "o-", label=strategy)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("adapters N (requests round-robin over them)")
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"serving on the {record['shape']['name']} shape, {record['result']['requests']} requests")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def fastest(rows) -> dict:
    """For each N, the LoRA strategy (not the base ceiling) with the most tokens/s."""
    best = {}
    for row in rows:
        if row["strategy"] == "base":
            continue
        n = str(row["adapters"])
        if n not in best or row["tokens_per_s"] > best[n]["tokens_per_s"]:
            best[n] = {"strategy": row["strategy"], "tokens_per_s": row["tokens_per_s"]}
    return best


if __name__ == "__main__":
    main()
