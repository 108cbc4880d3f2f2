"""One Adam step for one parameter, in place and block by block (see kernels/__init__.py).

The math is Adam's docstring in optim/adam.py, whose readable lines are the paper's four equations
as plain array expressions (each makes parameter-sized temporaries: for full fine-tuning of GPT-2
small, several GB per step). Here the same step runs in place, in PyTorch's order, with the
optimizer's work buffer `buf` (shaped like p; only the block being computed is used at a time):

    g <- g + l2 p                                   Adam's L2 penalty (if any), into `l2_buf`
    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
    p <- p - m / (sqrt(v) / sqrt_c2 + eps) * step_size,   step_size = lr / (1 - beta1^t),
                                                        sqrt_c2 = sqrt(1 - beta2^t)

The same numbers as the readable lines up to rounding (the bias corrections m / c1 and v / c2 are
folded into step_size and sqrt_c2). On a GPU it is one fused kernel (cuda.py).
"""

from __future__ import annotations

import math

from tinylora.engine import kernels
from tinylora.engine.kernels import blocks, cuda


def update(xp, p, g, m, v, buf, beta1, beta2, eps, lr, t, l2=0.0, l2_buf=None) -> None:
    """p, m, v (C-contiguous, one shape) updated in place from the gradient g (only read) at step t = 1, 2, ...

    buf: a work buffer shaped like p; l2_buf: a second one, used when l2 (Adam's L2 penalty λ) is not 0."""
    step_size, sqrt_c2 = lr / (1.0 - beta1**t), math.sqrt(1.0 - beta2**t)
    if kernels.on_gpu(p):
        if l2:
            g = xp.add(xp.multiply(p, l2, out=l2_buf), g, out=l2_buf)  # g + λ·θ
        cuda.adam_update(p, g, m, v, beta1, beta2, eps, step_size, sqrt_c2)
        return
    ps, gs, ms, vs, bufs = (a.reshape(-1) for a in (p, g, m, v, buf))
    l2s = l2_buf.reshape(-1) if l2 else None

    def kernel(i, j):
        p, g, m, v, b = ps[i:j], gs[i:j], ms[i:j], vs[i:j], bufs[i:j]
        if l2:
            g = xp.add(xp.multiply(p, l2, out=l2s[i:j]), g, out=l2s[i:j])  # g + λ·θ
        xp.multiply(g, 1.0 - beta1, out=b)
        m *= beta1
        m += b  # m ← β1·m + (1 − β1)·g
        xp.multiply(g, g, out=b)
        b *= 1.0 - beta2
        v *= beta2
        v += b  # v ← β2·v + (1 − β2)·g²
        xp.sqrt(v, out=b)
        b /= sqrt_c2
        b += eps  # √v̂ + ε  (√v̂ = √v / √c2)
        xp.divide(m, b, out=b)
        b *= step_size  # lr · m̂ / (√v̂ + ε)  (m̂ = m / c1, lr / c1 = step_size)
        p -= b

    blocks.run(kernel, ps.size, 1, like=p)
