"""Small helpers shared by the ops."""


def pick_axis(axis, dim):
    """Accept NumPy's `axis=` or PyTorch's `dim=` (not both); a list becomes a tuple."""
    if dim is not None:
        if axis is not None and axis != dim:
            raise TypeError("give either axis= or dim=, not both")
        axis = dim
    if isinstance(axis, list):
        axis = tuple(axis)
    return axis


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
