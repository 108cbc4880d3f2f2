"""GELU, the tanh approximation GPT-2 uses (the math is in GELU's docstring).

`gelu_reference_forward` / `gelu_reference_backward` are its two formulas as
written. The GELU node computes the same values in one reused buffer (forward)
or two (backward), because the MLP activation is the largest array of a block
and every temporary of its size costs a pass over memory;
`tests/test_ops_gradcheck.py` and `tests/test_gelu_fast.py` check both.
"""

from __future__ import annotations

import math

from tinylora.engine.autograd import Function

_C = math.sqrt(2.0 / math.pi)  # a Python float: keeps float32 math in float32
_K = 0.044715


def gelu_reference_forward(xp, x):
    """y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), written plainly."""
    return 0.5 * x * (1.0 + xp.tanh(_C * (x + _K * x * x * x)))


def gelu_reference_backward(xp, x, grad):
    """dy * dGELU/dx, written plainly."""
    t = xp.tanh(_C * (x + _K * x * x * x))
    return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _K * x * x))


class GELU(Function):
    """y = 0.5 x (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3);  y has x's shape.

        dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

    The node keeps only x and recomputes tanh u in backward (one saved array, not two).
    """

    def forward(self, x):
        self.save_for_backward(x)
        xp = self.xp
        y = xp.multiply(x, x, out=xp.empty_like(x))  # the one new array; every line below reuses it
        y *= _K
        y += 1.0
        y *= x
        y *= _C  # u = C x (1 + K x^2)
        xp.tanh(y, out=y)  # t = tanh(u)
        y += 1.0
        y *= 0.5  # 0.5 (1 + t), in [0, 1]
        y *= x  # last, so a huge x (3e38 in float32) gives x back instead of overflowing 2x
        return y

    def backward(self, grad):
        (x,) = self.saved
        xp = self.xp
        t = xp.multiply(x, x, out=xp.empty_like(x))  # buffer 1: x^2, then u, then t, 1 - t, 1 + t
        d = xp.multiply(t, 3.0 * _K, out=xp.empty_like(x))  # buffer 2: 1 + 3 K x^2, then the derivative
        d += 1.0
        t *= _K
        t += 1.0
        t *= x
        t *= _C
        xp.tanh(t, out=t)  # t = tanh(u)
        d *= x
        d *= 0.5 * _C  # 0.5 C x (1 + 3 K x^2)
        xp.subtract(1.0, t, out=t)  # 1 - t
        d *= t
        d += 0.5  # 0.5 + 0.5 C x (1 + 3 K x^2)(1 - t)
        xp.subtract(2.0, t, out=t)  # 1 + t
        d *= t  # = 0.5 (1 + t) + 0.5 C x (1 + 3 K x^2)(1 - t^2)
        d *= grad
        return d


def gelu(x):
    """GELU with the tanh approximation (GPT-2's `gelu_new`, PyTorch's approximate='tanh')."""
    return GELU.apply(x)
