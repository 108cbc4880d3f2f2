"""The LoRA paper's Table 3 in miniature: every method on the shipped base and the E2E-style task, one command.

    python -m benchmarks.table3_e2e          (~2 CPU-minutes on an idle core; writes JSON, MD and PNG)

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

Learning rates: LoRA's 3e-2 and FT's 1e-3 are the demo's swept values (tinylora/cli/demo.py); the
others are LoRA's 3e-2 times the ratio of their learning rate to LoRA's in the paper's GPT-3 runs
(Table 12: FT 5e-6, PreEmbed 5e-4, PreLayer 1e-4, BitFit 1.6e-3, Adapter^H 1e-4, LoRA 2e-4), capped at
0.1; not tuned further. Measured per method: trainable parameters, peak training memory (tinylora's
accounting of live tensor bytes), median step time (CPU seconds of one thread), validation loss,
batch-1 latency (CPU ms of one forward over a typical prompt, prefixes included), the size of the file
the method must store, and BLEU / ROUGE-L of greedy completions of held-out meaning representations
against their 3 references (tinylora.train.generation_metrics: sacrebleu and rouge-score).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from . import common

MODULE = "benchmarks.table3_e2e"
MAX_BYTES = 160  # keep examples short: faster steps, and room for 24 virtual tokens in the 256-byte context

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
}


def e2e_data(n_train: int, n_test: int):
    """Training pairs (one reference per MR) and held-out test rows (3 references per MR, MRs not in training)."""
    from tinylora.data import e2e_pair, make_e2e

    def short(row):
        return len(f"{row['mr']} || {row['ref']}".encode()) <= MAX_BYTES

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
    model, tokenizer = load_model("base-mini")
    no_dropout(model)
    flags = {"method": name, "rank": 4, "alpha": None, "targets": ("q", "v"), "layers": None, "lora_dropout": 0.0,
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
    if name == "lora":
        save_adapter(model, folder)
    elif name == "full":
        save_model(model, folder, tokenizer)
    else:
        save_method(model, folder)
    stored = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".safetensors"))
    typical = prompt_ids(model, tokenizer.encode(test_pairs[0]["prompt"]))
    if name == "lora":
        merge_lora(model)  # deployed LoRA is merged: W = W0 + (α/r) B A, the base model's cost
    quality = evaluate_generation(model, tokenizer, test_pairs, max_new_tokens=MAX_BYTES)
    return {
        "settings": settings, "lr": lr, "trainable": report["trainable"], "total": report["total"],
        "peak_train_mib": result.peak_bytes / 2**20, "step_cpu_s": train_cpu / args.steps,
        "step_wall_s": result.median_step_time, "val_loss_before": result.val_loss_before,
        "val_loss_after": result.val_loss_after, "latency_cpu_ms": cpu_ms_of_forward(model, typical),
        "latency_tokens": len(typical), "file_bytes": stored, "bleu": quality["bleu"], "rouge_l": quality["rouge_l"],
        "prompts": quality["prompts"], "example": quality["examples"][0],
    }


def table(rows: dict) -> str:
    lines = ["| method | trainable #Θ | peak train memory | CPU s / step | val loss | batch-1 latency (CPU ms) "
             "| file | BLEU | ROUGE-L |", "|---|---|---|---|---|---|---|---|---|"]
    base_latency = rows["full"]["latency_cpu_ms"] if "full" in rows else None  # the plain GPT's cost
    for name, r in rows.items():
        latency = f"{r['latency_cpu_ms']:.2f}"
        if base_latency and name != "full":
            latency += f" ({100 * (r['latency_cpu_ms'] / base_latency - 1):+.0f}%)"
        lines.append(f"| {name} | {r['trainable']:,} | {r['peak_train_mib']:.1f} MiB | {r['step_cpu_s']:.3f} | "
                     f"{r['val_loss_after']:.3f} | {latency} | {r['file_bytes'] / 1e3:,.1f} kB | {r['bleu']:.1f} | "
                     f"{r['rouge_l']:.1f} |")
    return "\n".join(lines)


def plot(rows: dict, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(rows)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    panels = [("trainable |Θ| (log)", "trainable", True), ("validation loss", "val_loss_after", False),
              ("BLEU", "bleu", False), ("batch-1 latency, CPU ms", "latency_cpu_ms", False)]
    for ax, (title, key, log) in zip(axes, panels):
        ax.bar(names, [rows[n][key] for n in names], color=["C3" if n == "lora" else "C0" for n in names])
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.tick_params(axis="x", rotation=60)
    fig.suptitle("E2E-style task on base-mini: the LoRA paper's baselines and LoRA (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train", type=int, default=1200, help="training MRs (default 1200; 10%% are validation)")
    parser.add_argument("--test", type=int, default=12, help="held-out MRs for BLEU/ROUGE-L (3 references each)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/table3", help="run folders (default runs/table3)")
    parser.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    args.threads_pinned_before_import = common.pin_threads(args.threads)
    args.device = "cpu"

    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.perf_counter()
    train_pairs, test_pairs = e2e_data(args.train, args.test)
    rows = {}
    for name in args.methods.split(","):
        rows[name] = run_method(name, train_pairs, test_pairs, args, args.work)
        r = rows[name]
        print(f"{name}: |Θ| {r['trainable']:,}, val loss {r['val_loss_after']:.3f}, BLEU {r['bleu']:.1f}, "
              f"ROUGE-L {r['rouge_l']:.1f} ({time.perf_counter() - started:.0f} s)", flush=True)
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {"steps": args.steps, "batch": args.batch, "train_pairs": len(train_pairs),
              "test_prompts": len(test_pairs) // 3, "rows": rows, "uptime_before": uptime_before,
              "uptime_after": uptime_after, "wall_s": time.perf_counter() - started, "table_md": table(rows)}
    record = common.make_record("table3_e2e", args, MODULE, result, shape={"config": "base-mini"})
    path = common.write_result(record, args.out, "table3_e2e__base-mini__cpu")
    png = path.with_suffix(".png")
    plot(rows, png)
    path.with_suffix(".md").write_text(
        f"# Table 3 in miniature (base-mini, E2E-style task, CPU, {args.threads} thread)\n\n"
        f"Command: `{record['command']}`\n\n{table(rows)}\n\n"
        f"{args.steps} steps of batch {args.batch}; {len(train_pairs)} training pairs (10% validation); BLEU and "
        f"ROUGE-L (0-100) of greedy completions of {len(test_pairs) // 3} held-out MRs, 3 references each. "
        f"Step: CPU seconds of the whole run / steps (two validations included). Latency: one forward over the "
        f"first test prompt (prefix methods add their virtual tokens), LoRA merged; % against FT (the plain GPT).\n\n"
        f"Load: before `{uptime_before}`, after `{uptime_after}`.\n")
    print(table(rows))
    print(f"-> {path}, {png} ({result['wall_s']:.0f} s)")
    return record


if __name__ == "__main__":
    main()
