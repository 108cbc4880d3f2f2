"""Small helpers shared by the ops: axis arguments, broadcast shapes, and the gradient of broadcasting."""

import numbers


def pick_axis(axis, dim, default=None):
    """Accept NumPy's `axis=` or PyTorch's `dim=` (not both; neither means `default`); a list becomes a tuple."""
    if dim is not None:
        if axis is not None and axis != dim:
            raise TypeError("give either axis= or dim=, not both")
        axis = dim
    if axis is None:
        axis = default
    if isinstance(axis, list):
        axis = tuple(axis)
    return axis


def axis_index(op_name, axis, ndim):
    """One axis as a non-negative int, or a ValueError naming the op (axis -1 of 3 axes is 2)."""
    if not isinstance(axis, numbers.Integral) or isinstance(axis, bool) or not -ndim <= axis < ndim:
        raise ValueError(f"{op_name}: axis {axis!r} is out of range for a tensor with {ndim} dimensions")
    return axis % ndim


def normalize_axes(axis, ndim):
    """The reduced axes as a sorted tuple of non-negative ints (None means all)."""
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(out))


def broadcast_shapes(op_name, *shapes):
    """The shape NumPy broadcasting makes of `shapes`, or a ValueError naming the op and the shapes.

    Shapes are aligned on their last axis; on each axis the sides must be equal or 1:
    (B, 1, C) and (T, C) give (B, T, C); (2, 3) and (4,) do not broadcast.
    """
    ndim = max(len(s) for s in shapes)
    result = []
    for axis in range(-ndim, 0):
        sides = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sides) > 1:
            listed = " and ".join(str(tuple(s)) for s in shapes)
            raise ValueError(f"{op_name}: shapes {listed} do not broadcast (axis {axis} has sides {sorted(sides)})")
        result.append(sides.pop() if sides else 1)
    return tuple(result)


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the gradient of NumPy broadcasting.

    If forward broadcast an input of shape (1, C) to (B, T, C), each of its entries
    was used B*T times, so its gradient is the sum over those axes.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad
