"""GELU (tanh approximation) forward and backward, block by block and in place (see kernels/__init__.py).

The math is GELU's docstring in engine/ops/gelu.py; these lines compute the same numbers with
u = C x (1 + K x^2), C = sqrt(2/pi), K = 0.044715, t = tanh(u) (the op passes C and K: they live with the math):

    forward:   y  = 0.5 (1 + t) x                              (x last: a huge x gives x, no overflow)
    backward:  dx = dy ((1 + t)/2 + C x (1 + 3 K x^2) (1 - t)(1 + t)/2)
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.kernels import blocks, cuda


def forward(xp, x, C, K):
    """y = GELU(x); x: any shape, C-contiguous. One new array, y."""
    if kernels.on_gpu(x):
        return cuda.gelu_forward(x, C, K)
    y = xp.empty_like(x)
    xs, ys = x.reshape(-1), y.reshape(-1)

    def kernel(i, j):
        x, y = xs[i:j], ys[i:j]
        xp.multiply(x, x, out=y)
        y *= K
        y += 1.0
        y *= x
        y *= C  # u
        xp.tanh(y, out=y)  # t
        y += 1.0
        y *= 0.5
        y *= x

    blocks.run(kernel, xs.size, 1, like=x)
    return y


def backward(xp, x, grad, C, K):
    """dx = dy * GELU'(x); x, grad: the same shape, C-contiguous. One new array, dx."""
    if kernels.on_gpu(x):
        return cuda.gelu_backward(x, grad, C, K)
    dx = xp.empty_like(x)
    xs, gs, ds = x.reshape(-1), grad.reshape(-1), dx.reshape(-1)

    def kernel(i, j):
        x, d = xs[i:j], ds[i:j]
        t = xp.multiply(x, x)  # a block-sized scratch: x^2, then u, t, 1 - t, 1 + t
        xp.multiply(t, 3.0 * K, out=d)
        d += 1.0
        d *= x
        d *= 0.5 * C  # 0.5 C x (1 + 3 K x^2)
        t *= K
        t += 1.0
        t *= x
        t *= C
        xp.tanh(t, out=t)
        xp.subtract(1.0, t, out=t)
        d *= t
        d += 0.5
        xp.subtract(2.0, t, out=t)  # 1 + t
        d *= t
        d *= gs[i:j]

    blocks.run(kernel, xs.size, 1, like=x)
    return dx
