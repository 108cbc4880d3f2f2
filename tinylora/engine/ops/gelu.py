"""GELU, the tanh approximation GPT-2 uses (the math is in GELU's docstring).

The node's lines below are the formulas as written. On NumPy and CuPy arrays the node hands its
arrays to engine/kernels/gelu.py, which computes the same numbers block by block in place (the MLP
activation is the largest array of a block); `tests/test_kernels.py` checks that the two agree, and
TINYLORA_KERNELS=0 runs these lines instead.
"""

from __future__ import annotations

import math

from tinylora.engine import kernels
from tinylora.engine.autograd import Function
from tinylora.engine.kernels import gelu as fast

C = math.sqrt(2.0 / math.pi)  # Python floats: they keep float32 math in float32
K = 0.044715


class GELU(Function):
    """y = 0.5 x (1 + tanh u),  u = sqrt(2/pi) (x + 0.044715 x^3);  y has x's shape.

        dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

    The node keeps only x and recomputes tanh u in backward (one saved array, not two).
    """

    def forward(self, x):
        self.save_for_backward(x)
        if kernels.use(x):
            return fast.forward(self.xp, x, C, K)
        return 0.5 * x * (1.0 + self.xp.tanh(C * (x + K * x * x * x)))

    def backward(self, grad):
        (x,) = self.saved
        if kernels.use(x, grad):
            return fast.backward(self.xp, x, grad, C, K)
        t = self.xp.tanh(C * (x + K * x * x * x))
        return grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * C * (1.0 + 3.0 * K * x * x))


def gelu(x):
    """GELU with the tanh approximation (GPT-2's `gelu_new`, PyTorch's approximate='tanh')."""
    return GELU.apply(x)
