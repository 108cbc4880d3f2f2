"""Layer norm over the last axis, block by block (see kernels/__init__.py); the math is LayerNorm's
docstring in engine/ops/layer_norm.py:

    xhat = (x - mean) * rstd,  y = xhat * w + b
    dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * w   (means over the last axis)

On a GPU the two elementwise lines are one fused kernel each (cuda.py); the means stay CuPy's.
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.kernels import blocks, cuda


def forward(xp, x, weight, bias, eps):
    """x: (..., C) C-contiguous; weight, bias: (C,). Returns y, xhat (both x's shape) and rstd (..., 1)."""
    C = x.shape[-1]
    x2 = x.reshape(-1, C)
    if kernels.on_gpu(x):
        mean = x2.mean(axis=1, keepdims=True)
        rstd = 1.0 / xp.sqrt(x2.var(axis=1, keepdims=True) + eps)
        xhat, y = cuda.kernel("layer_norm_forward", x)(x2, mean, rstd, weight, bias)
        return y.reshape(x.shape), xhat.reshape(x.shape), rstd.reshape(*x.shape[:-1], 1)
    xhat, y = xp.empty_like(x2), xp.empty_like(x2)
    rstd = xp.empty((x2.shape[0], 1), dtype=x.dtype)

    def kernel(i, j):
        xh, yb = xhat[i:j], y[i:j]
        xp.subtract(x2[i:j], x2[i:j].mean(axis=1, keepdims=True), out=xh)  # centred
        xp.multiply(xh, xh, out=yb)
        r = rstd[i:j]
        xp.mean(yb, axis=1, keepdims=True, out=r)  # the variance
        r += eps
        xp.sqrt(r, out=r)
        xp.divide(1.0, r, out=r)
        xh *= r  # xhat
        xp.multiply(xh, weight, out=yb)
        yb += bias

    blocks.run(kernel, x2.shape[0], C, like=x)
    return y.reshape(x.shape), xhat.reshape(x.shape), rstd.reshape(*x.shape[:-1], 1)


def backward_input(xp, grad, xhat, rstd, weight):
    """dx for dy = grad; grad, xhat: (..., C) C-contiguous; rstd: (..., 1); weight: (C,). One new array."""
    C = grad.shape[-1]
    g2, xh2, r2 = grad.reshape(-1, C), xhat.reshape(-1, C), rstd.reshape(-1, 1)
    if kernels.on_gpu(grad):
        g = g2 * weight
        mean_g, mean_gx = g.mean(axis=1, keepdims=True), (g * xh2).mean(axis=1, keepdims=True)
        return cuda.kernel("layer_norm_backward", grad)(g2, weight, xh2, r2, mean_g, mean_gx).reshape(grad.shape)
    dx = xp.empty_like(g2)

    def kernel(i, j):
        d, xh = dx[i:j], xh2[i:j]
        g = xp.multiply(g2[i:j], weight)  # a block-sized scratch
        xp.multiply(g, xh, out=d)
        mean_gx = d.mean(axis=1, keepdims=True)
        g -= g.mean(axis=1, keepdims=True)
        xp.multiply(xh, mean_gx, out=d)
        xp.subtract(g, d, out=d)
        d *= r2[i:j]

    blocks.run(kernel, g2.shape[0], C, like=grad)
    return dx.reshape(grad.shape)
