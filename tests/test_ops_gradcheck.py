"""Every op's backward checked against central differences (see gradcheck.py), on shapes hypothesis draws.

Shapes are small (sides 1..3 or 4) and include size-1 axes and broadcasting.
Values keep away from the points where an op has no derivative: relu at 0,
ties in max, log/sqrt of non-positive numbers, division near 0. The tie
convention of max is tested on its own at the end.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import gradcheck, random_array
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import (
    seeds,
    shape_and_axes,
    shape_and_basic_index,
    shape_and_multi_array_index,
    shape_and_repeating_index,
    sides,
    small_shapes,
)

import tinylora
import tinylora.functional as F
from tinylora.engine.autograd import Function


def leaf(shape, seed=0, kind="normal", requires_grad=True):
    """A float64 leaf tensor of `shape` with values of `kind` (see random_array)."""
    return tinylora.tensor(random_array(shape, seed, kind), dtype="float64", requires_grad=requires_grad)



def reduced_count(shape, axis):
    """How many elements each output of a reduction over `axis` combines."""
    axes = range(len(shape)) if axis is None else (axis if isinstance(axis, tuple) else (axis,))
    return int(np.prod([shape[a] for a in axes]))


# ----------------------------------------------------------------- the checker itself
class DoubleWithReversedGrad(Function):
    # forward: y = 2 x      a WRONG backward: dx = 2 dy reversed (right values, wrong places)
    def forward(self, x):
        return 2 * x

    def backward(self, grad):
        return 2 * grad[::-1]


def test_gradcheck_catches_a_backward_that_a_bare_sum_would_miss():
    x = leaf((4,))
    # with upstream 1 (a bare .sum()) the reversed gradient looks right: every entry is 2
    DoubleWithReversedGrad.apply(x).sum().backward()
    assert np.allclose(x.grad.data, 2.0)
    # a random upstream tells the entries apart
    with pytest.raises(AssertionError, match="max \\|diff\\|"):
        gradcheck(lambda x: DoubleWithReversedGrad.apply(x), [x])


def test_gradcheck_refuses_float32():
    x = tinylora.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        gradcheck(F.exp, [x])


# ----------------------------------------------------------------- elementwise
BINARY = {"add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div}


@pytest.mark.parametrize("name", BINARY)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds,
       needs=st.sampled_from([(True, True), (True, False), (False, True)]))
def test_binary_with_broadcasting(name, shapes, seed, needs):
    a_shape, b_shape = shapes.input_shapes
    a = leaf(a_shape, seed, requires_grad=needs[0])
    b = leaf(b_shape, seed + 1, kind="nonzero" if name == "div" else "normal", requires_grad=needs[1])
    gradcheck(BINARY[name], [a, b])


def test_python_number_operands():
    x = leaf((2, 3), kind="nonzero")
    gradcheck(lambda x: (2.5 - x) * 1.5 + 3.0 / x - x / 4.0 + (x + 1.0) ** 2, [x])


UNARY = {  # op, values that keep away from its kinks
    "neg": (F.neg, "normal"),
    "exp": (F.exp, "normal"),
    "log": (F.log, "positive"),
    "sqrt": (F.sqrt, "positive"),
    "tanh": (F.tanh, "normal"),
    "relu": (F.relu, "nonzero"),
    "gelu": (F.gelu, "normal"),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=small_shapes, seed=seeds)
def test_unary(name, shape, seed):
    op, kind = UNARY[name]
    gradcheck(op, [leaf(shape, seed, kind)])


@pytest.mark.parametrize("exponent, kind", [(2, "normal"), (3, "normal"), (0, "normal"), (-1, "nonzero"),
                                            (0.5, "positive"), (1.5, "positive"), (-0.5, "positive")])
@given(shape=small_shapes, seed=seeds)
def test_pow(exponent, kind, shape, seed):
    gradcheck(lambda x: F.pow(x, exponent), [leaf(shape, seed, kind)])


# ----------------------------------------------------------------- matmul and linear
@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3), n=sides, k=sides, m=sides,
       seed=seeds, needs=st.sampled_from([(True, True), (True, False), (False, True)]))
def test_matmul_batched_and_broadcast(batch, n, k, m, seed, needs):
    a = leaf(batch.input_shapes[0] + (n, k), seed, requires_grad=needs[0])  # (..., n, k)
    b = leaf(batch.input_shapes[1] + (k, m), seed + 1, requires_grad=needs[1])  # (..., k, m)
    gradcheck(F.matmul, [a, b])


@pytest.mark.parametrize("vector", ["left", "right", "both"])
@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=2), n=sides, k=sides, seed=seeds)
def test_matmul_with_1d_operands(vector, batch, n, k, seed):
    if vector == "left":  # (k,) @ (..., k, n)
        a, b = leaf((k,), seed), leaf(batch + (k, n), seed + 1)
    elif vector == "right":  # (..., n, k) @ (k,)
        a, b = leaf(batch + (n, k), seed), leaf((k,), seed + 1)
    else:  # (k,) @ (k,): a dot product
        a, b = leaf((k,), seed), leaf((k,), seed + 1)
    gradcheck(F.matmul, [a, b])


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), d_in=sides, d_out=sides, seed=seeds,
       x_grad=st.booleans(), w_grad=st.booleans(), bias=st.sampled_from([None, "frozen", "trainable"]))
def test_linear(batch, d_in, d_out, seed, x_grad, w_grad, bias):
    assume(x_grad or w_grad or bias == "trainable")
    x = leaf(batch + (d_in,), seed, requires_grad=x_grad)  # (..., in)
    w = leaf((d_out, d_in), seed + 1, requires_grad=w_grad)  # (out, in); frozen when w_grad is False
    inputs = [x, w]
    if bias is not None:
        inputs.append(leaf((d_out,), seed + 2, requires_grad=bias == "trainable"))
    gradcheck(lambda *t: F.linear(*t), inputs)


# ----------------------------------------------------------------- reductions
@pytest.mark.parametrize("name", ["sum", "mean", "max"])
@given(shape_axis=shape_and_axes(), keepdims=st.booleans(), seed=seeds)
def test_reduction(name, shape_axis, keepdims, seed):
    shape, axis = shape_axis
    x = leaf(shape, seed, kind="distinct" if name == "max" else "normal")  # distinct: max has no ties
    op = getattr(F, name)
    gradcheck(lambda x: op(x, axis=axis, keepdims=keepdims), [x])


@given(shape_axis=shape_and_axes(), keepdims=st.booleans(), ddof=st.sampled_from([0, 1]), seed=seeds)
def test_var(shape_axis, keepdims, ddof, seed):
    shape, axis = shape_axis
    assume(reduced_count(shape, axis) - ddof > 0)
    gradcheck(lambda x: F.var(x, axis=axis, keepdims=keepdims, ddof=ddof), [leaf(shape, seed)])


def test_max_splits_the_gradient_equally_between_ties():
    x = tinylora.tensor([[1.0, 3.0, 3.0, 2.0],
                         [5.0, 5.0, 5.0, 0.0]], dtype="float64", requires_grad=True)
    u = np.array([2.0, 6.0])
    F.max(x, axis=1).backward(u)
    expected = np.array([[0.0, 1.0, 1.0, 0.0],   # two tied maxima share 2.0
                         [2.0, 2.0, 2.0, 0.0]])  # three share 6.0
    np.testing.assert_array_equal(x.grad.data, expected)
    # over all axes: the three 5.0 share the gradient, and the shares add up to it
    x.grad = None
    F.max(x).backward(np.array(3.0))
    assert x.grad.data.sum() == pytest.approx(3.0)
    np.testing.assert_allclose(x.grad.data[1, :3], 1.0)


# ----------------------------------------------------------------- shapes
@st.composite
def shape_and_new_shape(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    size = int(np.prod(shape))
    new_shapes = [tuple(reversed(shape)), (-1,), (size, 1), (1,) + shape + (1,)]
    if shape:
        new_shapes.append((shape[0], -1))
    return shape, draw(st.sampled_from(new_shapes))


@given(shapes=shape_and_new_shape(), seed=seeds)
def test_reshape(shapes, seed):
    shape, new_shape = shapes
    gradcheck(lambda x: F.reshape(x, new_shape), [leaf(shape, seed)])


@st.composite
def shape_and_two_axes(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, max_side=3))
    ndim = len(shape)
    return shape, draw(st.integers(-ndim, ndim - 1)), draw(st.integers(-ndim, ndim - 1))


@given(shape_dims=shape_and_two_axes(), seed=seeds)
def test_transpose(shape_dims, seed):
    shape, dim0, dim1 = shape_dims
    gradcheck(lambda x: F.transpose(x, dim0, dim1), [leaf(shape, seed)])


@st.composite
def shape_and_permutation(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=3))
    ndim = len(shape)
    axes = draw(st.permutations(range(ndim)))
    return shape, tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@given(shape_axes=shape_and_permutation(), seed=seeds)
def test_permute_and_T(shape_axes, seed):
    shape, axes = shape_axes
    x = leaf(shape, seed)
    gradcheck(lambda x: F.permute(x, *axes), [x])
    gradcheck(lambda x: x.T, [x])


# ----------------------------------------------------------------- indexing

@given(shape_index=shape_and_basic_index(), seed=seeds)
def test_getitem_basic(shape_index, seed):
    """Ints (negative too), slices with steps, None and Ellipsis."""
    shape, index = shape_index
    gradcheck(lambda x: x[index], [leaf(shape, seed)])



@given(shape_index=shape_and_repeating_index(), seed=seeds)
def test_getitem_repeated_integer_indices(shape_index, seed):
    shape, index = shape_index
    gradcheck(lambda x: x[index], [leaf(shape, seed)])



@given(shape_index=shape_and_multi_array_index(), seed=seeds)
def test_getitem_several_integer_arrays(shape_index, seed):
    shape, index = shape_index
    gradcheck(lambda x: x[index], [leaf(shape, seed)])


@st.composite
def shape_and_mask(draw):
    """A boolean mask over the leading `k` axes of the shape."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    k = draw(st.integers(1, len(shape)))
    return shape, draw(hnp.arrays(bool, shape[:k]))


