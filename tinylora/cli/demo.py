"""`tinylora demo`: the LoRA paper's story on a laptop, with no download: where LoRA matches full
fine-tuning, and where it does not.

1. Load the small GPT base shipped in the package ("base-mini", pretrained by
   `tinylora pretrain` on this Python's standard-library source; see
   tinylora/assets/README.md for the exact command).
2. The near task: more Python, from code the base never saw (NumPy's own *.py files,
   installed with NumPy on every machine that runs tinylora; 10% held out). LoRA adapts
   what a pretrained model already knows, which is the situation the paper's claim is about.
3. The far task: a data-to-text task in the style of the paper's E2E NLG experiment. A
   meaning representation such as
       name[The Eagle], eatType[coffee shop], food[French], area[riverside]
   is to be turned into a sentence about the restaurant (generated from templates,
   tinylora.data.e2e). English restaurant descriptions are far from Python source: the base
   knows little of them, and a rank-8 update is not enough to teach them.
4. Fine-tune the base on each task twice: full fine-tuning (every weight trains, AdamW
   keeps two moments for each) and LoRA with r = 8 on every Linear of each block (W_q, W_k,
   W_v, W_o and the MLP's two; only A and B train: 73,728 numbers, 8.6% of the base's). At this size a
   rank-8 update of W_q and W_v alone reaches only about half of full fine-tuning's gain on
   the near task (benchmarks/results/near_task/); on every Linear it comes within 5%.
5. Print one table per task: trainable parameters, peak training memory, time per step,
   validation loss before and after, LoRA's loss against full fine-tuning's, how far
   merged and unmerged LoRA outputs differ, and the size of what each method has to store.
   Then one greedy sample per task from the base and from each model (on the near task, the
   rest of a held-out line that begins `return `). Save a plot.
"""

from __future__ import annotations

import os
import re
import time

import numpy as np

from tinylora import manual_seed, tensor
from tinylora.analysis.provenance import provenance
from tinylora.data import PairDataset, e2e_pair, load_text_dataset, make_e2e
from tinylora.engine.backend import memory
from tinylora.io import write_json_atomic
from tinylora.lora import apply_lora, merge_lora, parameter_report, save_adapter, unmerge_lora
from tinylora.lora.apply import TARGETS
from tinylora.model.generate import generate
from tinylora.model.load import load_model, save_model
from tinylora.nn import evaluating
from tinylora.tokenizers import decode_text
from tinylora.train.loop import FULL_LR, LORA_EVERY_LINEAR_LR, TrainConfig, eval_batches, train
from tinylora.train.plot import plot_runs

DEFAULT_STEPS = 150
LORA_RANK = 8
LORA_TARGETS = tuple(TARGETS)  # every Linear of a block: q, k, v, o, fc, proj
SETTINGS = {  # method -> (learning rate, LoRA rank or None); the same as benchmarks/near_task.py's runs
    "full": (FULL_LR, None),
    "lora": (LORA_EVERY_LINEAR_LR, LORA_RANK),
}
EVAL_BATCHES = 16  # validation batches of 16 sequences, as benchmarks/near_task.py
TASKS = {  # task -> its title
    "near": "near task: Python the base never saw (NumPy's source)",
    "far": "far task: E2E-style restaurant descriptions",
}
MAX_EXAMPLE_BYTES = 200  # keep E2E examples that fit the base's 256-byte context with room to spare
NEAR_PROMPT_BYTES = 160  # the near task's sample: this much held-out code, ending at a `return `


def numpy_source() -> str:
    """A glob of NumPy's installed *.py files: Python the stdlib-trained base never saw."""
    return os.path.join(os.path.dirname(np.__file__), "**", "*.py")


def _datasets(tokenizer, block_size: int, n_train: int = 2000, n_val: int = 128):
    """The far task: 2000 training and 128 validation examples of at most MAX_EXAMPLE_BYTES
    (about 30% of those generated)."""
    rows = [r for r in make_e2e(4 * (n_train + n_val), seed=0)
            if len(f"{r['mr']} || {r['ref']}".encode()) <= MAX_EXAMPLE_BYTES]
    pairs = [e2e_pair(r["mr"], r["ref"]) for r in rows[: n_train + n_val]]
    if len(pairs) < n_train + n_val:
        raise RuntimeError(f"only {len(pairs)} short examples generated; the demo needs {n_train + n_val}")
    return PairDataset(pairs[:n_train], tokenizer, block_size), PairDataset(pairs[n_train:], tokenizer, block_size)


