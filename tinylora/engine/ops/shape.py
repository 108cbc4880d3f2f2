"""Ops that move elements around without arithmetic: reshape, permute, indexing, joining, splitting, to.

Most are views in forward (no copy), and their backward needs only shapes and
axes, kept as plain attributes. GetItem also keeps its index, which may be an
integer array or a mask; it is not counted by the memory accounting (an index
is usually far smaller than the tensor it picks from).
`split` follows PyTorch: an int is the size of each chunk (the last may be
smaller), a list gives each chunk's size. (NumPy's `split` instead takes the
*number* of chunks or the cut indices.)
"""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.backend import get_device, move, scatter_add
from tinylora.engine.ops._util import axis_index, pick_axis


class Reshape(Function):
    """y = x viewed with a new shape (same elements, same order);  dx = dy viewed with x's shape."""

    def forward(self, x, shape):
        self.x_shape = x.shape
        return x.reshape(shape)

    def backward(self, grad):
        return grad.reshape(self.x_shape)


class Permute(Function):
    """y = x with its axes reordered: y.shape[i] = x.shape[axes[i]];  dx = dy with the inverse order."""

    def forward(self, x, axes):
        self.axes = axes
        return x.transpose(axes)

    def backward(self, grad):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return grad.transpose(inverse)


def _plain_index(index):
    """Replace Tensors inside an index by their arrays."""
    from tinylora.engine.tensor import Tensor

    if isinstance(index, tuple):
        return tuple(_plain_index(i) for i in index)
    if isinstance(index, Tensor):
        if index.requires_grad:
            raise TypeError("an index tensor cannot require grad")
        return index.data
    return index


def _has_array_index(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(hasattr(i, "shape") or isinstance(i, list) for i in items)


class GetItem(Function):
    """y = x[index];  dx = zeros of x's shape, then dx[index] += dy.

    With integer-array indices an element may be picked twice: its gradients add up.
    """

    def forward(self, x, index):
        self.x_shape, self.dtype, self.index = x.shape, x.dtype, index
        return x[index]

    def backward(self, grad):
        dx = self.xp.zeros(self.x_shape, dtype=self.dtype)
        if _has_array_index(self.index):
            scatter_add(dx, self.index, grad)
        else:
            dx[self.index] = grad  # basic slicing never repeats an element
        return dx


class Concatenate(Function):
    """y = [x1, x2, ...] joined along an existing `axis`;  dx_i = the slice of dy where x_i went."""

    def forward(self, *xs, axis):
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        return self.xp.concatenate(xs, axis=axis)

    def backward(self, grad):
        cuts, start = [], 0
        for size in self.sizes[:-1]:
            start += size
            cuts.append(start)
        return tuple(self.xp.split(grad, cuts, axis=self.axis))


class Stack(Function):
    """y = [x1, x2, ...] (equal shapes) stacked on a new `axis`;  dx_i = dy taken at index i of that axis."""

    def forward(self, *xs, axis):
        self.axis = axis
        return self.xp.stack(xs, axis=axis)

    def backward(self, grad):
        n = grad.shape[self.axis]
        return tuple(grad.take(i, axis=self.axis) for i in range(n))


class To(Function):
    """y = x copied to another device and/or float dtype;  dx = dy copied back to x's device and dtype.

    The one op whose output may live elsewhere: forward points `self.device` (where
    `apply` puts the output) at the target, and `keeps_dtype = False` lets it convert.
    """

    keeps_dtype = False

    def forward(self, x, device, dtype):
        self.source_device, self.source_dtype = self.device, x.dtype
        self.device = device
        y = move(x, device)
        return y.astype(dtype) if dtype is not None else y

    def backward(self, grad):
        return move(grad, self.source_device).astype(self.source_dtype, copy=False)


def reshape(x, *shape):
    """x with a new shape (-1 infers one axis); a view when possible."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    size = 1
    for n in shape:
        size *= n if n != -1 else 1
    if -1 not in shape and size != x.size or (-1 in shape and (size == 0 or x.size % size)):
        raise ValueError(f"reshape: cannot view a tensor of shape {x.shape} ({x.size} elements) as {shape}")
    return Reshape.apply(x, shape=tuple(shape))


def permute(x, *axes):
    """x with its axes in the order `axes` (like torch.permute / numpy.transpose)."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    axes = tuple(axis_index("permute", a, x.ndim) for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ValueError(f"permute: {axes} is not an ordering of the {x.ndim} axes of shape {x.shape}")
    return Permute.apply(x, axes=axes)


def transpose(x, dim0=-2, dim1=-1):
    """Swap two axes (by default the last two, the matrix transpose)."""
    dim0, dim1 = axis_index("transpose", dim0, x.ndim), axis_index("transpose", dim1, x.ndim)
    axes = list(range(x.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return Permute.apply(x, axes=tuple(axes))


def getitem(x, index):
    """x[index]: ints, slices, None, Ellipsis, integer arrays/tensors, boolean masks."""
    index = _plain_index(index)
    if isinstance(index, list):
        index = x.device.xp.asarray(index)
    return GetItem.apply(x, index=index)


def concatenate(tensors, axis=None, *, dim=None):
    """Join tensors along an existing axis (torch.cat)."""
    axis = pick_axis(axis, dim, default=0)
    shapes = [t.shape for t in tensors]
    for s in shapes[1:]:
        if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0])) if i != axis % len(s)):
            raise ValueError(f"concatenate: shapes {shapes} differ outside axis {axis}")
    return Concatenate.apply(*tensors, axis=axis)


cat = concatenate


def stack(tensors, axis=None, *, dim=None):
    """Stack equally shaped tensors along a new axis."""
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors need the same shape, got {sorted(shapes)}")
    return Stack.apply(*tensors, axis=pick_axis(axis, dim, default=0))


def split(x, split_size_or_sections, axis=None, *, dim=None):
    """Cut x along `axis` into chunks, PyTorch-style: an int is each chunk's size, a list the sizes."""
    axis = axis_index("split", pick_axis(axis, dim, default=0), x.ndim)
    length = x.shape[axis]
    if isinstance(split_size_or_sections, int):
        if split_size_or_sections <= 0:
            raise ValueError(f"split: chunk size must be positive, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, length - s) for s in range(0, length, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != length:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, but axis {axis} has length {length}")
    pieces, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        pieces.append(getitem(x, index))
        start += size
    return pieces


def to(x, device=None, dtype=None):
    """x on `device` and/or with float `dtype`; gradients flow back to the original."""
    from tinylora.engine.tensor import _as_dtype

    target = get_device(device) if device is not None else x.device
    dtype = _as_dtype(dtype)
    if target == x.device and (dtype is None or dtype == x.dtype):
        return x
    if dtype is not None and x.dtype.kind == "f" and dtype.kind != "f":
        raise TypeError(f"to(): cannot turn a float tensor into {dtype} and keep gradients")
    return To.apply(x, device=target, dtype=dtype)