@given(shape_mask=shape_and_mask(), seed=seeds)
def test_getitem_boolean_mask(shape_mask, seed):
    shape, mask = shape_mask
    gradcheck(lambda x: x[mask], [leaf(shape, seed)])


# ----------------------------------------------------------------- joining and splitting
@st.composite
def pieces_and_axis(draw):
    """Shapes that agree everywhere except along `axis` (which may be negative)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=3))
    ndim = len(shape)
    axis = draw(st.integers(-ndim, ndim - 1))
    lengths = draw(st.lists(sides, min_size=1, max_size=3))
    shapes = [shape[: axis % ndim] + (n,) + shape[axis % ndim + 1:] for n in lengths]
    return shapes, axis


@given(shapes_axis=pieces_and_axis(), seed=seeds)
def test_concatenate(shapes_axis, seed):
    shapes, axis = shapes_axis
    xs = [leaf(s, seed + i) for i, s in enumerate(shapes)]
    gradcheck(lambda *xs: F.concatenate(list(xs), axis=axis), xs)


@given(shape=small_shapes, count=st.integers(1, 3), data=st.data(), seed=seeds)
def test_stack(shape, count, data, seed):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    xs = [leaf(shape, seed + i) for i in range(count)]
    gradcheck(lambda *xs: F.stack(list(xs), axis=axis), xs)


@st.composite
def split_plan(draw):
    """(shape, sizes, axis): sizes is a chunk length (int) or a list of lengths adding up to the axis."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    ndim = len(shape)
    axis = draw(st.integers(-ndim, ndim - 1))
    length = shape[axis]
    if draw(st.booleans()):
        return shape, draw(st.integers(1, length + 1)), axis
    cuts = sorted(draw(st.sets(st.integers(1, length - 1), max_size=length - 1))) if length > 1 else []
    bounds = [0] + cuts + [length]
    return shape, [b - a for a, b in zip(bounds, bounds[1:])], axis