def near_datasets(tokenizer, block_size: int):
    """The near task: NumPy's source as next-byte windows, 10% of its chunks held out (the same split for
    every seed)."""
    return load_text_dataset(numpy_source(), tokenizer, block_size, val_fraction=0.1, seed=0)


def _task_data(task: str, tokenizer, block_size: int):
    return near_datasets(tokenizer, block_size) if task == "near" else _datasets(tokenizer, block_size)


def _sample_prompt(task: str, val_set, tokenizer) -> str:
    """The far task: the first validation MR. The near task: held-out code up to the first `return ` that
    has NEAR_PROMPT_BYTES before it, from a line start; the model completes that line (what is returned)."""
    if task == "far":
        return val_set.pairs[0]["prompt"]
    text = tokenizer.decode([int(t) for t in val_set.tokens[:20000] if t != tokenizer.eot_id])
    found = re.search(r"\n +return ", text[NEAR_PROMPT_BYTES:])
    end = NEAR_PROMPT_BYTES + found.end() if found else len(text)
    start = text.find("\n", end - NEAR_PROMPT_BYTES) + 1
    return text[start:end]


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


def _sample(model, tokenizer, prompt: str, device, task: str) -> str:
    """Greedy tokens after `prompt`: on the far task up to 120, until the end token; on the near task up
    to 60, until the end of the line."""
    ids = tensor([tokenizer.encode(prompt)], device=device)
    stop = tokenizer.eot_id if task == "far" else tokenizer.encode("\n")[0]
    out = generate(model, ids, max_new_tokens=120 if task == "far" else 60, temperature=0.0, eos_token=stop)
    return decode_text(tokenizer, out.numpy()[0, ids.shape[1]:]).strip()


def run_demo(out_dir: str = "runs/demo", steps: int | None = None, device=None, tasks=("near", "far")) -> dict:
    """Run the demo, print its tables, and return the measured numbers {task: {method: row}}.
    Replaces what `out_dir` held."""
    steps = DEFAULT_STEPS if steps is None else steps
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"the demo needs steps >= 1, got {steps!r}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"the demo's tasks are {', '.join(TASKS)}; got {list(tasks)!r}")
    os.makedirs(out_dir, exist_ok=True)
    began = provenance(device=str(device or "cpu"))  # the code and machine as the run starts
    started = time.perf_counter()
    results = {task: run_task(task, out_dir, steps, device) for task in tasks}
    for task, rows in results.items():
        print(f"\n{TASKS[task]}")
        print_table(rows)
        print(f"\nexample (greedy): {rows['lora']['sample_prompt']!r}")
        print(f"  {'base-mini, not tuned':<22} -> {rows['lora']['base_sample']!r}")
        for row in rows.values():
            print(f"  {row['title']:<22} -> {row['sample']!r}")
    if "near" in results and "far" in results:
        near, far = (results[t]["lora"]["val_after"] / results[t]["full"]["val_after"] for t in ("near", "far"))
        print(f"\nLoRA's validation loss / full fine-tuning's: near task {near:.2f}, far task {far:.2f}. LoRA adapts "
              "what the base knows;\nthe further the task is from it, the more a rank-8 update falls behind.")
    seconds = time.perf_counter() - started
    write_json_atomic(os.path.join(out_dir, "demo.json"), {
        "steps": steps, "seconds": seconds, "provenance": began,
        "tasks": {task: {m: {k: v for k, v in row.items() if k != "peak_split"} for m, row in rows.items()}
                  for task, rows in results.items()},
        "lora_vs_full": {task: {"loss_ratio": rows["lora"]["val_after"] / rows["full"]["val_after"],
                                "share_of_gain": share_of_gain(rows["lora"], rows["full"])}
                         for task, rows in results.items()}})
    print(f"\nplots: {out_dir}/<task>/demo.png   runs: {out_dir}/<task>/full, {out_dir}/<task>/lora   "
          f"numbers: {out_dir}/demo.json   total time {seconds:.0f} s")
    return results


