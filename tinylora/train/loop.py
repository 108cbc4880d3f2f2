"""One training loop for full fine-tuning and for LoRA.

The loop does not know which it is running: it trains whatever parameters
have requires_grad=True. For LoRA that is only A and B (apply_lora froze the
rest), so the optimizer holds state for them alone and backward computes no
gradient for W0. Everything else is shared, and `train()` reads as:

    start = start_run(...)                    a fresh run folder, or the latest checkpoint's step
    for step in range(start, max_steps):
        x, y = batch for this step            (drawn with a seed made of (seed, step))
        row = train_step(...)                 forward, backward, clip the global gradient norm,
                                              AdamW step, learning-rate schedule step
        every eval_every steps: validation loss;  log the row;  every checkpoint_every steps: a checkpoint

Batches depend only on (seed, step), and checkpoints hold the optimizer,
scheduler and RNG state and the run's thread plan (how many threads each matrix
product gets, fixed for the whole run: engine/backend/threads.py), so a run
resumed from a checkpoint ends with exactly the weights of a run that was never
interrupted, whatever the machine's load. A resume is refused if any setting
that changes the result differs from the checkpoint's (check_same_run).

Nothing non-finite is ever applied or saved: a step whose loss or gradient norm
is NaN/inf is not applied, and training stops (NonFiniteError) with the run
folder's latest.json still naming the last checkpoint, which is finite.

Metrics go to `run_dir/metrics.jsonl` (one strict JSON object per line) and a
loss-curve PNG (if matplotlib is installed).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from tinylora.train import distributed
from tinylora.engine.backend import memory, synchronize, threads, tune_for_training
from tinylora.engine.tensor import tensor
from tinylora.io import NonFiniteError, read_json, require_fields, write_json_atomic
from tinylora.nn.module import evaluating
from tinylora.optim import AdamW, LRScheduler, clip_grad_norm_
from tinylora.train import checkpoint as ckpt

# The default peak learning rates of the `tinylora` command, the demo and the tutorials (one place).
# Measured on the E2E-style task from base-mini (README, "Learning rates"):
LORA_LR = 3e-2  # LoRA on W_q, W_v (the paper's targets; `tinylora finetune`'s default)
FULL_LR = 1e-3
# LoRA on every Linear of a block (9x the parameters of q,v at the same r) prefers a smaller rate: the rate
# of the near-task runs (benchmarks/near_task.py) and of the demo's LoRA
LORA_EVERY_LINEAR_LR = 1e-2


@dataclass
class TrainConfig:
    """Settings of one training run. `tinylora pretrain`/`finetune` set each field with the flag of the same
    name (--max-steps for max_steps, --min-lr-ratio, --log-every); --no-progress sets progress=False."""

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
    progress: bool = True  # a progress bar on a terminal; elsewhere a line every log_every steps
    log_every: int = 0  # 0: about ten lines per run

    def __post_init__(self):
        positive = ("max_steps", "batch_size", "eval_every", "eval_batches")
        wrong = [f"{name} must be a positive integer, got {getattr(self, name)!r}" for name in positive
                 if not _is_int(getattr(self, name)) or getattr(self, name) < 1]
        wrong += [f"{name} must be an integer >= 0, got {getattr(self, name)!r}"
                  for name in ("warmup_steps", "checkpoint_every", "log_every", "seed")
                  if not _is_int(getattr(self, name)) or getattr(self, name) < 0]
        if not (_is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            wrong.append(f"lr must be a positive finite number, got {self.lr!r}")
        if not (_is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            wrong.append(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (_is_real(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1):
            wrong.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and not (_is_real(self.grad_clip) and math.isfinite(self.grad_clip)
                                               and self.grad_clip > 0):
            wrong.append(f"grad_clip must be a positive finite number or None, got {self.grad_clip!r}")
        if self.schedule not in ("cosine", "linear", "constant"):
            wrong.append(f"schedule must be 'cosine', 'linear' or 'constant', got {self.schedule!r}")
        if wrong:
            raise ValueError("TrainConfig: " + "; ".join(wrong))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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


def evaluate(model, batches) -> float:
    """Mean loss per target token over `batches`, in eval mode, without building a graph."""
    if not batches:
        return float("nan")
    total, count = 0.0, 0
    with evaluating(model):  # every module's mode comes back afterwards
        for x, y in batches:
            _, loss = model(tensor(x, device=model.device), tensor(y, device=model.device))
            n = int((y != -100).sum())
            total += loss.item() * n
            count += n
    return total / max(count, 1)


# ------------------------------------------------------------------ one run's settings
# training settings that decide which weights a run ends with: a resumed run must use the checkpoint's
SAME_RUN_FIELDS = ("max_steps", "batch_size", "lr", "weight_decay", "warmup_steps", "schedule", "min_lr_ratio",
                   "grad_clip", "seed")
RECORD_ONLY = ("data", "base")  # recorded in `setup` for people to read; their content hashes are compared


def run_record(config: TrainConfig, setup: dict | None) -> dict:
    """What a run folder records about its run: the TrainConfig and the caller's `setup`.

    `setup` holds the result-affecting settings the loop cannot see: the method, LoRA's rank,
    alpha, dropout, targets and layers, the data and base model and their content hashes,
    the validation fraction (the `tinylora` command fills it in).
    """
    return {"config": asdict(config), "setup": dict(setup or {})}


def check_same_run(saved: dict | None, record: dict, where) -> None:
    """Refuse to resume a checkpoint saved with other settings (the result would silently differ).

    saved: the checkpoint's record ({"config": ..., "setup": ...}; older ones hold the config alone).
    Every difference is listed, the saved values first.
    """
    if not saved:
        return  # a checkpoint written outside train(): nothing to compare
    saved_config = saved.get("config", {})
    differ = [(f, saved_config[f], record["config"][f]) for f in SAME_RUN_FIELDS
              if f in saved_config and saved_config[f] != record["config"][f]]
    if "setup" in saved:
        old, new = saved["setup"], record["setup"]
        differ += [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                   if k not in RECORD_ONLY and _jsonable(old.get(k)) != _jsonable(new.get(k))]
    if differ:
        was = ", ".join(f"{name}={_short(value)}" for name, value, _ in differ)
        now = ", ".join(f"{name}={_short(value)}" for name, _, value in differ)
        raise ValueError(f"cannot resume from {where}: it was trained with {was}, this run has {now}; "
                         "resume with the same settings, or start again with --overwrite or in another folder")


def _jsonable(value):
    return json.loads(json.dumps(value))  # tuples become lists, as they are after a round trip through JSON


def _short(value) -> str:
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[:19]  # sha256: and 12 hex digits are enough to tell two contents apart in a message
    return repr(value)


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


def start_run(run_dir, model, optimizer, scheduler, record: dict, resume: bool, overwrite: bool,
              dp=None, method_state=None) -> int:
    """Prepare `run_dir` and return the step to start from (0, or the resumed checkpoint's step).

    resume: load the latest checkpoint if there is one (refused if its settings differ).
    Otherwise a folder holding an earlier run is refused (FileExistsError) unless `overwrite`,
    which first deletes what that run wrote. The run's record goes to run_dir/run.json.
    """
    if not run_dir:
        return 0
    latest = ckpt.latest_checkpoint(run_dir) if resume else None
    if latest:
        state_path = os.path.join(latest, "state.json")
        extra = require_fields(read_json(state_path), state_path, {"extra": dict})["extra"]
        check_same_run(extra.get("run", extra), record, latest)  # checkpoints before run.json kept {"config"}
        (dp or distributed.current()).check_resume(extra.get("ranks"))  # the same number of MPI ranks
        if method_state is not None:
            ckpt.load_method_state(latest, method_state)
        return ckpt.load_checkpoint(latest, model, optimizer, scheduler)["step"]
    if (dp or distributed.current()).is_writer:  # under MPI only rank 0 touches the folder
        ckpt.claim_run_dir(run_dir, overwrite=overwrite or resume)
        write_json_atomic(os.path.join(run_dir, ckpt.RUN_RECORD), record)
    return 0


def saved_thread_plan(run_dir, start: int) -> dict | None:
    """The thread plan recorded by the checkpoint a run resumes from (None: a new run, or an older
    checkpoint that recorded none; then the plan is measured afresh)."""
    if not run_dir or start == 0:
        return None
    path = os.path.join(ckpt.latest_checkpoint(run_dir), "state.json")
    plan = read_json(path)["extra"].get("threads")
    return None if plan is None else threads.check_plan(plan, where=path)


# ------------------------------------------------------------------ one step
def train_step(model, batch, optimizer, scheduler, trainable, config: TrainConfig, step: int, dp=None,
               extra_loss=None, after_step=None) -> dict:
    """Forward, backward, clip, AdamW and schedule step on `batch`; returns the step's metrics row.

    A NaN/inf loss or gradient norm is refused before the update is applied (NonFiniteError):
    the weights and the optimizer stay as the previous step left them.
    """
    device = model.device
    t0 = time.perf_counter()
    dp = dp or distributed.current()
    x, y = dp.shard(*batch)  # this rank's rows (all of them in one process)
    loss = model(tensor(x, device=device), tensor(y, device=device))[1]  # drop the logits at once: backward
    if extra_loss is not None:                                             # needs only what the graph saved
        loss = loss + extra_loss(model)
    optimizer.zero_grad()
    loss.backward()
    targets = int((y != -100).sum())
    dp.average_gradients(trainable, targets)  # the global batch's gradient on every rank
    loss_value = dp.global_mean(loss.item(), targets)
    del loss
    grad_norm = clip_grad_norm_(trainable, config.grad_clip or math.inf)  # inf: measure the norm, clip nothing
    if not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
        raise NonFiniteError(f"step {step + 1}: the loss is {loss_value:.4g} and the gradient norm {grad_norm:.4g}, "
                             "so the step was not applied")
    lr = scheduler.lr  # the learning rate this step uses (scheduler.step() sets the next one)
    optimizer.step()
    if after_step is not None:
        after_step(step + 1)
    scheduler.step()
    synchronize(device)  # wait for the GPU, so the step time is honest
    seconds = time.perf_counter() - t0
    return {"step": step + 1, "loss": loss_value, "lr": lr, "seconds": seconds, "tokens_per_s": x.size / seconds,
            "memory_mib": memory.total() / 2**20, "grad_norm": grad_norm}


def validate(model, batches, step: int) -> float:
    """evaluate(), refusing a NaN/inf validation loss (the weights after `step` are no longer usable)."""
    loss = evaluate(model, batches)
    if not math.isfinite(loss):
        raise NonFiniteError(f"after step {step} the validation loss is {loss} (the weights overflowed), "
                             "so nothing was saved")
    return loss


def _stopped(err: NonFiniteError, run_dir, config: TrainConfig) -> NonFiniteError:
    """The one line a diverged run ends with: what happened, what is kept, what to try."""
    latest = ckpt.latest_checkpoint(run_dir) if run_dir else None
    kept = (f"{latest} (named by latest.json) holds the last finite weights" if latest
            else "no checkpoint was written")
    return NonFiniteError(f"training stopped: {err}; {kept}. Try a smaller learning rate "
                          f"(--lr, now {config.lr:g}), a warm-up (--warmup-steps) or gradient clipping (--grad-clip)")


# ------------------------------------------------------------------ the loop
def train(model, train_data, val_data=None, config: TrainConfig | None = None, run_dir=None,
          resume: bool = False, setup: dict | None = None, overwrite: bool = False, param_groups=None,
          extra_loss=None, after_step=None, method_state=None) -> TrainResult:
    """Train `model`'s trainable parameters on `train_data`; see the module docstring.

    train_data / val_data: a TextDataset or PairDataset (tinylora.data).
    run_dir: where metrics, checkpoints and the loss plot go (None: nowhere). A folder that
        holds an earlier run is refused unless `resume` or `overwrite` (which clears it first).
    resume: continue from run_dir's latest checkpoint if there is one. Its training settings
        (SAME_RUN_FIELDS) and `setup` must equal this run's, or a ValueError lists every difference.
    setup: the result-affecting settings the loop cannot see (run_record), recorded and compared.
    Hooks for methods that change the optimizer or the step (tinylora.methods; None: plain training):
    param_groups: AdamW groups to use (LoRA+'s learning rates); extra_loss(model): a Tensor added to
    the loss that is differentiated (AdaLoRA's orthogonality term; the logged loss includes it);
    after_step(step): called after each optimizer step while the gradients are alive (AdaLoRA's allocator);
    method_state: an object with state_dict()/load_state_dict() kept in every checkpoint (that allocator).
    Under `mpiexec -n N` each rank trains on its rows of every batch (train/distributed.py); rank 0 writes.
    Raises NonFiniteError (one line, the run folder intact) when a step's loss or gradient is NaN/inf.
    """
    config = config or TrainConfig()
    tune_for_training()  # the allocator and thread settings for training, once per process (engine/backend/tuning.py)
    dp = distributed.current()  # one process, or one rank of `mpiexec -n N`
    optimizer, scheduler = make_optimizer(model, config, param_groups)
    trainable = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(trainable=sum(p.size for p in trainable))
    val = eval_batches(val_data, config.batch_size, config.eval_batches, config.seed)
    record = run_record(config, setup)

    start = start_run(run_dir, model, optimizer, scheduler, record, resume, overwrite, dp, method_state)
    dp.start(start)  # under MPI: every rank starts here, and one that exits before finish() stops the job
    # each product's thread count, fixed for the run (MPI ranks take the limit, so that they all agree)
    plan = threads.fix_plan(saved_thread_plan(run_dir, start), measure=dp.size == 1)
    saved_extra = {"run": record, "ranks": dp.size, "threads": plan}
    log = _MetricsLog(run_dir if dp.is_writer else None, resume_step=start)
    progress = _Progress(config, start) if dp.is_writer else None
    hooks = {"dp": dp, "extra_loss": extra_loss, "after_step": after_step}
    try:
        if start == 0 and val:
            result.val_loss_before = validate(model, val, 0)
            log.write({"step": 0, "val_loss": result.val_loss_before})
        model.train()
        memory.reset_peak()
        for step in range(start, config.max_steps):
            batch = batch_for_step(train_data, config.batch_size, config.seed, step)
            row = train_step(model, batch, optimizer, scheduler, trainable, config, step, **hooks)
            result.step_times.append(row["seconds"])
            if val and (row["step"] % config.eval_every == 0 or row["step"] == config.max_steps):
                row["val_loss"] = validate(model, val, row["step"])
            log.write(row)
            if progress is not None:
                progress.update(row)
            result.history.append(row)
            if run_dir and dp.is_writer and config.checkpoint_every and row["step"] % config.checkpoint_every == 0:
                ckpt.save_checkpoint(run_dir, row["step"], model, optimizer, scheduler, saved_extra, method_state)
        stats = memory.stats()
        result.peak_bytes, result.peak_split = stats["peak"], stats["peak_split"]
        result.val_loss_after = evaluate(model, val) if val else None
    except NonFiniteError as err:
        raise _stopped(err, run_dir, config) from None
    finally:
        threads.release_plan()  # products follow the load again
        if progress is not None:
            progress.close()
    dp.finish()

    if run_dir and dp.is_writer:
        trained = start < config.max_steps  # False when resuming a finished run: its checkpoint is there
        if trained and (not config.checkpoint_every or config.max_steps % config.checkpoint_every):
            ckpt.save_checkpoint(run_dir, config.max_steps, model, optimizer, scheduler, saved_extra, method_state)
        from tinylora.train.plot import plot_losses

        plot_losses(os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "loss.png"))
    return result


class _MetricsLog:
    """Appends one JSON object per line to run_dir/metrics.jsonl (does nothing without a run_dir).

    A new run starts the file afresh. A run resumed at step k keeps the rows of
    steps <= k and drops the later ones: those steps ran after the checkpoint,
    were lost with the interruption, and are about to be run again. Lines are
    strict JSON: a value that is not a finite number is written as null.
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
            clean = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in row.items()}
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(clean, allow_nan=False) + "\n")
            except OSError as err:  # a full disk: say which file, in one line
                raise OSError(err.errno, f"cannot write {self.path}: {err.strerror}") from err


def _step_of(line: str) -> float:
    """The "step" of one metrics.jsonl line; infinity (so it is dropped) for a line cut short by a crash."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


class _Progress:
    """A tqdm bar when stderr is a terminal; otherwise (a log file, a pipe, a notebook's
    captured output) one line every `log_every` steps, so a long run is never silent."""

    def __init__(self, config: TrainConfig, start: int):
        self.bar, self.every, self.total = None, 0, config.max_steps
        if not config.progress:
            return
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=config.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)
        else:
            self.every = config.log_every or max(1, config.max_steps // 10)

    def update(self, row: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:.0f}",
                                 mem=f"{row['memory_mib']:.0f}MiB", refresh=False)
            self.bar.update(1)
        elif self.every and (row["step"] % self.every == 0 or row["step"] == self.total):
            val = f"  val_loss {row['val_loss']:.4f}" if "val_loss" in row else ""
            print(f"step {row['step']}/{self.total}  loss {row['loss']:.4f}{val}  lr {row['lr']:.2e}  "
                  f"{row['seconds']:.2f} s/step  {row['memory_mib']:.0f} MiB", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
