"""Stochastic gradient descent with optional momentum and L2 weight decay (PyTorch's formulation).

For a parameter θ with gradient g, learning rate lr, momentum μ and weight decay λ:

    g ← g + λ·θ                    (only when λ > 0: the gradient of the L2 penalty λ/2·‖θ‖²)
    v ← μ·v + g                    (only when μ > 0; v starts at 0, so v = g after the first step)
    θ ← θ − lr·v                   (θ − lr·g without momentum)

Only momentum needs state (v, one array per trainable parameter). Every line
runs in place on θ, v and a shared work buffer: a step allocates no new arrays.
"""

from __future__ import annotations

from tinylora.optim.optimizer import Optimizer


class SGD(Optimizer):
    """SGD(params, lr=1e-2, momentum=0.0, weight_decay=0.0); see the module docstring for the update."""

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def check_group(self, group: dict) -> None:
        super().check_group(group)
        if not 0.0 <= group["momentum"] < 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {group['momentum']}")

    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = p.device.xp
                g = p.grad.data  # read only: .grad itself is never changed
                buf = self.scratch(p)
                if wd:
                    xp.multiply(p.data, wd, out=buf)  # λ·θ
                    buf += g  # g + λ·θ
                    g = buf
                if momentum:
                    v = self.state_for(p, velocity=lambda: xp.zeros_like(p.data))["velocity"]
                    v *= momentum
                    v += g  # v ← μ·v + g
                    g = v
                xp.multiply(g, lr, out=buf)  # lr·v (buf may already hold g: fine elementwise)
                p.data -= buf  # θ ← θ − lr·v
