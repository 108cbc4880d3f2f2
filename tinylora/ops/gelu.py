"""GELU, the tanh approximation GPT-2 uses:

    y = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
    dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

The node keeps only x and recomputes tanh(u) in backward (one saved array, not two).
"""

from __future__ import annotations

import math

from ..autograd import Function

_C = math.sqrt(2.0 / math.pi)  # a Python float: keeps float32 math in float32
_K = 0.044715


class GELU(Function):
    def forward(self, x):
        self.save_for_backward(x)
        t = self.xp.tanh(_C * (x + _K * x * x * x))
        return 0.5 * x * (1.0 + t)

    def backward(self, grad):
        (x,) = self.saved
        x2 = x * x
        t = self.xp.tanh(_C * x * (1.0 + _K * x2))
        return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _K * x2))


def gelu(x):
    """GELU with the tanh approximation (GPT-2's `gelu_new`, PyTorch's approximate='tanh')."""
    return GELU.apply(x)
