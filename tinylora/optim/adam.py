"""Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019), as PyTorch computes them.

For a parameter θ with gradient g at step t = 1, 2, ... (counted per parameter):

    m ← β1·m + (1 − β1)·g              first moment, m starts at 0
    v ← β2·v + (1 − β2)·g²             second moment (elementwise square), v starts at 0
    m̂ = m / (1 − β1^t)                 bias correction: m and v start at 0, so early
    v̂ = v / (1 − β2^t)                 averages are too small by exactly these factors
    θ ← θ − lr · m̂ / (√v̂ + ε)

Weight decay λ differs between the two:

    Adam   L2 penalty in the gradient:  g ← g + λ·θ before the moments (so Adam rescales it)
    AdamW  decoupled decay:             θ ← θ·(1 − lr·λ) before the update above

AdamW by default does not decay parameters with fewer than 2 dimensions
(biases, LayerNorm weights): pulling a LayerNorm gain towards 0 is not
regularisation, it changes what the layer computes. Pass decay_1d=True to
decay every parameter, as torch.optim.AdamW does.
With LoRA, A and B are matrices, so they are decayed either way.

State per trainable parameter: m and v (same shape as θ) and the step count t.
Everything is updated in place with the help of one shared work buffer (on NumPy and CuPy
arrays the same lines run block by block, in engine/kernels/adam.py).
"""

from __future__ import annotations

import math

from tinylora.engine import kernels
from tinylora.engine.kernels import adam as fast
from tinylora.optim.optimizer import Optimizer


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0): L2 weight decay."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def check_group(self, group: dict) -> None:
        super().check_group(group)
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"{type(self).__name__}: betas must be in [0, 1), got {group['betas']}")
        if not group["eps"] > 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {group['eps']}")

    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, group)

    def update(self, p, group: dict) -> None:
        """One Adam step for one parameter, with the L2 penalty folded into the gradient."""
        g = p.grad.data  # read only: .grad itself is never changed
        wd = group["weight_decay"]
        if wd:
            g = p.device.xp.multiply(p.data, wd, out=self.scratch(p, slot=1))  # λ·θ
            g += p.grad.data  # g + λ·θ
        self.adam_update(p, g, group)

    def adam_update(self, p, g, group: dict) -> None:
        """θ ← θ − lr · m̂ / (√v̂ + ε), in place, for one parameter with gradient array `g`."""
        xp = p.device.xp
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        s = self.state_for(p, step=lambda: 0, m=lambda: xp.zeros_like(p.data), v=lambda: xp.zeros_like(p.data))
        s["step"] += 1
        t, m, v = s["step"], s["m"], s["v"]
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        if kernels.use(p.data, g, m, v):  # the lines below, block by block (engine/kernels/adam.py)
            fast.update(xp, p.data, g, m, v, beta1, beta2, eps, lr / c1, math.sqrt(c2))
            return
        buf = self.scratch(p)  # work buffer shaped like θ

        m *= beta1
        xp.multiply(g, 1.0 - beta1, out=buf)
        m += buf  # m ← β1·m + (1 − β1)·g

        v *= beta2
        xp.multiply(g, g, out=buf)
        buf *= 1.0 - beta2
        v += buf  # v ← β2·v + (1 − β2)·g²

        # m̂ / (√v̂ + ε) with m̂ = m / c1, v̂ = v / c2, computed as (m / c1) / (√v / √c2 + ε)
        xp.sqrt(v, out=buf)
        buf /= math.sqrt(c2)
        buf += eps  # √v̂ + ε
        xp.divide(m, buf, out=buf)
        buf *= lr / c1  # lr · m̂ / (√v̂ + ε)
        p.data -= buf


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decay_1d=False).

    Decoupled weight decay θ ← θ·(1 − lr·λ), skipped for parameters with fewer
    than 2 dimensions (biases, LayerNorm weights) unless decay_1d=True (a
    per-group setting, like lr).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 decay_1d: bool = False):
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "decay_1d": decay_1d}
        Optimizer.__init__(self, params, defaults)  # Adam's settings plus decay_1d

    def update(self, p, group: dict) -> None:
        """Decay θ (unless it is a vector and decay_1d is off), then take the plain Adam step."""
        wd = group["weight_decay"]
        if wd and (p.ndim >= 2 or group["decay_1d"]):
            p.data *= 1.0 - group["lr"] * wd  # θ ← θ·(1 − lr·λ)
        self.adam_update(p, p.grad.data, group)
