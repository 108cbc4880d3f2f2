"""The LoRA paper's Table 3 in miniature: every method on the shipped base and the E2E-style task, one command.

    python -m benchmarks.table3_e2e --seeds 0,1,2      (writes JSON, MD and PNG; the MD gives the time it took)
    python -m benchmarks.table3_e2e --base base-mini-384 --max-bytes 384    (E2E rows of every length up to 384 bytes)

Every method fine-tunes the shipped byte-level base ("base-mini": L = 4 blocks, d = 128, 859k parameters)
on the same generated E2E-style data-to-text pairs (tinylora.data.make_e2e), with the same steps, batch,
schedule and seed, one thread. The baselines get settings whose |Θ| is close to LoRA's where the
method allows it (LoRA r = 4 on W_q, W_v: 2 · 8 · 128 · 4 = 8,192):

    method          setting                 |Θ| by the paper's formula
    full (FT)       every weight            859,008
    top2 (FT^Top2)  the last two blocks     2 · (12 d² + 13 d) = 396,544
    bitfit          every bias              L · 11 d + d = 5,760 (fixed by the model)
    prefix-embed    l_p = 16, l_i = 8       d · 24 = 3,072 (more tokens would eat the 256-byte context)
    prefix-layer    l_p = 8, l_i = 8        L · d · 16 = 8,192
    adapter-h       r = 4                   2L · (2 d r + r + d) = 9,248
    adapter-l       r = 6                   L · (2 d r + r + d) + 2 L d = 7,704
    lora            r = 4 on W_q, W_v       8,192
    lora-all        r = 8 on every Linear   Σ r(d + k) = 73,728 (the demo's LoRA, lr 1e-2; asked for by name)

Learning rates: LoRA's 3e-2 and FT's 1e-3 are the package's defaults (tinylora.train.LORA_LR, FULL_LR); the
others are LoRA's 3e-2 times the ratio of their learning rate to LoRA's in the paper's GPT-3 runs
(Table 12: FT 5e-6, PreEmbed 5e-4, PreLayer 1e-4, BitFit 1.6e-3, Adapter^H 1e-4, LoRA 2e-4), capped at
0.1; not tuned further. Measured per method: trainable parameters, peak training memory (tinylora's
accounting of live tensor bytes), median step time (CPU seconds of one thread), validation loss,
batch-1 latency (CPU ms of one forward over a typical prompt, prefixes included), the size of the file
the method must store, and BLEU / ROUGE-L of greedy completions of held-out meaning representations
against their 3 references, as the E2E challenge scores them (tinylora.train.generation_metrics: BLEU
lowercased, ROUGE-L F(β=1.2) of the best precision and best recall).

Two rows learn nothing and set the floor (tinylora.data.e2e_baselines): the constant sentence
"<name> is a restaurant." and a one-line slot template. Every trained method runs once per seed (the
seed sets the initialisation and the batch order; data and test MRs stay fixed); the table gives the
mean ± standard deviation over seeds, and says for each method whether its BLEU differs from LoRA's by
more than the two spreads added (|mean difference| > sd + sd), i.e. whether the order is real at this
many seeds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from . import common

MODULE = "benchmarks.table3_e2e"
MAX_BYTES = 160  # base-mini's default: short examples, faster steps, room for 24 virtual tokens in 256 bytes

# method -> (settings passed to the CLI's apply_method, learning rate)
METHODS = {
    "full": ({}, 1e-3),
    "top2": ({}, 1e-3),
    "bitfit": ({}, 0.1),  # 3e-2 · 1.6e-3 / 2e-4 = 0.24, capped
    "prefix-embed": ({"prefix_len": 16, "infix_len": 8}, 0.075),  # 3e-2 · 2.5
    "prefix-layer": ({"prefix_len": 8, "infix_len": 8}, 0.015),  # 3e-2 · 0.5
    "adapter-h": ({"adapter_dim": 4}, 0.015),
    "adapter-l": ({"adapter_dim": 6}, 0.015),
    "lora": ({"rank": 4}, 3e-2),
    # not in the paper's table: the demo's LoRA (r = 8 on every Linear, lr 1e-2), 73,728 numbers; run it by name
    "lora-all": ({"rank": 8, "targets": ("q", "k", "v", "o", "fc", "proj")}, 1e-2),
}
DEFAULT_METHODS = [name for name in METHODS if name != "lora-all"]


def e2e_data(n_train: int, n_test: int, max_bytes: int = MAX_BYTES):
    """Training pairs (one reference per MR) and held-out test rows (3 references per MR, MRs not in training),
    each "MR || reference" at most `max_bytes` bytes."""
    from tinylora.data import e2e_pair, make_e2e

    def short(row):
        return len(f"{row['mr']} || {row['ref']}".encode()) <= max_bytes

    train_rows = [r for r in make_e2e(6 * n_train, seed=0) if short(r)][:n_train]
    seen = {r["mr"] for r in train_rows}
    rows = make_e2e(20 * n_test, seed=1, refs_per_mr=3)
    test = []
    for i in range(0, len(rows), 3):
        group = rows[i : i + 3]
        if group[0]["mr"] not in seen and all(short(r) for r in group) and len(test) < 3 * n_test:
            test.extend(group)
    return [e2e_pair(r["mr"], r["ref"]) for r in train_rows], [e2e_pair(r["mr"], r["ref"]) for r in test]


def cpu_ms_of_forward(model, ids, trials: int = 20) -> float:
    """Median CPU milliseconds of one eval forward over `ids` (1, T)."""
    import numpy as np

    import tinylora

    idx = tinylora.tensor(np.asarray([ids]))
    with tinylora.no_grad():
        model.eval()(idx)
        times = []
        for _ in range(trials):
            start = time.process_time()
            model(idx)
            times.append(time.process_time() - start)
    return 1e3 * common.median(times)


def run_method(name: str, train_pairs, test_pairs, args, out_dir: str) -> dict:
    import argparse as ap

    from tinylora import manual_seed
    from tinylora.cli.finetune import apply_method, no_dropout
    from tinylora.data import PairDataset
    from tinylora.engine.backend import memory
    from tinylora.lora import merge_lora, parameter_report, save_adapter
    from tinylora.methods import VirtualTokenData, save_method
    from tinylora.methods.prefix import prompt_ids
    from tinylora.model.load import load_model, save_model
    from tinylora.train.generation_metrics import evaluate_generation
    from tinylora.train.loop import TrainConfig, train

    settings, lr = METHODS[name]
    manual_seed(args.seed)
    model, tokenizer = load_model(args.base)
    no_dropout(model)
    method = "lora" if name.startswith("lora") else name  # lora-all is LoRA with other settings
    flags = {"method": method, "rank": 4, "alpha": None, "targets": ("q", "v"), "layers": None, "lora_dropout": 0.0,
             "prefix_len": 0, "infix_len": 0, "adapter_dim": 1, **settings}
    apply_method(model, ap.Namespace(**flags))
    virtual = model.virtual_tokens
    block = model.config.block_size - (virtual.n_tokens if virtual is not None else 0)
    n_val = len(train_pairs) // 10
    train_set, val_set = PairDataset(train_pairs[n_val:], tokenizer, block), PairDataset(train_pairs[:n_val], tokenizer, block)
    if virtual is not None:
        train_set, val_set = VirtualTokenData(train_set, virtual), VirtualTokenData(val_set, virtual)
    report = parameter_report(model)
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=lr, warmup_steps=args.steps // 10,
                         eval_every=args.steps, eval_batches=4, seed=args.seed, progress=False)
    memory.reset_peak()
    cpu_start = time.process_time()
    result = train(model, train_set, val_set, config, run_dir=os.path.join(out_dir, name))
    train_cpu = time.process_time() - cpu_start
    folder = os.path.join(out_dir, name, "saved")
    if method == "lora":
        save_adapter(model, folder)
    elif name == "full":
        save_model(model, folder, tokenizer)
    else:
        save_method(model, folder)
    stored = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".safetensors"))
    typical = prompt_ids(model, tokenizer.encode(test_pairs[0]["prompt"]))
    if method == "lora":
        merge_lora(model)  # deployed LoRA is merged: W = W0 + (α/r) B A, the base model's cost
    quality = evaluate_generation(model, tokenizer, test_pairs, max_new_tokens=args.max_bytes)
    return {
        "settings": settings, "lr": lr, "trainable": report["trainable"], "total": report["total"],
        "peak_train_mib": result.peak_bytes / 2**20, "step_cpu_s": train_cpu / args.steps,
        "step_wall_s": result.median_step_time, "val_loss_before": result.val_loss_before,
        "val_loss_after": result.val_loss_after, "latency_cpu_ms": cpu_ms_of_forward(model, typical),
        "latency_tokens": len(typical), "file_bytes": stored, "bleu": quality["bleu"], "rouge_l": quality["rouge_l"],
        "prompts": quality["prompts"], "example": quality["examples"][0],
    }


def baseline_rows(test_pairs) -> dict:
    """BLEU / ROUGE-L of the two outputs that learn nothing, on the same held-out MRs."""
    from tinylora.data import constant_sentence, template_sentence
    from tinylora.train.generation_metrics import references_by_prompt, score

    refs = references_by_prompt(test_pairs)
    rows = {}
    for name, write in (("constant", constant_sentence), ("template", template_sentence)):
        hyps = [write(prompt.removesuffix(" ||").strip()) for prompt, _ in refs]
        quality = score(hyps, [r for _, r in refs])
        rows[name] = {"bleu": quality["bleu"], "rouge_l": quality["rouge_l"], "example": hyps[0]}
    return rows


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(per_seed: dict) -> dict:
    """method -> {"<key>": [mean, sd]} for the quality numbers, over that method's seeds."""
    return {name: {key: mean_sd([run[key] for run in runs.values()]) for key in ("val_loss_after", "bleu", "rouge_l")}
            for name, runs in per_seed.items()}


