"""Scaled, causally masked softmax of attention scores: a fused fast path.

The readable version, three ops and three nodes (see `causal_softmax_reference`):

    att = softmax(masked_fill(scores * scale, future, -inf), axis=-1)

allocates a new (B, nh, T, S) array for each op, forward and backward. The
CausalSoftmax node (its docstring has the math) computes the same thing in one
buffer and keeps only the output. A masked position has y = 0, so its gradient
is 0 without a separate step.
`tests/test_attention_fused.py` checks that the two agree, forward and backward.
"""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.ops.select import masked_fill
from tinylora.engine.ops.softmax import softmax


class CausalSoftmax(Function):
    """y = softmax(scale * s) along the last axis over the visible positions, 0 where `future` is True.

        s, y: (B, nh, T, S);  future: (T, S) bool;  ds = scale * y * (dy - sum(dy * y))  (last axis)

    Keeps only y.
    """

    def forward(self, scores, scale, future):
        xp = self.xp
        y = xp.multiply(scores, scale)  # (B, nh, T, S): the only new array
        xp.copyto(y, float("-inf"), where=future)  # future (T, S) broadcasts over (B, nh)
        y -= y.max(axis=-1, keepdims=True)
        xp.exp(y, out=y)
        y /= y.sum(axis=-1, keepdims=True)
        self.scale = scale
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        xp = self.xp
        ds = grad * y  # (B, nh, T, S)
        row = ds.sum(axis=-1, keepdims=True)  # sum(dy * y), (B, nh, T, 1)
        xp.subtract(grad, row, out=ds)  # dy - sum(dy * y)
        ds *= y
        ds *= self.scale
        return ds


def causal_softmax(scores, scale: float, future):
    """softmax(masked_fill(scores * scale, future, -inf)) along the last axis, as one node.

    scores: (..., T, S) tensor; future: (T, S) bool array or tensor, True where a query may not look.
    """
    from tinylora.engine.ops.select import _mask_array

    mask = _mask_array(future, scores)
    if mask.shape != scores.shape[-2:]:
        raise ValueError(f"causal_softmax: mask shape {mask.shape} must be the last two axes of scores {scores.shape}")
    return CausalSoftmax.apply(scores, scale=float(scale), future=mask)


def causal_softmax_reference(scores, scale: float, future):
    """The readable composition that `causal_softmax` fuses (three nodes, three new arrays)."""
    return softmax(masked_fill(scores * scale, future, float("-inf")), axis=-1)
