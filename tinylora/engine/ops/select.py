"""Choosing elements: where, masked_fill, and the embedding lookup."""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.backend import scatter_add
from tinylora.engine.ops._util import broadcast_shapes, unbroadcast


def _mask_array(mask, like):
    """A boolean array on `like`'s device from a bool Tensor or array."""
    from tinylora.engine.tensor import Tensor

    data = mask.data if isinstance(mask, Tensor) else like.device.xp.asarray(mask)
    if data.dtype.kind != "b":
        raise TypeError(f"mask must be boolean, got dtype {data.dtype}")
    if isinstance(mask, Tensor) and mask.device != like.device:
        raise RuntimeError(f"mask is on {mask.device} but the tensor is on {like.device}")
    return data


class Where(Function):
    """y = a where cond else b (cond, a, b broadcast).   da = dy * cond, db = dy * (not cond), unbroadcast.

    Keeps the bool array cond.
    """

    def forward(self, a, b, cond):
        self.shapes = (a.shape, b.shape)
        self.save_for_backward(cond)
        return self.xp.where(cond, a, b)

    def backward(self, grad):
        (cond,) = self.saved
        zero = self.xp.zeros((), dtype=grad.dtype)
        da = unbroadcast(self.xp.where(cond, grad, zero), self.shapes[0]) if self.needs_input_grad[0] else None
        db = unbroadcast(self.xp.where(cond, zero, grad), self.shapes[1]) if self.needs_input_grad[1] else None
        return da, db


class MaskedFill(Function):
    """y = value where mask else x (mask broadcasts to x's shape).   dx = dy where not mask, else 0.

    Keeps the bool mask, which may be smaller than x (a (T, T) causal mask for (B, nh, T, T) scores).
    """

    def forward(self, x, mask, value):
        self.save_for_backward(mask)  # mask may be smaller than x (it broadcasts), e.g. (T, T)
        return self.xp.where(mask, self.xp.asarray(value, dtype=x.dtype), x)

    def backward(self, grad):
        (mask,) = self.saved
        return self.xp.where(mask, self.xp.zeros((), dtype=grad.dtype), grad)


class Embedding(Function):
    """y[n] = W[idx[n]],  W: (V, C), idx: int array of any shape, y: idx.shape + (C,).

    dW = zeros (V, C), then dW[idx[n]] += dy[n] (a token seen twice gets both gradients). Keeps idx.
    """

    def forward(self, weight, indices):
        self.weight_shape = weight.shape
        self.save_for_backward(indices)
        return weight[indices]

    def backward(self, grad):
        (indices,) = self.saved
        dw = self.xp.zeros(self.weight_shape, dtype=grad.dtype)
        scatter_add(dw, indices.reshape(-1), grad.reshape(-1, self.weight_shape[1]))
        return dw


def where(cond, a, b):
    """Elementwise choice: a where cond is True, else b (a and b may be tensors or numbers)."""
    from tinylora.engine.tensor import Tensor

    like = a if isinstance(a, Tensor) else b
    a, b = like._lift(a), like._lift(b)
    cond = _mask_array(cond, like)
    broadcast_shapes("where", tuple(cond.shape), a.shape, b.shape)
    return Where.apply(a, b, cond=cond)


def masked_fill(x, mask, value):
    """x with `value` wherever the boolean `mask` (broadcast to x's shape) is True."""
    m = _mask_array(mask, x)
    if broadcast_shapes("masked_fill", tuple(m.shape), x.shape) != x.shape:  # the mask may not enlarge x
        raise ValueError(f"masked_fill: mask shape {tuple(m.shape)} does not broadcast to tensor shape {x.shape}")
    return MaskedFill.apply(x, mask=m, value=float(value))


def embedding(indices, weight):
    """Rows of `weight` (V, C) picked by integer `indices` (any shape): output indices.shape + (C,)."""
    from tinylora.engine.tensor import Tensor

    idx = indices.data if isinstance(indices, Tensor) else weight.device.xp.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    if isinstance(indices, Tensor) and indices.device != weight.device:
        raise RuntimeError(f"embedding: indices are on {indices.device} but the weight is on {weight.device}")
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be 2-D (num_embeddings, dim), got shape {weight.shape}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= weight.shape[0]):
        raise IndexError(
            f"embedding: index out of range: indices span [{int(idx.min())}, {int(idx.max())}] "
            f"but the table has {weight.shape[0]} rows"
        )
    return Embedding.apply(weight, indices=idx)
