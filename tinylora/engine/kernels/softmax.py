"""Softmax along the last axis, block by block and in place: the attention's causal softmax (forward
and backward) and the softmax inside cross-entropy (see kernels/__init__.py).

The math is in engine/ops/attention.py (CausalSoftmax) and engine/ops/loss.py (CrossEntropy):

    causal:  y = softmax(scale * s) over the visible positions, 0 where `future`;
             ds = scale * y * (dy - sum(dy * y))
    rows:    p = exp(z - m) / sum(exp(z - m)),  m = max(z);  also m and log sum(exp(z - m)), apart (the loss
             takes m off z[t] first: adding m back here would round the small term away at z = 1e8)
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.kernels import blocks, cuda


def causal_forward(xp, scores, scale, future):
    """scores: (..., T, S) C-contiguous; future: (T, S) bool. Returns y, one new array of scores' shape."""
    T, S = scores.shape[-2:]
    s3, y = scores.reshape(-1, T, S), xp.empty_like(scores)
    y3 = y.reshape(-1, T, S)

    def kernel(i, j):  # a block of whole (T, S) score matrices
        y = y3[i:j]
        xp.multiply(s3[i:j], scale, out=y)
        xp.copyto(y, float("-inf"), where=future)
        y -= y.max(axis=-1, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=-1, keepdims=True)

    blocks.run(kernel, s3.shape[0], T * S, like=scores)
    return y


def causal_backward(xp, y, grad, scale):
    """y, grad: (..., T, S) C-contiguous. Returns ds, one new array."""
    if kernels.on_gpu(y):
        row = (grad * y).sum(axis=-1, keepdims=True)
        return cuda.kernel("softmax_backward", y)(y, grad, row, y.dtype.type(scale))
    S = y.shape[-1]
    y2, g2, ds = y.reshape(-1, S), grad.reshape(-1, S), xp.empty_like(y)
    d2 = ds.reshape(-1, S)

    def kernel(i, j):  # a block of rows
        d, yb, g = d2[i:j], y2[i:j], g2[i:j]
        xp.multiply(g, yb, out=d)
        row = d.sum(axis=-1, keepdims=True)  # sum(dy * y)
        xp.subtract(g, row, out=d)
        d *= yb
        d *= scale

    blocks.run(kernel, y2.shape[0], S, like=y)
    return ds


def rows_forward(xp, z):
    """Softmax of each row of z (N, C), C-contiguous. Returns (p, m, log_total): p (N, C) new,
    m (N,) = max(z), log_total (N,) = log sum exp(z - m)."""
    p = xp.empty_like(z)
    m = xp.empty(z.shape[0], dtype=z.dtype)
    log_total = xp.empty(z.shape[0], dtype=z.dtype)

    def kernel(i, j):
        pb = p[i:j]
        mb = z[i:j].max(axis=1, keepdims=True)
        xp.subtract(z[i:j], mb, out=pb)
        xp.exp(pb, out=pb)
        total = pb.sum(axis=1, keepdims=True)
        pb /= total
        m[i:j] = mb[:, 0]
        log_total[i:j] = xp.log(total[:, 0])

    blocks.run(kernel, z.shape[0], z.shape[1], like=z)
    return p, m, log_total
