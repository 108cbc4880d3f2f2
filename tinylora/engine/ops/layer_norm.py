"""Layer normalisation over the last axis, one fused node (the math is in LayerNorm's docstring).

On NumPy and CuPy arrays the node hands its arrays to engine/kernels/layer_norm.py (the same numbers,
block by block); TINYLORA_KERNELS=0 runs the lines below.
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.autograd import Function
from tinylora.engine.kernels import layer_norm as fast


class LayerNorm(Function):
    """Normalise the last axis, then scale and shift.   x, y: (..., C); weight, bias: (C,)

        mean = (1/C) sum_c x_c,   rstd = 1 / sqrt((1/C) sum_c (x_c - mean)^2 + eps)
        xhat = (x - mean) * rstd,  y = xhat * weight + bias

    Backward, with g = dy * weight and means over the last axis:

        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
        dweight = sum of dy * xhat,   dbias = sum of dy   (over every axis but the last)

    The node keeps xhat (if x or weight needs a gradient), rstd and weight (if x does);
    like llm.c it never keeps x or mean. weight is a parameter, alive anyway.
    """

    def forward(self, x, weight, bias, eps):
        if kernels.use(x, weight, bias):
            y, xhat, rstd = fast.forward(self.xp, x, weight, bias, eps)
        else:
            centered = x - x.mean(axis=-1, keepdims=True)
            rstd = 1.0 / self.xp.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
            xhat = centered * rstd
            y = xhat * weight + bias
        need_x, need_w = self.needs_input_grad[0], self.needs_input_grad[1]
        self.save_for_backward(
            xhat if (need_x or need_w) else None,
            rstd if need_x else None,
            weight if need_x else None,
        )
        return y

    def backward(self, grad):
        xhat, rstd, weight = self.saved
        reduce_axes = tuple(range(grad.ndim - 1))
        dx = dw = db = None
        if self.needs_input_grad[0] and kernels.use(grad, xhat, weight):
            dx = fast.backward_input(self.xp, grad, xhat, rstd, weight)
        elif self.needs_input_grad[0]:
            g = grad * weight
            dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * (g * xhat).mean(axis=-1, keepdims=True))
        if self.needs_input_grad[1]:
            dw = (grad * xhat).sum(axis=reduce_axes)
        if self.needs_input_grad[2]:
            db = grad.sum(axis=reduce_axes)
        return dx, dw, db


def layer_norm(x, weight, bias, eps: float = 1e-5):
    """Normalise the last axis of x to zero mean, unit variance, then scale by weight and shift by bias (both (C,))."""
    c = x.shape[-1]
    if weight.shape != (c,) or bias.shape != (c,):
        raise ValueError(f"layer_norm: weight {weight.shape} and bias {bias.shape} must both be ({c},) for input {x.shape}")
    return LayerNorm.apply(x, weight, bias, eps=float(eps))