@given(plan=split_plan(), seed=seeds)
def test_split(plan, seed):
    shape, sizes, axis = plan
    gradcheck(lambda x: F.split(x, sizes, axis=axis), [leaf(shape, seed)])  # every piece gets an upstream


# ----------------------------------------------------------------- selecting
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
def test_where(shapes, seed):
    cond_shape, a_shape, b_shape = shapes.input_shapes
    cond = random_array(cond_shape, seed) > 0
    a, b = leaf(a_shape, seed + 1), leaf(b_shape, seed + 2)
    gradcheck(lambda a, b: F.where(cond, a, b), [a, b])
    gradcheck(lambda a: F.where(cond, a, 0.5), [a])  # a Python number as the other branch


@st.composite
def shape_and_mask_shape(draw):
    """A mask shape that broadcasts to the tensor's shape: a suffix of it with some sides set to 1."""
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3))
    suffix = shape[draw(st.integers(0, len(shape))):]
    return shape, tuple(1 if draw(st.booleans()) else n for n in suffix)


@given(shapes=shape_and_mask_shape(), value=st.floats(-10, 10), seed=seeds)
def test_masked_fill(shapes, value, seed):
    shape, mask_shape = shapes
    mask = random_array(mask_shape, seed) > 0
    gradcheck(lambda x: F.masked_fill(x, mask, value), [leaf(shape, seed + 1)])