def against_lora(summary: dict, name: str) -> str:
    """Whether `name`'s mean BLEU differs from LoRA's by more than the sum of their standard deviations."""
    if name == "lora" or "lora" not in summary:
        return ""
    (m, s), (ml, sl) = summary[name]["bleu"], summary["lora"]["bleu"]
    if abs(m - ml) <= s + sl:
        return "within spread"
    return "above LoRA" if m > ml else "below LoRA"


def table(per_seed: dict, baselines: dict) -> str:
    summary = summarize(per_seed)
    seeds = sorted({seed for runs in per_seed.values() for seed in runs})
    lines = ["| method | trainable #Θ | peak train memory | CPU s / step | batch-1 latency (CPU ms) | file "
             f"| val loss | BLEU | ROUGE-L | BLEU vs LoRA | BLEU per seed ({', '.join(map(str, seeds))}) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in baselines.items():
        lines.append(f"| {name} (no training) | 0 | | | | | | {b['bleu']:.1f} | {b['rouge_l']:.1f} | | |")
    first = {name: runs[min(runs)] for name, runs in per_seed.items()}  # cost columns: the first seed's run
    base_latency = first["full"]["latency_cpu_ms"] if "full" in first else None  # the plain GPT's cost
    for name, runs in per_seed.items():
        r, q = first[name], summary[name]
        latency = f"{r['latency_cpu_ms']:.2f}"
        if base_latency and name != "full":
            latency += f" ({100 * (r['latency_cpu_ms'] / base_latency - 1):+.0f}%)"
        cells = [f"{q[k][0]:.{d}f} ± {q[k][1]:.{d}f}" for k, d in (("val_loss_after", 3), ("bleu", 1), ("rouge_l", 1))]
        by_seed = " / ".join(f"{runs[seed]['bleu']:.1f}" if seed in runs else "-" for seed in seeds)
        lines.append(f"| {name} | {r['trainable']:,} | {r['peak_train_mib']:.1f} MiB | {r['step_cpu_s']:.3f} | "
                     f"{latency} | {r['file_bytes'] / 1e3:,.1f} kB | {' | '.join(cells)} | {against_lora(summary, name)} "
                     f"| {by_seed} |")
    return "\n".join(lines)


def plot(per_seed: dict, baselines: dict, path, base: str = "base-mini") -> bool:
    """Four panels: |Θ| (log), validation loss, BLEU (mean ± sd, baselines as lines), batch-1 latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    summary, names = summarize(per_seed), list(per_seed)
    first = {name: runs[min(runs)] for name, runs in per_seed.items()}
    colors = ["C3" if n == "lora" else "C0" for n in names]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    axes[0].bar(names, [first[n]["trainable"] for n in names], color=colors)
    axes[0].set_yscale("log")
    axes[0].set_title("trainable |Θ| (log)")
    for ax, key, title in ((axes[1], "val_loss_after", "validation loss"), (axes[2], "bleu", "BLEU (E2E form)")):
        ax.bar(names, [summary[n][key][0] for n in names], yerr=[summary[n][key][1] for n in names], color=colors,
               capsize=3)
        ax.set_title(f"{title}, mean ± sd over seeds")
    for (name, b), style in zip(baselines.items(), (":", "--")):
        axes[2].axhline(b["bleu"], color="k", linestyle=style, label=f"{name} (no training)")
    axes[2].legend(fontsize=7)
    axes[3].bar(names, [first[n]["latency_cpu_ms"] for n in names], color=colors)
    axes[3].set_title("batch-1 latency, CPU ms")
    for ax in axes:
        ax.tick_params(axis="x", rotation=60)
    fig.suptitle(f"E2E-style task on {base}: the LoRA paper's baselines and LoRA (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="base-mini", help="model to fine-tune (default: the shipped base-mini)")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES,
                        help=f"longest 'MR || reference' kept, in bytes (default {MAX_BYTES}, for base-mini's 256)")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train", type=int, default=1200, help="training MRs (default 1200; 10%% are validation)")
    parser.add_argument("--test", type=int, default=12, help="held-out MRs for BLEU/ROUGE-L (3 references each)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"of {', '.join(METHODS)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2", help="one run per seed and method (default 0,1,2)")
    parser.add_argument("--work", default="runs/table3", help="run folders (default runs/table3)")
    parser.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    args.threads_pinned_before_import = common.pin_threads(args.threads)
    args.device = "cpu"
    unknown = sorted(set(args.methods.split(",")) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")]

    from tinylora.analysis.provenance import provenance

    began = provenance(common.command_line(MODULE, argv))
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    train_pairs, test_pairs = e2e_data(args.train, args.test, args.max_bytes)
    baselines = baseline_rows(test_pairs)
    per_seed = {}
    for name in args.methods.split(","):
        for seed in seeds:
            args.seed = seed
            r = run_method(name, train_pairs, test_pairs, args, os.path.join(args.work, f"seed{seed}"))
            per_seed.setdefault(name, {})[seed] = r
            print(f"{name} seed {seed}: |Θ| {r['trainable']:,}, val loss {r['val_loss_after']:.3f}, BLEU {r['bleu']:.1f}, "
                  f"ROUGE-L {r['rouge_l']:.1f} ({time.perf_counter() - started:.0f} s)", flush=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {"base": args.base, "max_bytes": args.max_bytes, "steps": args.steps, "batch": args.batch, "seeds": seeds,
              "train_pairs": len(train_pairs),
              "test_prompts": len(test_pairs) // 3, "baselines": baselines,
              "rows": {name: {str(seed): run for seed, run in runs.items()} for name, runs in per_seed.items()},
              "summary": summarize(per_seed), "uptime_before": uptime_before, "uptime_after": uptime_after,
              "wall_s": time.perf_counter() - started, "table_md": table(per_seed, baselines)}
    args.seed = seeds[0]
    base = os.path.basename(os.path.normpath(args.base))
    record = common.make_record("table3_e2e", args, MODULE, result, started=began, shape={"config": base})
    path = common.write_result(record, args.out, f"table3_e2e__{base}__cpu")
    png = path.with_suffix(".png")
    plot(per_seed, baselines, png, base)
    path.with_suffix(".md").write_text(
        f"# Table 3 in miniature ({base}, E2E-style task, rows up to {args.max_bytes} bytes, CPU, "
        f"{args.threads} thread)\n\n"
        f"Command: `{record['command']}` (git {record['provenance']['git']['commit']}, "
        f"{record['provenance']['machine']['cpu_model']}); {result['wall_s'] / 60:.0f} minutes in all.\n\n"
        f"{result['table_md']}\n\n"
        f"{args.steps} steps of batch {args.batch}; {len(train_pairs)} training pairs (10% validation); BLEU and "
        f"ROUGE-L (0-100) as the E2E challenge computes them, of greedy completions of {len(test_pairs) // 3} held-out "
        f"MRs, 3 references each. Mean ± sample standard deviation over seeds {args.seeds}; 'BLEU vs LoRA' says "
        f"whether the difference of the means exceeds the sum of the two standard deviations. The two "
        f"no-training rows are deterministic. Cost columns are the first seed's run. Step: CPU seconds of the whole "
        f"run / steps (two validations included). Latency: one forward over the first test prompt (prefix methods "
        f"add their virtual tokens), LoRA merged; % against FT (the plain GPT).\n\n"
        f"Load: before `{uptime_before}`, after `{uptime_after}`.\n")
    print(result["table_md"])
    print(f"-> {path}, {png} ({result['wall_s']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