def run_task(task: str, out_dir: str, steps: int, device=None) -> dict:
    """Full fine-tuning and LoRA on one task; {method: row of measured numbers}."""
    rows, base_sample = {}, None
    for method, (lr, rank) in SETTINGS.items():
        manual_seed(0)
        model, tokenizer = load_model("base-mini", device=device)
        train_set, val_set = _task_data(task, tokenizer, model.config.block_size)
        prompt = _sample_prompt(task, val_set, tokenizer)
        if base_sample is None:  # once per task, before any training: what the base writes
            base_sample = _sample(model, tokenizer, prompt, device, task)
        if rank:
            apply_lora(model, r=rank, targets=LORA_TARGETS)
        report = parameter_report(model)
        title = "full fine-tuning" if method == "full" else f"LoRA r={rank}, every Linear"
        print(f"\n== {task} task, {title}: {report['trainable']:,} of {report['total']:,} parameters train")
        config = TrainConfig(max_steps=steps, batch_size=16, lr=lr, eval_every=max(steps // 5, 1),
                             eval_batches=EVAL_BATCHES, warmup_steps=steps // 10)
        run_dir = os.path.join(out_dir, task, method)
        result = train(model, train_set, val_set, config, run_dir=run_dir, overwrite=True)  # the demo's own folder
        if rank:
            save_adapter(model, os.path.join(run_dir, "adapter"))
            stored = os.path.getsize(os.path.join(run_dir, "adapter", "adapter.safetensors"))
            merge_diff = _merge_difference(model, eval_batches(val_set, 16, 1)[0])
        else:
            save_model(model, os.path.join(run_dir, "model"), tokenizer)
            stored = os.path.getsize(os.path.join(run_dir, "model", "model.safetensors"))
            merge_diff = None
        rows[method] = {
            "title": title, "trainable": report["trainable"], "percent": report["percent_trainable"],
            "peak_bytes": result.peak_bytes, "peak_split": result.peak_split, "step_s": result.median_step_time,
            "val_before": result.val_loss_before, "val_after": result.val_loss_after, "merge_diff": merge_diff,
            "stored_bytes": stored, "sample_prompt": prompt, "base_sample": base_sample,
            "sample": _sample(model, tokenizer, prompt, device, task),
        }
        del model
        memory.reset_peak()
    plot_runs({r["title"]: os.path.join(out_dir, task, m, "metrics.jsonl") for m, r in rows.items()},
              os.path.join(out_dir, task, "demo.png"), f"{TASKS[task]}: full fine-tuning vs LoRA")
    return rows


def share_of_gain(lora: dict, full: dict) -> float | None:
    """(base - LoRA) / (base - full): the fraction of full fine-tuning's gain LoRA reached; None when full
    fine-tuning gained nothing."""
    gain = full["val_before"] - full["val_after"]
    return None if gain <= 0 else (lora["val_before"] - lora["val_after"]) / gain


def _share(lora: dict, full: dict) -> str:
    share = share_of_gain(lora, full)
    return "n/a (full fine-tuning did not improve)" if share is None else f"{share:.0%}"


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
        ("LoRA's loss / full's", "", f"{lora['val_after'] / full['val_after']:.2f}"),
        ("LoRA's share of full's gain", "", _share(lora, full)),
        ("merged vs unmerged max |diff|", "n/a", f"{lora['merge_diff']:.1e}"),
        ("file to store", f"{_size(full['stored_bytes'])} (model)", f"{_size(lora['stored_bytes'])} (adapter)"),
    ]
    widths = [max(len(row[i]) for row in lines) for i in range(3)]
    print()
    for i, row in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print("* bytes of live tensor data (weights, gradients, optimizer state, activations), tinylora.engine.backend.memory")


def add_parser(sub) -> None:
    from tinylora.cli import flags

    p = sub.add_parser("demo", help="fine-tune the shipped base fully and with LoRA, on a near and a far task",
                       description="Fine-tune the shipped base model fully and with LoRA r=8 on every Linear, on a near "
                                   "task (Python it never saw) and a far one (E2E-style restaurant sentences), "
                                   "and print one table per task comparing them. No download.")
    p.add_argument("--steps", type=flags.POSITIVE_INT, default=None,
                   help=f"fine-tuning steps per method and task (default: {DEFAULT_STEPS})")
    p.add_argument("--out", default="runs/demo", help="where plots, metrics and files go (replaced on each run)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: TINYLORA_DEVICE, else cpu)")


def run(args) -> None:
    run_demo(out_dir=args.out, steps=args.steps, device=args.device)
