"""One training loop for full fine-tuning and for LoRA.

The loop does not know which it is running: it trains whatever parameters
have requires_grad=True. For LoRA that is only A and B (apply_lora froze the
rest), so the optimizer holds state for them alone and backward computes no
gradient for W0. Everything else is shared:

    for step in range(start, max_steps):
        x, y = batch for this step           (drawn with a seed made of (seed, step))
        loss = model(x, y)                    forward
        loss.backward()                       gradients of the trainable parameters only
        clip the global gradient norm; AdamW step; learning-rate schedule step
        every eval_every steps: validation loss; every checkpoint_every steps: a checkpoint

Batches depend only on (seed, step), and checkpoints hold the optimizer,
scheduler and RNG state, so a run resumed from a checkpoint ends with exactly
the weights of a run that was never interrupted.

Metrics go to `run_dir/metrics.jsonl` (one JSON object per line) and a
loss-curve PNG (if matplotlib is installed).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tinylora.train import checkpoint as ckpt
from tinylora.train import distributed
from tinylora.engine.autograd import no_grad
from tinylora.engine.backend import memory, synchronize
from tinylora.io import read_json
from tinylora.optim import AdamW, LRScheduler, clip_grad_norm_
from tinylora.engine.tensor import tensor


@dataclass
class TrainConfig:
    """Settings of one training run. `tinylora pretrain`/`finetune` set most fields with the flag of the same
    name (--max-steps for max_steps); min_lr_ratio has no flag, and --no-progress sets progress=False."""

    max_steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "cosine"  # "cosine", "linear" or "constant" after the warm-up
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    eval_every: int = 50
    eval_batches: int = 8
    checkpoint_every: int = 0  # 0: one checkpoint at the end (if run_dir is given)
    seed: int = 0
    progress: bool = True  # a tqdm progress bar


@dataclass
class TrainResult:
    """What a run measured."""

    history: list = field(default_factory=list)  # one dict per evaluation / log point
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    step_times: list = field(default_factory=list)  # seconds per step
    peak_bytes: int = 0  # peak bytes of live tensor data during training (tinylora.engine.backend.memory)
    peak_split: dict = field(default_factory=dict)  # that peak by category
    trainable: int = 0  # number of trainable parameters

    @property
    def median_step_time(self) -> float:
        times = self.step_times[1:] or self.step_times  # the first step pays for allocations
        return float(np.median(times)) if times else float("nan")


# ------------------------------------------------------------------ batches
def batch_for_step(dataset, batch_size: int, seed: int, step: int):
    """The training batch (x, y) of `step`: a function of (seed, step) alone, so resuming is exact."""
    rng = np.random.default_rng([seed, step])
    if hasattr(dataset, "starts"):  # a TextDataset: random windows of running text
        return dataset.get_batch(batch_size, rng)
    indices = rng.integers(0, len(dataset), size=batch_size)  # a PairDataset: random examples
    return dataset.get_batch(indices)


def eval_batches(dataset, batch_size: int, n_batches: int, seed: int = 0) -> list:
    """A fixed list of validation batches (the same at every evaluation, so losses are comparable)."""
    if dataset is None:
        return []
    if hasattr(dataset, "starts"):
        rng = np.random.default_rng([seed, 10**9])
        return [dataset.get_batch(batch_size, rng) for _ in range(n_batches)]
    order = np.arange(min(len(dataset), batch_size * n_batches))  # the first examples, in order
    return [dataset.get_batch(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]


def model_device(model):
    return next(iter(model.parameters())).device


def evaluate(model, batches) -> float:
    """Mean loss per target token over `batches`, in eval mode, without building a graph."""
    if not batches:
        return float("nan")
    device = model_device(model)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with no_grad():
        for x, y in batches:
            _, loss = model(tensor(x, device=device), tensor(y, device=device))
            n = int((y != -100).sum())
            total += loss.item() * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


# ------------------------------------------------------------------ the loop
# settings that decide which weights a run ends with: a resumed run must use the checkpoint's values
SAME_RUN_FIELDS = ("max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio",
                   "grad_clip", "seed")


def check_same_run(saved: dict | None, config: TrainConfig, where) -> None:
    """Refuse to resume a checkpoint saved with other training settings (the result would silently differ)."""
    if not saved:
        return  # a checkpoint written outside train(): nothing to compare
    differ = [f for f in SAME_RUN_FIELDS if f in saved and saved[f] != getattr(config, f)]
    if differ:
        was = ", ".join(f"{f}={saved[f]!r}" for f in differ)
        now = ", ".join(f"{f}={getattr(config, f)!r}" for f in differ)
        raise ValueError(f"cannot resume from {where}: it was trained with {was}, this run has {now}; "
                         "resume with the same settings, or start a new run folder")


def make_optimizer(model, config: TrainConfig, param_groups=None):
    """AdamW over the trainable parameters, by name (so checkpoints map state back by name).

    param_groups: optional AdamW parameter groups of (name, parameter) pairs to use instead (LoRA+'s).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("nothing to train: every parameter is frozen")
    optimizer = AdamW(param_groups or named, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = LRScheduler(
        optimizer, warmup_steps=config.warmup_steps, total_steps=config.max_steps,
        kind=config.schedule, min_lr_ratio=config.min_lr_ratio,
    )
    return optimizer, scheduler


def train(model, train_data, val_data=None, config: TrainConfig | None = None, run_dir=None,
          resume: bool = False, param_groups=None, extra_loss=None, after_step=None) -> TrainResult:
    """Train `model`'s trainable parameters on `train_data`; see the module docstring.

    train_data / val_data: a TextDataset or PairDataset (tinylora.data).
    run_dir: where metrics, checkpoints and the loss plot go (None: nowhere).
    resume: continue from run_dir's latest checkpoint if there is one. The checkpoint's
        training settings (SAME_RUN_FIELDS) must equal `config`'s, or a ValueError says which differ.
    Hooks for methods that change the optimizer or the step (tinylora.methods; None: plain training):
    param_groups: AdamW groups to use (LoRA+'s learning rates); extra_loss(model): a Tensor added to
    the loss that is differentiated (AdaLoRA's orthogonality term; the logged loss includes it);
    after_step(step): called after each optimizer step while the gradients are alive (AdaLoRA's allocator).
    """
    config = config or TrainConfig()
    device = model_device(model)
    dp = distributed.current()  # one process, or one rank of `mpiexec -n N` (train/distributed.py)
    optimizer, scheduler = make_optimizer(model, config, param_groups)
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(trainable=sum(p.size for p in trainable))
    val = eval_batches(val_data, config.batch_size, config.eval_batches, config.seed)

    start = 0
    latest = ckpt.latest_checkpoint(run_dir) if resume and run_dir else None
    if latest:
        check_same_run(read_json(os.path.join(latest, "state.json"))["extra"].get("config"), config, latest)
        dp.check_resume(read_json(os.path.join(latest, "state.json"))["extra"].get("ranks"))
        start = ckpt.load_checkpoint(latest, model, optimizer, scheduler)["step"]
    log = _MetricsLog(run_dir if dp.is_writer else None, resume_step=start)
    if start == 0:
        result.val_loss_before = evaluate(model, val)
        log.write({"step": 0, "val_loss": result.val_loss_before})

    bar = _progress(config, start) if dp.is_writer else None
    model.train()
    memory.reset_peak()
    for step in range(start, config.max_steps):
        t0 = time.perf_counter()
        x, y = dp.shard(*batch_for_step(train_data, config.batch_size, config.seed, step))  # this rank's rows
        loss = model(tensor(x, device=device), tensor(y, device=device))[1]  # drop the logits at once: backward
        if extra_loss is not None:                                             # needs only what the graph saved
            loss = loss + extra_loss(model)
        optimizer.zero_grad()
        loss.backward()
        dp.average_gradients(trainable, int((y != -100).sum()))  # the global batch's gradient on every rank
        grad_norm = clip_grad_norm_(trainable, config.grad_clip) if config.grad_clip else None
        lr = scheduler.lr  # the learning rate this step uses (scheduler.step() sets the next one)
        optimizer.step()
        if after_step is not None:
            after_step(step + 1)
        scheduler.step()
        loss_value = dp.global_mean(loss.item(), int((y != -100).sum()))  # .item() also waits for the GPU
        del loss
        synchronize(device)
        seconds = time.perf_counter() - t0
        result.step_times.append(seconds)
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"step {step + 1}: the loss is {loss_value}; try a smaller --lr")

        done = step + 1
        row = {"step": done, "loss": loss_value, "lr": lr, "seconds": seconds,
               "tokens_per_s": x.size / seconds, "memory_mib": memory.total() / 2**20}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        if val and (done % config.eval_every == 0 or done == config.max_steps):
            row["val_loss"] = evaluate(model, val)
        log.write(row)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{row['tokens_per_s']:.0f}",
                            mem=f"{row['memory_mib']:.0f}MiB", refresh=False)
            bar.update(1)
        if run_dir and dp.is_writer and config.checkpoint_every and done % config.checkpoint_every == 0:
            ckpt.save_checkpoint(run_dir, done, model, optimizer, scheduler, {"config": asdict(config), "ranks": dp.size})
        result.history.append(row)

    if bar is not None:
        bar.close()
    stats = memory.stats()
    result.peak_bytes, result.peak_split = stats["peak"], stats["peak_split"]
    result.val_loss_after = evaluate(model, val) if val else None
    if run_dir and dp.is_writer:
        trained = start < config.max_steps  # False when resuming a finished run: its checkpoint is there
        if trained and (not config.checkpoint_every or config.max_steps % config.checkpoint_every):
            ckpt.save_checkpoint(run_dir, config.max_steps, model, optimizer, scheduler,
                                 {"config": asdict(config), "ranks": dp.size})
        from tinylora.train.plot import plot_losses

        plot_losses(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "loss.png"))
    return result


class _MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl (does nothing without a run_dir).

    A new run starts the file afresh. A run resumed at step k keeps the rows of
    steps <= k and drops the later ones: those steps ran after the checkpoint,
    were lost with the interruption, and are about to be run again.
    """

    def __init__(self, run_dir, resume_step: int = 0):
        self.path = None
        if run_dir:
            os.makedirs(run_dir, exist_ok=True)
            self.path = os.path.join(run_dir, "metrics.jsonl")
            kept = []
            if resume_step and os.path.exists(self.path):
                with open(self.path, encoding="utf-8") as f:
                    kept = [line for line in f if _step_of(line) <= resume_step]
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(kept)

    def write(self, row: dict) -> None:
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def _step_of(line: str) -> float:
    """The "step" of one metrics.jsonl line; infinity (so it is dropped) for a line cut short by a crash."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _progress(config: TrainConfig, start: int):
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar when the output is not a terminal (a log file gets no hundreds of redraws)
    return tqdm(total=config.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True, disable=None)
