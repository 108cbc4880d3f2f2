"""`tinylora demo`: the LoRA paper's story on a laptop, in about two minutes, with no download.

1. Load the small GPT base shipped in the package ("base-mini", pretrained by
   `tinylora pretrain` on this Python's standard-library source; see
   tinylora/assets/README.md for the exact command).
2. Make a data-to-text task in the style of the paper's E2E NLG experiment: a
   meaning representation such as
       name[The Eagle], eatType[coffee shop], food[French], area[riverside]
   is to be turned into a sentence about the restaurant. The examples are
   generated from templates (tinylora.data.e2e), so nothing is downloaded.
3. Fine-tune the base twice on it: full fine-tuning (every weight trains, AdamW
   keeps two moments for each) and LoRA with r = 4 on W_q and W_v (only A and
   B train).
4. Print one table: trainable parameters, peak training memory, time per step,
   validation loss before and after, how far merged and unmerged LoRA outputs
   differ, and the size of what each method has to store. Save a plot.
"""

from __future__ import annotations

import os
import time

import numpy as np

from tinylora import manual_seed, tensor
from tinylora.data import PairDataset, e2e_pair, make_e2e
from tinylora.engine.backend import memory
from tinylora.lora import apply_lora, merge_lora, parameter_report, save_adapter, unmerge_lora
from tinylora.model.generate import generate
from tinylora.model.load import load_model, save_model
from tinylora.nn import evaluating
from tinylora.tokenizers import decode_text
from tinylora.train.loop import FULL_LR, LORA_LR, TrainConfig, eval_batches, train
from tinylora.train.plot import plot_runs

DEFAULT_STEPS = 150
SETTINGS = {  # method -> (learning rate, LoRA rank or None): the package's defaults (README, "Learning rates")
    "full": (FULL_LR, None),
    "lora": (LORA_LR, 4),
}
MAX_EXAMPLE_BYTES = 200  # keep examples that fit the base's 256-byte context with room to spare


def _datasets(tokenizer, block_size: int, n_train: int = 2000, n_val: int = 128):
    """2000 training and 128 validation examples of at most MAX_EXAMPLE_BYTES (about 30% of those generated)."""
    rows = [r for r in make_e2e(4 * (n_train + n_val), seed=0)
            if len(f"{r['mr']} || {r['ref']}".encode()) <= MAX_EXAMPLE_BYTES]
    pairs = [e2e_pair(r["mr"], r["ref"]) for r in rows[: n_train + n_val]]
    if len(pairs) < n_train + n_val:
        raise RuntimeError(f"only {len(pairs)} short examples generated; the demo needs {n_train + n_val}")
    return PairDataset(pairs[:n_train], tokenizer, block_size), PairDataset(pairs[n_train:], tokenizer, block_size)


def _mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.2f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.1f} kB"


def _merge_difference(model, batch) -> float:
    """max |logits(unmerged) - logits(merged)| on one validation batch (float32)."""
    x = tensor(batch[0], device=model.device)
    with evaluating(model):
        unmerged = model(x)[0].numpy()
        merge_lora(model)
        merged = model(x)[0].numpy()
        unmerge_lora(model)
    return float(np.max(np.abs(unmerged - merged)))


def _sample(model, tokenizer, prompt: str, device) -> str:
    ids = tensor([tokenizer.encode(prompt)], device=device)
    out = generate(model, ids, max_new_tokens=120, temperature=0.0, eos_token=tokenizer.eot_id)
    return decode_text(tokenizer, out.numpy()[0, ids.shape[1]:]).strip()


