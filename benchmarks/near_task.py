"""LoRA against full fine-tuning on a task near the base's pretraining, and the gap against base size.

The LoRA paper's claim is that a low-rank update ΔW = BA adapts what a pretrained model already knows.
tinylora's bases are byte-level GPTs pretrained on the top-level *.py files of Python's standard library,
so the near task here is Python source the bases never saw: NumPy's own *.py files (the copy installed on
this machine; nothing is downloaded or shipped). The far task, E2E restaurant descriptions, is in
benchmarks/table3_e2e.py.

    # 1. bases of three sizes, all with base-mini's recipe (1500 steps, batch 16, lr 2e-3, warm-up 100):
    python -m benchmarks.near_task pretrain --size nano --out runs/bases/nano
    python -m benchmarks.near_task pretrain --size micro --out runs/bases/micro
    #    (mini is the shipped base-mini, pretrained by the same recipe; tinylora/assets/README.md)
    # 2. one fine-tuning run per (base, method, seed), one result file each:
    python -m benchmarks.near_task finetune --base base-mini --method lora --rank 8 --targets q,v --seed 0
    # 3. the table and the plot of the gap against base size:
    python -m benchmarks.near_task report

Every run holds out the same 10% of NumPy's source (chunks chosen by seed 0, whatever the run's seed) and
reports the validation loss in nats per byte before and after `--steps` steps of batch `--batch`.
The gap is (LoRA's loss - full fine-tuning's loss) / full fine-tuning's loss, and "share of the gain" is
(base - LoRA) / (base - full).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sysconfig
import time
from pathlib import Path

from . import common

MODULE = "benchmarks.near_task"
OUT_DIR = common.RESULTS_DIR / "near_task"
SIZES = {  # name -> (n_layer, n_head, n_embd); "mini" is the shipped base-mini's shape
    "nano": (1, 2, 32),
    "micro": (2, 2, 64),
    "small": (3, 4, 96),  # a fourth size between micro and mini: its pretraining did not fit this project's CPU time
    "mini": (4, 4, 128),
}
PRETRAIN = {"max_steps": 1500, "batch_size": 16, "lr": 2e-3, "warmup_steps": 100, "eval_every": 250}


def numpy_source() -> str:
    """A glob of NumPy's installed *.py files (tests included): Python code the stdlib-trained bases never saw."""
    import numpy

    return os.path.join(os.path.dirname(numpy.__file__), "**", "*.py")


def _pretrain(args) -> None:
    from tinylora import manual_seed
    from tinylora.data import load_text_dataset
    from tinylora.model.gpt import GPT, GPTConfig
    from tinylora.model.load import save_model
    from tinylora.tokenizers import load_tokenizer
    from tinylora.train.loop import TrainConfig, train

    n_layer, n_head, n_embd = SIZES[args.size]
    manual_seed(0)
    tokenizer = load_tokenizer("byte")
    stdlib = os.path.join(sysconfig.get_paths()["stdlib"], "*.py")  # what `tinylora pretrain --data stdlib` reads
    train_set, val_set = load_text_dataset(stdlib, tokenizer, 256, val_fraction=0.05, seed=0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=256, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.0)
    model = GPT(config)
    result = train(model, train_set, val_set, TrainConfig(**PRETRAIN, progress=False), run_dir=args.out + "-run",
                   overwrite=True)
    save_model(model, args.out, tokenizer, extra={"pretrain": {
        "command": common.command_line(MODULE), "data": "stdlib", "val_loss": result.val_loss_after}})
    print(f"{args.size}: {model.num_parameters():,} parameters, stdlib val loss "
          f"{result.val_loss_before:.3f} -> {result.val_loss_after:.3f}; written to {args.out}")


def _finetune(args) -> None:
    from tinylora import manual_seed
    from tinylora.analysis.provenance import provenance
    from tinylora.data import load_text_dataset
    from tinylora.lora import apply_lora, parameter_report
    from tinylora.model.load import load_model
    from tinylora.train.loop import TrainConfig, train

    began = provenance(common.command_line(MODULE))
    manual_seed(args.seed)
    model, tokenizer = load_model(args.base)
    train_set, val_set = load_text_dataset(numpy_source(), tokenizer, model.config.block_size, val_fraction=0.1,
                                           seed=0)
    targets = tuple(args.targets.split(","))
    base_parameters = model.num_parameters()
    if args.method == "lora":
        apply_lora(model, r=args.rank, alpha=args.rank, targets=targets)
    report = parameter_report(model)
    config = TrainConfig(max_steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_steps=args.steps // 10,
                         eval_every=args.steps, eval_batches=args.eval_batches, seed=args.seed, progress=False)
    started = time.perf_counter()
    result = train(model, train_set, val_set, config)
    label = "full" if args.method == "full" else f"lora-r{args.rank}-{'+'.join(targets)}"
    record = common.make_record("near_task", args, MODULE, {
        "base": args.base, "base_parameters": base_parameters, "n_layer": model.config.n_layer,
        "n_embd": model.config.n_embd, "method": label, "trainable": report["trainable"], "lr": args.lr,
        "steps": args.steps, "batch": args.batch, "seed": args.seed, "val_loss_before": result.val_loss_before,
        "val_loss_after": result.val_loss_after, "train_tokens": int(len(train_set.tokens)),
        "val_tokens": int(len(val_set.tokens)), "data": "NumPy's installed *.py files, 10% held out",
        "seconds": round(time.perf_counter() - started, 1)}, started=began)
    name = f"{Path(args.base).name}__{label}__lr{args.lr:g}__s{args.steps}__seed{args.seed}"
    path = common.write_result(record, str(OUT_DIR / f"{name}.json"), name)
    print(f"{name}: {result.val_loss_before:.4f} -> {result.val_loss_after:.4f}  ({path})")


def load_runs(folder=OUT_DIR) -> list[dict]:
    """Every fine-tuning record under `folder` (the `result` part, plus its file name)."""
    runs = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        record = json.loads(Path(path).read_text())
        if record.get("benchmark") == "near_task":
            machine = record["machine"]
            runs.append({**record["result"], "file": os.path.basename(path),
                         "machine_key": [machine.get("cpu_model"), machine.get("physical_cores"), machine.get("gpu")],
                         "commit": record.get("provenance", {}).get("git", {}).get("commit")})
    return runs


def _report(args) -> None:
    from .near_task_report import write_report

    write_report(load_runs(), OUT_DIR)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu",))
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("pretrain", help="pretrain a base of one size on the stdlib source")
    p.add_argument("--size", choices=[s for s in SIZES if s != "mini"], required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("finetune", help="fine-tune a base on NumPy's source, write one result file")
    p.add_argument("--base", default="base-mini")
    p.add_argument("--method", choices=("full", "lora"), required=True)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--targets", default="q,v", help="comma-separated LoRA targets (q,k,v,o,fc,proj)")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 full, 3e-2 LoRA")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    sub.add_parser("report", help="the table and plot from the result files")
    args = common.parse_args(parser, argv)
    if getattr(args, "lr", 0) is None:
        args.lr = 1e-3 if args.method == "full" else 3e-2
    {"pretrain": _pretrain, "finetune": _finetune, "report": _report}[args.what](args)


if __name__ == "__main__":
    main()
