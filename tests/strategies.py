"""Hypothesis strategies shared by the test files (one definition each, imported where needed).

Shapes are kept small (sides 1..3 or 4, at most 3 or 4 axes) so that a float64
gradient check by central differences stays cheap; they include size-1 axes
and 0-d tensors, where broadcasting and reductions go wrong first.

    from strategies import seeds, small_shapes, shape_and_axes
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinylora

seeds = st.integers(0, 2**16)
sides = st.integers(1, 3)
small_shapes = hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)


@st.composite
def shape_and_axes(draw, min_dims=0):
    """(shape, axis) where axis is None, an int or a tuple of distinct ints, any of them negative."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, max_side=3))
    ndim = len(shape)
    form = draw(st.sampled_from(["none", "int", "tuple"] if ndim else ["none"]))
    if form == "none":
        return shape, None
    if form == "int":
        return shape, draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return shape, tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _steps_forward(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return all(not isinstance(i, slice) or i.step is None or i.step > 0 for i in items)


@st.composite
def shape_and_basic_index(draw, backward_steps=True):
    """(shape, index) of ints (negative too), slices with steps, None and Ellipsis.

    backward_steps=False keeps only slices that step forwards (PyTorch cannot step backwards).
    """
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    indices = hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True)
    return shape, draw(indices if backward_steps else indices.filter(_steps_forward))


@st.composite
def shape_and_repeating_index(draw, forms=("array", "tensor", "list", "ellipsis")):
    """An integer index along one axis, longer than that axis, so some index repeats (pigeonhole).

    forms: how the index is given: a NumPy array, a tinylora tensor, a list, or an array after an Ellipsis.
    """
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    axis = draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    picks = draw(st.lists(st.integers(-n, n - 1), min_size=n + 1, max_size=n + 3))
    form = draw(st.sampled_from(forms))
    if form == "array":
        picks = np.array(picks)
    elif form == "tensor":
        picks = tinylora.tensor(picks)
    elif form == "ellipsis":  # x[..., picks, :, ...]: the Ellipsis stands for the leading axes
        return shape, (Ellipsis, np.array(picks)) + (slice(None),) * (len(shape) - 1 - axis)
    return shape, (slice(None),) * axis + (picks,)


@st.composite
def shape_and_multi_array_index(draw):
    """(shape, index) with one integer array per indexed axis, broadcast together."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    return shape, draw(hnp.integer_array_indices(shape, result_shape=hnp.array_shapes(max_dims=2, max_side=4)))