def run_demo(out_dir: str = "runs/demo", steps: int | None = None, device=None) -> dict:
    """Run the demo, print its table, and return the measured numbers. Replaces what `out_dir` held."""
    steps = DEFAULT_STEPS if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"the demo needs steps >= 1, got {steps!r}")
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    rows = {}
    for method, (lr, rank) in SETTINGS.items():
        manual_seed(0)
        model, tokenizer = load_model("base-mini", device=device)
        train_set, val_set = _datasets(tokenizer, model.config.block_size)
        if rank:
            apply_lora(model, r=rank, targets=("q", "v"))
        report = parameter_report(model)
        title = "full fine-tuning" if method == "full" else f"LoRA r={rank} on q,v"
        print(f"\n== {title}: {report['trainable']:,} of {report['total']:,} parameters train")
        config = TrainConfig(max_steps=steps, batch_size=16, lr=lr, eval_every=max(steps // 5, 1), eval_batches=8,
                             warmup_steps=steps // 10)
        run_dir = os.path.join(out_dir, method)
        result = train(model, train_set, val_set, config, run_dir=run_dir, overwrite=True)  # the demo's own folder
        if rank:
            save_adapter(model, os.path.join(run_dir, "adapter"))
            stored = os.path.getsize(os.path.join(run_dir, "adapter", "adapter.safetensors"))
            merge_diff = _merge_difference(model, eval_batches(val_set, 16, 1)[0])
        else:
            save_model(model, os.path.join(run_dir, "model"), tokenizer)
            stored = os.path.getsize(os.path.join(run_dir, "model", "model.safetensors"))
            merge_diff = None
        example = val_set.pairs[0]
        rows[method] = {
            "title": title, "trainable": report["trainable"], "percent": report["percent_trainable"],
            "peak_bytes": result.peak_bytes, "peak_split": result.peak_split, "step_s": result.median_step_time,
            "val_before": result.val_loss_before, "val_after": result.val_loss_after, "merge_diff": merge_diff,
            "stored_bytes": stored, "sample_prompt": example["prompt"],
            "sample": _sample(model, tokenizer, example["prompt"], device),
        }
        del model
        memory.reset_peak()

    plotted = plot_runs({r["title"]: os.path.join(out_dir, m, "metrics.jsonl") for m, r in rows.items()},
                        os.path.join(out_dir, "demo.png"), "E2E-style data-to-text: full fine-tuning vs LoRA")
    print_table(rows)
    print(f"\nexample: {rows['lora']['sample_prompt']}")
    for method, row in rows.items():
        print(f"  {row['title']:<22} -> {row['sample']}")
    where = os.path.join(out_dir, "demo.png") if plotted else "(no plot: matplotlib missing)"
    print(f"\nplot: {where}   runs: {out_dir}/full, {out_dir}/lora   total time {time.perf_counter() - started:.0f} s")
    return rows


def print_table(rows: dict) -> None:
    full, lora = rows["full"], rows["lora"]
    lines = [
        ("", full["title"], lora["title"]),
        ("trainable parameters", f"{full['trainable']:,} ({full['percent']:.1f}%)",
         f"{lora['trainable']:,} ({lora['percent']:.2f}%)"),
        ("peak training memory*", _mib(full["peak_bytes"]), _mib(lora["peak_bytes"])),
        ("  of which grads + optimizer", _mib(full["peak_split"]["gradients"] + full["peak_split"]["optimizer"]),
         _mib(lora["peak_split"]["gradients"] + lora["peak_split"]["optimizer"])),
        ("time per step (median)", f"{full['step_s'] * 1000:.0f} ms", f"{lora['step_s'] * 1000:.0f} ms"),
        ("validation loss before", f"{full['val_before']:.3f}", f"{lora['val_before']:.3f}"),
        ("validation loss after", f"{full['val_after']:.3f}", f"{lora['val_after']:.3f}"),
        ("merged vs unmerged max |diff|", "n/a", f"{lora['merge_diff']:.1e}"),
        ("file to store", f"{_size(full['stored_bytes'])} (model)", f"{_size(lora['stored_bytes'])} (adapter)"),
    ]
    widths = [max(len(row[i]) for row in lines) for i in range(3)]
    print()
    for i, row in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print("* bytes of live tensor data (weights, gradients, optimizer state, activations), tinylora.backend.memory")


def add_parser(sub) -> None:
    from tinylora.cli import flags

    p = sub.add_parser("demo", help="fine-tune the shipped base twice (full and LoRA) and compare",
                       description="Fine-tune the shipped base model on a data-to-text task, full and LoRA r=4 "
                                   "on q,v, and print one table comparing them. No download.")
    p.add_argument("--steps", type=flags.POSITIVE_INT, default=None, help="fine-tuning steps per method (default: 150)")
    p.add_argument("--out", default="runs/demo", help="where plots, metrics and files go (replaced on each run)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: TINYLORA_DEVICE, else cpu)")


def run(args) -> None:
    run_demo(out_dir=args.out, steps=args.steps, device=args.device)