@given(vocab=st.integers(1, 5), dim=sides, data=st.data(), seed=seeds)
def test_embedding(vocab, dim, data, seed):
    ids_shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4))
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, vocab - 1)))
    gradcheck(lambda w: F.embedding(ids, w), [leaf((vocab, dim), seed)])


def test_embedding_repeated_indices_accumulate():
    w = tinylora.tensor(np.zeros((3, 2)), dtype="float64", requires_grad=True)
    u = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])
    F.embedding(np.array([2, 0, 2]), w).backward(u)  # token 2 is used twice
    np.testing.assert_array_equal(w.grad.data, [[10.0, 20.0], [0.0, 0.0], [101.0, 202.0]])


# ----------------------------------------------------------------- softmax, losses, normalisation
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=seeds)
def test_softmax(name, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    op = getattr(F, name)
    gradcheck(lambda x: op(x, axis=axis), [leaf(shape, seed)])


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), classes=st.integers(1, 4),
       ignore_index=st.sampled_from([-100, -1, 0]), data=st.data(), seed=seeds)
def test_cross_entropy(batch, classes, ignore_index, data, seed):
    targets = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
    ignored = data.draw(hnp.arrays(bool, batch))
    targets = np.where(ignored, ignore_index, targets)
    assume((targets != ignore_index).any())  # the mean needs at least one kept target
    logits = leaf(batch + (classes,), seed)
    gradcheck(lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index), [logits])


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), channels=st.integers(2, 4), seed=seeds,
       needs=st.sampled_from([(True, True, True), (True, False, False), (False, True, False), (False, False, True)]))
def test_layer_norm(batch, channels, seed, needs):
    x = leaf(batch + (channels,), seed, requires_grad=needs[0])  # (..., C)
    weight = leaf((channels,), seed + 1, requires_grad=needs[1])  # (C,)
    bias = leaf((channels,), seed + 2, requires_grad=needs[2])  # (C,)
    gradcheck(F.layer_norm, [x, weight, bias])


# ----------------------------------------------------------------- dropout and dtype casts
@given(shape=small_shapes, p=st.sampled_from([0.1, 0.5, 0.9]), seed=seeds)
def test_dropout_with_a_fixed_seed(shape, p, seed):
    def fn(x):
        tinylora.manual_seed(seed)  # the same mask on every call
        return F.dropout(x, p)

    gradcheck(fn, [leaf(shape, seed, kind="nonzero")])


@given(shape=small_shapes, p=st.sampled_from([0.1, 0.5, 0.9]), seed=seeds)
def test_dropout_gradient_is_mask_over_keep_probability(shape, p, seed):
    x = leaf(shape, seed, kind="nonzero")  # no zeros, so a zero in y means "dropped"
    u = random_array(shape, seed + 1)
    tinylora.manual_seed(seed)
    y = F.dropout(x, p)
    mask = y.data != 0
    np.testing.assert_allclose(y.data, x.data * mask / (1 - p), rtol=1e-12)
    y.backward(u)
    np.testing.assert_allclose(x.grad.data, mask / (1 - p) * u, rtol=1e-12)


def test_dropout_keeps_about_one_minus_p():
    x = tinylora.ones(100_000)
    kept = float((F.dropout(x, 0.3).data != 0).mean())
    assert abs(kept - 0.7) < 0.01  # the standard error is sqrt(0.21 / 1e5) = 0.0015


def test_dropout_off_is_the_identity():
    x = leaf((3,))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x


@given(shape=small_shapes, seed=seeds)
def test_to_dtype_round_trip(shape, seed):
    x = leaf(shape, seed)
    # float64 -> float32 -> float64 is the identity up to float32 rounding (relative 6e-8), so a
    # step of 1e-3 makes the rounding error of the difference quotient ~1e-4 at most
    gradcheck(lambda x: x.to(dtype="float32").to(dtype="float64"), [x], eps=1e-3, atol=2e-4, rtol=2e-4)
    u = random_array(shape, seed + 1)
    x.grad = None
    y = x.float()
    assert y.dtype == np.float32
    y.double().backward(u)
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.data, u.astype(np.float32).astype(np.float64))
