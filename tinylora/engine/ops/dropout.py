"""Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p) (math: Dropout's docstring).

The mask comes from tinylora's seeded generator (`tinylora.manual_seed`), drawn
on the tensor's device. In eval mode, or with p = 0, dropout is the identity and
adds no node to the graph.
"""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.random import device_rng


class Dropout(Function):
    """y = x * mask / (1 - p), mask ~ Bernoulli(1 - p) per element;  dx = dy * mask / (1 - p).

    Keeps the bool mask (one byte per element).
    """

    def forward(self, x, p, device):
        keep = device_rng(device).random(x.shape, dtype=x.dtype) >= p  # the mask, bool
        self.scale = 1.0 / (1.0 - p)
        self.save_for_backward(keep)
        return x * keep * self.scale

    def backward(self, grad):
        (keep,) = self.saved
        return grad * keep * self.scale


def dropout(x, p: float = 0.1, training: bool = True):
    """Randomly zero elements of x with probability p while training; identity otherwise."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=float(p), device=x.device)
