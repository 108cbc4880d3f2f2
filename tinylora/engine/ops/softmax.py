"""softmax and log_softmax along one axis, each a single fused node.

Both subtract the row maximum first, so exp never overflows:
softmax(x) = exp(x - m) / sum(exp(x - m)) for m = max(x).
"""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.ops._util import axis_index, pick_axis


class Softmax(Function):
    """y = exp(x - max) / sum(exp(x - max)) along `axis` (max along it too); y has x's shape.

    dx = y * (dy - sum(dy * y)), the sum along `axis`. Keeps y, not x.
    """

    def forward(self, x, axis):
        self.axis = axis
        y = self.xp.exp(x - x.max(axis=axis, keepdims=True))
        y /= y.sum(axis=axis, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        return y * (grad - (grad * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    """y = x - max - log(sum(exp(x - max))) along `axis`; y has x's shape.

    dx = dy - exp(y) * sum(dy), the sum along `axis`. Keeps y, not x.
    """

    def forward(self, x, axis):
        self.axis = axis
        shifted = x - x.max(axis=axis, keepdims=True)
        y = shifted - self.xp.log(self.xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        return grad - self.xp.exp(y) * grad.sum(axis=self.axis, keepdims=True)


def softmax(x, axis=None, *, dim=None):
    """Probabilities along `axis` (default the last)."""
    return Softmax.apply(x, axis=_nonempty_axis("softmax", x, pick_axis(axis, dim, default=-1)))


def log_softmax(x, axis=None, *, dim=None):
    """Log-probabilities along `axis`, computed stably (never log of a softmax)."""
    return LogSoftmax.apply(x, axis=_nonempty_axis("log_softmax", x, pick_axis(axis, dim, default=-1)))


def _nonempty_axis(op_name, x, axis):
    """`axis` as a non-negative int, or a ValueError if it is out of range or has length 0."""
    axis = axis_index(op_name, axis, x.ndim)
    if x.shape[axis] == 0:
        raise ValueError(f"{op_name}: axis {axis} of shape {x.shape} has length 0: there is nothing to normalise over")
    return axis
