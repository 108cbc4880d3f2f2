"""One Adam step for one parameter, block by block (see kernels/__init__.py). The math and the
readable in-place lines are Adam.adam_update in optim/adam.py; these are the same lines per block:

    m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2,
    p <- p - step_size * m / (sqrt(v) / sqrt_c2 + eps),   step_size = lr / c1

The readable lines make about thirteen passes over parameter-sized arrays (memory-bound: for full
fine-tuning of GPT-2 small that is several GB per step); here each block stays in cache for all of
them. On a GPU it is one fused kernel (cuda.py).
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.kernels import blocks, cuda


def update(xp, p, g, m, v, beta1, beta2, eps, step_size, sqrt_c2) -> None:
    """p, m, v (C-contiguous, one shape) updated in place from the gradient g."""
    if kernels.on_gpu(p):
        cuda.adam_update(p, g, m, v, beta1, beta2, eps, step_size, sqrt_c2)
        return
    ps, gs, ms, vs = (a.reshape(-1) for a in (p, g, m, v))

    def kernel(i, j):
        p, g, m, v = ps[i:j], gs[i:j], ms[i:j], vs[i:j]
        buf = xp.multiply(g, 1.0 - beta1)  # a block-sized scratch
        m *= beta1
        m += buf
        v *= beta2
        xp.multiply(g, g, out=buf)
        buf *= 1.0 - beta2
        v += buf
        xp.sqrt(v, out=buf)
        buf /= sqrt_c2
        buf += eps
        xp.divide(m, buf, out=buf)
        buf *= step_size
        p -= buf

    blocks.run(kernel, ps.size, 1, like=p)
