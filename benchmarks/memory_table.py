"""The memory table: full FT, LoRA, LoRA-FA, QLoRA (NF4 + DQ) and QLoRA + checkpointing + chunked loss, side by side.

    python -m benchmarks.memory_table --threads 2                 # GPT-2 small (4 x 256) and the teaching size
    python -m benchmarks.memory_table --configs base-mini --steps 20

Every row runs in its own fresh process (`--row NAME`, the same module), one after the other, so that no
row inherits another's memory. Per row:

    weights        resident memory the built model added (RSS after building - RSS at the process's start);
                   QLoRA's model is built in float32, quantized, and the float weights freed before this reading
    step peak      VmHWM - VmRSS once the model, optimizer and batch exist (benchmarks/procmem.py), over the steps
    peak above start   weights + step peak
    tagged         tinylora's accounting at its peak (tinylora.engine.backend.memory): weights (parameters minus
                   quantization constants), quantization constants, gradients, optimizer, saved, other
    analytic       benchmarks/analytic.py: weights + the smallest possible step peak for the same method and levers
    step time      median seconds per step after the first (the first creates AdamW's state: two steps at
                   GPT-2 small are the fewest that include it)
    val loss       teaching size only: the shipped base-mini fine-tuned on the embedded E2E-style task

LoRA, LoRA-FA and QLoRA adapt W_q and W_v with r = 8, α = 8 (the harness's setting) so that their rows
differ only in the method; QLoRA stores every block Linear in NF4 with double quantization and computes in
bfloat16 (ml_dtypes). At GPT-2 small the batch is random tokens (memory and time do not depend on them) and
HF transformers + PEFT LoRA (benchmarks/memory.py --impl hf) runs in the same command for comparison.
Writes results/memory_table.json, .md and .png.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common

MODULE = "benchmarks.memory_table"
ROWS = {  # name -> (method, activation checkpointing, loss chunk rows)
    "full": ("full", False, None),
    "lora": ("lora", False, None),
    "lora-fa": ("lora-fa", False, None),
    "qlora": ("qlora", False, None),
    "qlora+ckpt+chunk": ("qlora", True, 256),
}
RANK = 8
LR = {"full": 3e-4, "lora": 2e-3, "lora-fa": 2e-3, "qlora": 2e-3}  # the CLI's defaults
CONFIGS = ("gpt2", "base-mini")
DEFAULT_STEPS = {"gpt2": 2, "base-mini": 20}  # a shared 2-core machine: few steps (the first creates AdamW's state)
TEACHING = "base-mini"


def teaching_shape():
    """The shipped base-mini (4 layers, C = 128, V = 257 bytes, context 256) at batch 4 x 256."""
    from .shapes import Shape

    return Shape(TEACHING, n_layer=4, n_head=4, n_embd=128, vocab_size=257, block_size=256, batch=4, seq=256)


def get_shape(name: str):
    from .shapes import get_shape as shape_of

    return teaching_shape() if name == TEACHING else shape_of(name)


# ---------------------------------------------------------------- one row, in a fresh process
def build(row: str, shape, seed: int):
    """The model of one row, ready to train, and what training it needs."""
    import tinylora
    from tinylora.lora import apply_lora
    from tinylora.methods.lora_fa import apply_lora_fa
    from tinylora.methods.qlora import quantize_model

    from .tinylora_contender import build_model

    method, checkpoint, chunk = ROWS[row]
    if shape.name == TEACHING:
        from tinylora.model.load import load_model

        tinylora.manual_seed(seed)
        model, _ = load_model(TEACHING)
    else:
        model = build_model(shape, "cpu", seed)
    if method == "qlora":
        quantize_model(model, "nf4", double_quant=True, compute_dtype="bfloat16")
    if method in ("lora", "qlora"):
        apply_lora(model, r=RANK, alpha=RANK, targets=("q", "v"))
    elif method == "lora-fa":
        apply_lora_fa(model, r=RANK, alpha=RANK, targets=("q", "v"))
    model.enable_memory_levers(checkpoint_activations=checkpoint, loss_chunk_size=chunk)
    model.train()
    return model


def batches(shape, steps: int, seed: int):
    """(train batches, validation batches): the E2E-style task at the teaching size, random tokens otherwise."""
    if shape.name != TEACHING:
        from .shapes import make_batch

        return [make_batch(shape, seed)] * steps, []
    from tinylora.cli.demo import _datasets
    from tinylora.tokenizers import ByteTokenizer
    from tinylora.train.loop import batch_for_step, eval_batches

    tokenizer = ByteTokenizer()
    train_set, val_set = _datasets(tokenizer, shape.block_size)
    train = [_pad(*batch_for_step(train_set, shape.batch, seed, step), shape.seq, tokenizer.eot_id)
             for step in range(steps)]
    return train, eval_batches(val_set, 16, 2)


def _pad(x, y, length: int, pad_id: int):
    """Pad a batch of pairs to the full `length` (x: the end token, y: ignored), so every step is B x T."""
    import numpy as np

    xs = np.full((x.shape[0], length), pad_id, dtype=np.int64)
    ys = np.full((x.shape[0], length), -100, dtype=np.int64)
    xs[:, : x.shape[1]], ys[:, : y.shape[1]] = x, y
    return xs, ys


def run_row(row: str, shape, steps: int, seed: int) -> dict:
    from tinylora import tensor
    from tinylora.engine.backend import memory
    from tinylora.methods.qlora import weight_report
    from tinylora.optim import AdamW
    from tinylora.train.loop import evaluate

    from . import analytic, procmem

    method, checkpoint, chunk = ROWS[row]
    train, val = batches(shape, steps, seed)
    # import everything building needs first, so that the RSS growth measured below is the model alone
    import tinylora.methods.lora_fa  # noqa: F401
    import tinylora.model.load  # noqa: F401
    from tinylora.quant.linear import resolve_compute_dtype

    from . import tinylora_contender  # noqa: F401

    if method == "qlora":
        resolve_compute_dtype("bfloat16")  # loads ml_dtypes
    gc.collect()
    rss_start = procmem.rss_bytes()
    model = build(row, shape, seed)
    gc.collect()
    rss_built = procmem.rss_bytes()
    report = weight_report(model)
    optimizer = AdamW([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=LR[method])
    val_before = evaluate(model, val) if val else None
    xs = [(tensor(x, device=model.device), tensor(y, device=model.device)) for x, y in train]
    gc.collect()
    baseline = procmem.reset_peak()
    memory.reset_peak()
    times, losses = [], []
    for x, y in xs:
        start = time.perf_counter()
        loss = model(x, y)[1]  # drop the logits at once (a name holding them would keep (N, V) alive)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        del loss
        times.append(time.perf_counter() - start)
    step_peak = procmem.peak_bytes() - baseline
    stats = memory.stats()
    split = dict(stats["peak_split"])
    constants = report["constants"]
    tagged = {"weights": split.pop("parameters") - constants, "quantization constants": constants, **split}
    model_min = analytic.memory_model(shape, method, RANK, checkpoint=checkpoint, chunk=chunk)
    weights = rss_built - rss_start
    analytic_total = model_min["weights"] + model_min["peak_above_weights"]
    return {
        "row": row, "method": method, "checkpoint": checkpoint, "chunk": chunk, "rank": RANK if method != "full" else None,
        "steps": steps,
        "weights_rss_bytes": weights,
        "step_peak_bytes": step_peak,
        "peak_above_start_bytes": weights + step_peak,
        "tagged_peak_bytes": stats["peak"],
        "tagged_peak_split": tagged,
        "weight_report": report,
        "analytic": model_min,
        "analytic_total_bytes": analytic_total,
        "ratio_to_analytic": (weights + step_peak) / analytic_total,
        "step_ratio_to_analytic": step_peak / model_min["peak_above_weights"],
        "step_seconds": times,
        "median_step_seconds": common.median(times[1:] or times),
        "losses": losses,
        "val_loss_before": val_before,
        "val_loss_after": evaluate(model, val) if val else None,
        "trainable_parameters": sum(p.size for p in model.parameters() if p.requires_grad),
    }


# ---------------------------------------------------------------- the table, in the parent process
def spawn(argv: list, out: Path) -> dict:
    """Run one measurement in a fresh process (or reuse its result if `out` exists: see --workdir)."""
    if out.exists():
        print(f"  reusing {out}", flush=True)
        return json.loads(out.read_text())
    command = [sys.executable, "-m", *argv, "--out", str(out)]
    print("  $", " ".join(command[1:]), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def run_table(configs, steps: dict, threads: int, seed: int, peft: bool, workdir=None, assemble=False) -> dict:
    table = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = workdir or scratch
        os.makedirs(tmp, exist_ok=True)
        for config in configs:
            rows = []
            for row in ROWS:
                if assemble and not (Path(tmp) / f"{config}-{row}.json").exists():
                    print(f"  {config} {row}: not in {tmp}, left out", flush=True)
                    continue
                rows.append(spawn([MODULE, "--row", row, "--config", config, "--steps", str(steps[config]),
                                   "--threads", str(threads), "--seed", str(seed)], Path(tmp) / f"{config}-{row}.json"))
            if peft and config != TEACHING and not (assemble and not (Path(tmp) / f"{config}-peft.json").exists()):
                record = spawn(["benchmarks.memory", "--config", config, "--impl", "hf", "--method", "lora", "--rank",
                                str(RANK), "--threads", str(threads), "--steps", str(steps[config])],
                               Path(tmp) / f"{config}-peft.json")
                rows.append({"row": "HF + PEFT lora", "peft_record": record})
            table[config] = rows
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, contender=False)
    parser.add_argument("--row", choices=tuple(ROWS), default=None, help="measure one row (what the table spawns)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list (default {','.join(CONFIGS)})")
    parser.add_argument("--steps", type=int, default=None, help=f"steps per row (default: {DEFAULT_STEPS})")
    parser.add_argument("--no-peft", action="store_true", help="skip the HF + PEFT row")
    parser.add_argument("--workdir", default=None,
                        help="keep each row's JSON here and reuse the rows already there (to resume a long run)")
    parser.add_argument("--note", default=None, help="a sentence for the report (how this run was made)")
    parser.add_argument("--assemble", action="store_true",
                        help="with --workdir: only build the table from the rows already there (measure nothing)")
    args = common.parse_args(parser, argv)
    if args.row:
        shape = get_shape(args.config)
        result = run_row(args.row, shape, args.steps or DEFAULT_STEPS.get(shape.name, 3), args.seed)
        record = common.make_record("memory_table_row", args, MODULE, result, shape=shape.as_dict())
        common.write_result(record, args.out, f"memory_table__{shape.name}__{args.row}")
        return record

    configs = [c for c in args.configs.split(",") if c]
    steps = {c: args.steps or (DEFAULT_STEPS[TEACHING] if c == TEACHING else DEFAULT_STEPS["gpt2"]) for c in configs}
    load_before = os.getloadavg()[0]
    if args.assemble and not args.workdir:
        parser.error("--assemble needs --workdir (the folder holding the rows' JSON files)")
    table = run_table(configs, steps, args.threads, args.seed, peft=not args.no_peft, workdir=args.workdir,
                      assemble=args.assemble)
    record = common.make_record("memory_table", args, MODULE, {"configs": table},
                                load_average_before=load_before, load_average_after=os.getloadavg()[0],
                                note=args.note)
    out = Path(args.out) if args.out else common.RESULTS_DIR / "memory_table.json"
    common.write_result(record, str(out), "memory_table")
    from .memory_table_report import write_report

    md, png = write_report(record, out.with_suffix(".md"), out.with_suffix(".png"))
    print(md.read_text())
    print(f"wrote {out}, {md}, {png}")
    return record


if __name__ == "__main__":
    main()
