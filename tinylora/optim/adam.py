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
The lines of `adam_update` are the four equations above as plain array expressions.
With the fast paths on (the default) the same step runs in place, block by block, with one shared
work buffer (engine/kernels/adam.py; on a GPU one fused kernel): the same numbers up to rounding.
TINYLORA_KERNELS=0 runs the lines below; tests/test_optim.py runs both.
"""

from __future__ import annotations

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
        """One Adam step for one parameter, with the L2 penalty λ·θ added to its gradient."""
        self.adam_update(p, p.grad.data, group, l2=group["weight_decay"])

    def adam_update(self, p, g, group: dict, l2: float = 0.0) -> None:
        """θ ← θ − lr · m̂ / (√v̂ + ε) for one parameter with gradient array `g` (read only; plus l2·θ if l2)."""
        xp = p.device.xp
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        s = self.state_for(p, step=lambda: 0, m=lambda: xp.zeros_like(p.data), v=lambda: xp.zeros_like(p.data))
        s["step"] += 1
        t, m, v = s["step"], s["m"], s["v"]
        if kernels.use(p.data, g, m, v):  # the same step in place, block by block (engine/kernels/adam.py)
            l2_buf = self.scratch(p, slot=1) if l2 else None
            fast.update(xp, p.data, g, m, v, self.scratch(p), beta1, beta2, eps, lr, t, l2, l2_buf)
            return
        if l2:
            g = g + l2 * p.data  # g ← g + λ·θ (Adam's L2 penalty)

        m[...] = beta1 * m + (1 - beta1) * g  # m ← β1·m + (1 − β1)·g
        v[...] = beta2 * v + (1 - beta2) * g**2  # v ← β2·v + (1 − β2)·g²
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)  # bias correction
        p.data -= lr * m_hat / (xp.sqrt(v_hat) + eps)  # θ ← θ − lr · m̂ / (√v̂ + ε)


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
