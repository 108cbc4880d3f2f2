"""Reductions over axes: sum, mean, max, var (with keepdims).

Conventions a student can trip on:
- `axis` may be an int, a tuple, or None (all axes); PyTorch's `dim=` is accepted too.
- `var` uses `ddof=0` by default (NumPy's population variance, what LayerNorm uses);
  pass ddof=1 for PyTorch's default unbiased estimate.
- `max` splits the gradient equally between tied maxima (like torch.amax), so
  the gradient always sums to the upstream gradient.
"""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.ops._util import normalize_axes, pick_axis


def _keep(grad, axes, keepdims, xp):
    """Re-insert reduced axes (as size 1) so `grad` broadcasts against the input."""
    return grad if keepdims else xp.expand_dims(grad, axes)


class Sum(Function):
    """y = sum of x over `axes`.   dx = dy broadcast back to x's shape (a read-only view: no copy)."""

    def forward(self, x, axes, keepdims):
        self.x_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, grad):
        return self.xp.broadcast_to(_keep(grad, self.axes, self.keepdims, self.xp), self.x_shape)


class Mean(Function):
    """y = (1/n) sum of x over `axes` (n elements each).   dx = dy / n, broadcast back to x's shape."""

    def forward(self, x, axes, keepdims):
        self.x_shape, self.axes, self.keepdims = x.shape, axes, keepdims
        self.count = 1
        for a in axes:
            self.count *= x.shape[a]
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, grad):
        g = _keep(grad, self.axes, self.keepdims, self.xp) / self.count
        return self.xp.broadcast_to(g, self.x_shape)


class Max(Function):
    """y = max of x over `axes`.   dx = dy * [x == y] / (number of ties), so tied maxima share dy.

    Keeps that share array (x's shape), not x.
    """

    def forward(self, x, axes, keepdims):
        self.axes, self.keepdims = axes, keepdims
        y = x.max(axis=axes, keepdims=True)
        winners = x == y  # bool mask of the maxima
        share = winners / winners.sum(axis=axes, keepdims=True).astype(x.dtype)
        self.save_for_backward(share)
        return y if keepdims else y.squeeze(axis=axes)

    def backward(self, grad):
        (share,) = self.saved
        return _keep(grad, self.axes, self.keepdims, self.xp) * share


class Var(Function):
    """y = sum((x - mean)^2) / (n - ddof) over `axes`.   dx = dy * 2 (x - mean) / (n - ddof).

    Keeps x - mean (x's shape). (The mean's own dependence on x drops out: sum(x - mean) = 0.)
    """

    def forward(self, x, axes, keepdims, ddof):
        self.axes, self.keepdims = axes, keepdims
        n = 1
        for a in axes:
            n *= x.shape[a]
        if n - ddof <= 0:
            raise ValueError(f"var: {n} elements with ddof={ddof} leaves no degrees of freedom")
        centered = x - x.mean(axis=axes, keepdims=True)
        self.divisor = n - ddof
        self.save_for_backward(centered)
        return (centered * centered).sum(axis=axes, keepdims=keepdims) / self.divisor

    def backward(self, grad):
        (centered,) = self.saved
        return _keep(grad, self.axes, self.keepdims, self.xp) * centered * (2.0 / self.divisor)


def sum(x, axis=None, keepdims=False, *, dim=None):
    """Sum over `axis` (int, tuple or None for all)."""
    return Sum.apply(x, axes=normalize_axes(pick_axis(axis, dim), x.ndim), keepdims=keepdims)


def mean(x, axis=None, keepdims=False, *, dim=None):
    """Mean over `axis`."""
    return Mean.apply(x, axes=normalize_axes(pick_axis(axis, dim), x.ndim), keepdims=keepdims)


def max(x, axis=None, keepdims=False, *, dim=None):
    """Maximum over `axis` (values only); ties share the gradient equally."""
    axes = normalize_axes(pick_axis(axis, dim), x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        raise ValueError(f"max: a tensor of shape {x.shape} has no elements along axis {axis}: the maximum is undefined")
    return Max.apply(x, axes=axes, keepdims=keepdims)


def var(x, axis=None, keepdims=False, ddof=0, *, dim=None):
    """Variance over `axis`, divided by n - ddof (ddof=0 by default, as NumPy)."""
    return Var.apply(x, axes=normalize_axes(pick_axis(axis, dim), x.ndim), keepdims=keepdims, ddof=ddof)
