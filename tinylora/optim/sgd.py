"""Stochastic gradient descent, optionally with momentum (PyTorch's formulation).

    v <- momentum * v + g          (only when momentum > 0; v starts at 0, so v = g after one step)
    p <- p - lr * v                (or p - lr * g without momentum)

Updates are in place: no new arrays per step.
"""

from __future__ import annotations

from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"SGD: lr must be positive, got {lr}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if wd:
                    g = g + wd * p.data
                if momentum:
                    xp = p.device.xp
                    s = self.state_for(p, velocity=lambda: xp.zeros_like(p.data))
                    s["velocity"] *= momentum
                    s["velocity"] += g
                    g = s["velocity"]
                p.data -= lr * g
