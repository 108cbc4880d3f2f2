"""Learning-rate schedules: linear warm-up, then cosine, linear or no decay.

Step t counts the optimizer steps already taken (t = 0 is the first update).
With W warm-up steps, T total steps, peak learning rate lr and minimum
lr_min = min_lr_ratio · lr:

    0 ≤ t < W     lr_t = lr · (t + 1) / W                 ramps up to lr at t = W − 1
    W ≤ t < T     lr_t = lr_min + (lr − lr_min) · d(p)    with progress p = (t − W) / (T − W)
    t ≥ T         lr_t = lr_min

    kind="cosine"    d(p) = (1 + cos(π·p)) / 2
    kind="linear"    d(p) = 1 − p
    kind="constant"  d(p) = 1, and lr_t = lr for every t ≥ W (min_lr_ratio is not used)

Warm-up starts at lr/W rather than 0, so the first step is not wasted.
"""

from __future__ import annotations

import math
import operator

KINDS = ("cosine", "linear", "constant")


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, kind: str = "cosine",
          min_lr_ratio: float = 0.0) -> float:
    """The learning rate for step `step` (0-based), as in the module docstring."""
    step, warmup_steps, total_steps = (operator.index(n) for n in (step, warmup_steps, total_steps))
    _check(warmup_steps, total_steps, kind, min_lr_ratio)
    if step < 0:
        raise ValueError(f"lr_at: step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant":
        return base_lr
    min_lr = min_lr_ratio * base_lr
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    decay = (1.0 + math.cos(math.pi * progress)) / 2.0 if kind == "cosine" else 1.0 - progress
    return min_lr + (base_lr - min_lr) * decay


def _check(warmup_steps: int, total_steps: int, kind: str, min_lr_ratio: float) -> None:
    if kind not in KINDS:
        raise ValueError(f"learning-rate schedule: unknown kind '{kind}', choose one of {', '.join(KINDS)}")
    if warmup_steps < 0:
        raise ValueError(f"learning-rate schedule: warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps < warmup_steps:
        raise ValueError(f"learning-rate schedule: total_steps ({total_steps}) is less than "
                         f"warmup_steps ({warmup_steps})")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"learning-rate schedule: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")


class LRScheduler:
    """Sets every parameter group's lr to `lr_at(t, that group's base lr, ...)`.

    The base lr of each group is its lr when the scheduler is made, so groups
    keep their ratios. Making the scheduler sets the lr for step 0; call
    `step()` after each `optimizer.step()`:

        sched = LRScheduler(opt, warmup_steps=100, total_steps=1000, kind="cosine")
        for batch in data:
            loss = model(batch); loss.backward()
            opt.step(); opt.zero_grad(); sched.step()
    """

    def __init__(self, optimizer, warmup_steps: int, total_steps: int, kind: str = "cosine",
                 min_lr_ratio: float = 0.0):
        _check(operator.index(warmup_steps), operator.index(total_steps), kind, min_lr_ratio)
        self.optimizer = optimizer
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
        self.kind, self.min_lr_ratio = kind, float(min_lr_ratio)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.t = 0  # optimizer steps taken so far
        self._apply()

    def _apply(self) -> None:
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr_at(self.t, base_lr, self.warmup_steps, self.total_steps, self.kind, self.min_lr_ratio)

    def step(self) -> None:
        """Advance one step and set the learning rate the next optimizer step will use."""
        self.t += 1
        self._apply()

    @property
    def lr(self) -> float:
        """The first group's current learning rate (what a training log usually shows)."""
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        """JSON-able: the step count and base learning rates (the schedule's settings are constructor arguments)."""
        return {"t": self.t, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        """Resume at the saved step; sets the groups' lr accordingly."""
        if len(state["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"LRScheduler.load_state_dict: {len(state['base_lrs'])} base lrs saved, "
                             f"but the optimizer has {len(self.optimizer.param_groups)} parameter groups")
        self.t = int(state["t"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self._apply()
