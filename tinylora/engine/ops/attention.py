"""Scaled, causally masked softmax of attention scores, as one node.

The readable composition, three ops and three nodes (see `causal_softmax_reference`):

    att = softmax(masked_fill(scores * scale, future, -inf), axis=-1)

keeps three (B, nh, T, S) arrays for backward. The CausalSoftmax node (its docstring has the math)
computes the same thing and keeps only the output; a masked position has y = 0, so its gradient is 0
without a separate step. On NumPy and CuPy arrays it hands its arrays to engine/kernels/softmax.py
(block by block, in place, on the free cores). `tests/test_attention_fused.py` checks that the node
and the composition agree, `tests/test_kernels.py` that the kernel and the node's lines agree.
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.autograd import Function
from tinylora.engine.kernels import softmax as fast
from tinylora.engine.ops.select import masked_fill
from tinylora.engine.ops.softmax import softmax


class CausalSoftmax(Function):
    """y = softmax(scale * s) along the last axis over the visible positions, 0 where `future` is True.

        s, y: (B, nh, T, S);  future: (T, S) bool;  ds = scale * y * (dy - sum(dy * y))  (last axis)

    Keeps only y.
    """

    def forward(self, scores, scale, future):
        self.scale = scale
        if kernels.use(scores):
            y = fast.causal_forward(self.xp, scores, scale, future)
        else:
            xp = self.xp
            masked = xp.where(future, float("-inf"), scores * scale)  # future (T, S) broadcasts over (B, nh)
            e = xp.exp(masked - masked.max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        if kernels.use(y, grad):
            return fast.causal_backward(self.xp, y, grad, self.scale)
        return self.scale * y * (grad - (grad * y).sum(axis=-1, keepdims=True))


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
