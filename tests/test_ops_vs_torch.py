"""Every op compared with PyTorch, forward and backward, in float64.

Each test builds the same inputs in tinylora and in PyTorch, runs the op in
both, compares the outputs, backpropagates the same random upstream gradient
through both, and compares the gradient of every input that requires one.

Tolerance (unless a test says otherwise): rtol=1e-10, atol=1e-12. Both sides
compute in float64 (about 16 significant digits) and differ only in the order
of operations (summation order, BLAS blocking), which moves results by a few
units in the 15th digit; the margin covers cancellation in var and layer_norm.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, require
from gradcheck import random_array
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
from tinylora.engine.backend import to_host

RTOL, ATOL = 1e-10, 1e-12  # float64 on both sides; see the module docstring


@pytest.fixture(scope="module")
def torch():
    return require("torch")


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def check_against_torch(torch, tl_fn, torch_fn, arrays, needs=None, seed=0, rtol=RTOL, atol=ATOL):
    """Run tl_fn and torch_fn on float64 copies of `arrays`; compare outputs and input gradients.

    needs[i] says whether input i requires grad (default: all). Either function
    may return a list of tensors (each gets its own random upstream gradient).
    """
    needs = needs or [True] * len(arrays)
    ours = [tinylora.tensor(a, dtype="float64", requires_grad=n) for a, n in zip(arrays, needs)]
    theirs = [torch.tensor(a, dtype=torch.float64, requires_grad=n) for a, n in zip(arrays, needs)]
    our_out, their_out = _as_list(tl_fn(*ours)), _as_list(torch_fn(*theirs))
    assert len(our_out) == len(their_out)
    for k, (y, t) in enumerate(zip(our_out, their_out)):
        assert y.shape == tuple(t.shape), f"output {k}: tinylora shape {y.shape}, torch shape {tuple(t.shape)}"
        assert y.dtype == np.float64
        assert_close(to_host(y.data), t.detach().numpy(), rtol, atol, f"forward, output {k}:")

    rng = np.random.default_rng(seed)
    upstreams = [rng.standard_normal(y.shape) for y in our_out]
    for y, u in zip(our_out, upstreams):
        if y.requires_grad:  # each output of split has its own node, so one backward per output works
            y.backward(u)
    pairs = [(t, torch.from_numpy(u)) for t, u in zip(their_out, upstreams) if t.requires_grad]
    if pairs:
        torch.autograd.backward([t for t, _ in pairs], [u for _, u in pairs])
    for i, (x, t) in enumerate(zip(ours, theirs)):
        if not needs[i]:
            assert x.grad is None
            continue
        got = to_host(x.grad.data) if x.grad is not None else np.zeros(x.shape)
        expected = t.grad.numpy() if t.grad is not None else np.zeros(x.shape)
        assert got.shape == expected.shape
        assert_close(got, expected, rtol, atol, f"gradient of input {i}:")  # tolerance: see RTOL, ATOL


def torch_index(torch, index):
    """The same index for a torch tensor: arrays become torch tensors, everything else stays."""
    if isinstance(index, tuple):
        return tuple(torch_index(torch, i) for i in index)
    if isinstance(index, np.ndarray):
        return torch.from_numpy(index)
    return index


# ----------------------------------------------------------------- elementwise
BINARY = ["add", "sub", "mul", "div"]


@pytest.mark.parametrize("name", BINARY)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3), seed=seeds,
       needs=st.sampled_from([[True, True], [True, False], [False, True]]))
def test_binary(torch, name, shapes, seed, needs):
    a = random_array(shapes.input_shapes[0], seed)
    b = random_array(shapes.input_shapes[1], seed + 1, kind="nonzero" if name == "div" else "normal")
    check_against_torch(torch, getattr(F, name), getattr(torch, name), [a, b], needs, seed)


def test_python_number_operands(torch):
    x = random_array((2, 3), kind="nonzero")
    fn = lambda x: (2.5 - x) * 1.5 + 3.0 / x - x / 4.0 + (x + 1.0) ** 2  # noqa: E731  (same code, both libraries)
    check_against_torch(torch, fn, fn, [x])


UNARY = {  # name: (tinylora op, torch op, values that keep away from its kinks)
    "neg": (F.neg, "neg", "normal"),
    "exp": (F.exp, "exp", "normal"),
    "log": (F.log, "log", "positive"),
    "sqrt": (F.sqrt, "sqrt", "positive"),
    "tanh": (F.tanh, "tanh", "normal"),
    "relu": (F.relu, "relu", "nonzero"),
}


@pytest.mark.parametrize("name", UNARY)
@given(shape=small_shapes, seed=seeds)
def test_unary(torch, name, shape, seed):
    op, torch_name, kind = UNARY[name]
    check_against_torch(torch, op, getattr(torch, torch_name), [random_array(shape, seed, kind)], seed=seed)


@given(shape=small_shapes, seed=seeds)
def test_gelu_tanh_approximation(torch, shape, seed):
    gelu = torch.nn.functional.gelu
    check_against_torch(torch, F.gelu, lambda x: gelu(x, approximate="tanh"), [random_array(shape, seed)], seed=seed)


def test_relu_at_zero_has_zero_gradient(torch):
    check_against_torch(torch, F.relu, torch.relu, [np.array([-1.0, 0.0, 2.0])])  # the kink: both use 0 at x = 0


@pytest.mark.parametrize("exponent, kind", [(2, "normal"), (3, "normal"), (0, "normal"), (-1, "nonzero"),
                                            (0.5, "positive"), (1.5, "positive"), (-0.5, "positive")])
@given(shape=small_shapes, seed=seeds)
def test_pow(torch, exponent, kind, shape, seed):
    check_against_torch(torch, lambda x: F.pow(x, exponent), lambda x: torch.pow(x, exponent),
            [random_array(shape, seed, kind)], seed=seed)


# ----------------------------------------------------------------- matmul and linear
@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3), n=sides, k=sides, m=sides,
       seed=seeds, needs=st.sampled_from([[True, True], [True, False], [False, True]]))
def test_matmul_batched_and_broadcast(torch, batch, n, k, m, seed, needs):
    a = random_array(batch.input_shapes[0] + (n, k), seed)  # (..., n, k)
    b = random_array(batch.input_shapes[1] + (k, m), seed + 1)  # (..., k, m)
    check_against_torch(torch, F.matmul, torch.matmul, [a, b], needs, seed)


@pytest.mark.parametrize("vector", ["left", "right", "both"])
@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=2), n=sides, k=sides, seed=seeds)
def test_matmul_with_1d_operands(torch, vector, batch, n, k, seed):
    shapes = {"left": [(k,), batch + (k, n)], "right": [batch + (n, k), (k,)], "both": [(k,), (k,)]}[vector]
    arrays = [random_array(s, seed + i) for i, s in enumerate(shapes)]
    check_against_torch(torch, F.matmul, torch.matmul, arrays, seed=seed)


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), d_in=sides, d_out=sides, seed=seeds,
       x_grad=st.booleans(), w_grad=st.booleans(), bias=st.sampled_from([None, "frozen", "trainable"]))
def test_linear(torch, batch, d_in, d_out, seed, x_grad, w_grad, bias):
    arrays = [random_array(batch + (d_in,), seed), random_array((d_out, d_in), seed + 1)]  # x (..., in), W (out, in)
    needs = [x_grad, w_grad]
    if bias is not None:
        arrays.append(random_array((d_out,), seed + 2))
        needs.append(bias == "trainable")
    check_against_torch(torch, F.linear, torch.nn.functional.linear, arrays, needs, seed)


# ----------------------------------------------------------------- reductions

def torch_dim(axis, ndim):
    """torch wants every axis listed where NumPy says None (torch.amax has no None)."""
    return tuple(range(ndim)) if axis is None else axis


REDUCTIONS = {"sum": "sum", "mean": "mean", "max": "amax"}  # torch.amax splits ties equally, like F.max


@pytest.mark.parametrize("name", REDUCTIONS)
@given(shape_axis=shape_and_axes(), keepdims=st.booleans(), seed=seeds)
def test_reduction(torch, name, shape_axis, keepdims, seed):
    shape, axis = shape_axis
    x = random_array(shape, seed, kind="distinct" if name == "max" else "normal")
    op, torch_op = getattr(F, name), getattr(torch, REDUCTIONS[name])
    check_against_torch(torch, lambda x: op(x, axis=axis, keepdims=keepdims),
            lambda x: torch_op(x, dim=torch_dim(axis, x.ndim), keepdim=keepdims), [x], seed=seed)


@given(shape_axis=shape_and_axes(), keepdims=st.booleans(), seed=seeds)
def test_max_with_ties_matches_amax(torch, shape_axis, keepdims, seed):
    shape, axis = shape_axis
    x = np.round(random_array(shape, seed))  # few distinct values (-2..2): many ties
    check_against_torch(torch, lambda x: F.max(x, axis=axis, keepdims=keepdims),
            lambda x: torch.amax(x, dim=torch_dim(axis, x.ndim), keepdim=keepdims), [x], seed=seed)


@given(shape_axis=shape_and_axes(), keepdims=st.booleans(), ddof=st.sampled_from([0, 1]), seed=seeds)
def test_var(torch, shape_axis, keepdims, ddof, seed):
    shape, axis = shape_axis
    axes = torch_dim(axis, len(shape))
    reduced = int(np.prod([shape[a] for a in (axes if isinstance(axes, tuple) else (axes,))]))
    assume(reduced - ddof > 0)  # var needs n - ddof > 0
    check_against_torch(torch, lambda x: F.var(x, axis=axis, keepdims=keepdims, ddof=ddof),
            lambda x: torch.var(x, dim=torch_dim(axis, x.ndim), correction=ddof, keepdim=keepdims),
            [random_array(shape, seed)], seed=seed)


# ----------------------------------------------------------------- shapes
@given(shape=small_shapes, data=st.data(), seed=seeds)
def test_reshape(torch, shape, data, seed):
    size = int(np.prod(shape))
    choices = [tuple(reversed(shape)), (-1,), (size, 1), (1,) + shape + (1,)] + ([(shape[0], -1)] if shape else [])
    new_shape = data.draw(st.sampled_from(choices))
    check_against_torch(torch, lambda x: F.reshape(x, new_shape), lambda x: torch.reshape(x, new_shape),
            [random_array(shape, seed)], seed=seed)


@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, max_side=3), data=st.data(), seed=seeds)
def test_transpose(torch, shape, data, seed):
    dim0, dim1 = (data.draw(st.integers(-len(shape), len(shape) - 1)) for _ in range(2))
    check_against_torch(torch, lambda x: F.transpose(x, dim0, dim1), lambda x: torch.transpose(x, dim0, dim1),
            [random_array(shape, seed)], seed=seed)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3), data=st.data(), seed=seeds)
def test_permute_and_T(torch, shape, data, seed):
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    x = random_array(shape, seed)
    check_against_torch(torch, lambda x: F.permute(x, *axes), lambda x: x.permute(*axes), [x], seed=seed)
    reverse = tuple(reversed(range(len(shape))))
    check_against_torch(torch, lambda x: x.T, lambda x: x.permute(*reverse), [x], seed=seed)


# ----------------------------------------------------------------- indexing

@given(shape_index=shape_and_basic_index(backward_steps=False), seed=seeds)
def test_getitem_basic(torch, shape_index, seed):
    shape, index = shape_index
    check_against_torch(torch, lambda x: x[index], lambda x: x[index], [random_array(shape, seed)], seed=seed)



@given(shape_index=shape_and_repeating_index(forms=("array",)), seed=seeds)
def test_getitem_repeated_integer_indices(torch, shape_index, seed):
    shape, index = shape_index
    check_against_torch(torch, lambda x: x[index], lambda x: x[torch_index(torch, index)], [random_array(shape, seed)], seed=seed)



@given(shape_index=shape_and_multi_array_index(), seed=seeds)
def test_getitem_several_integer_arrays(torch, shape_index, seed):
    shape, index = shape_index
    check_against_torch(torch, lambda x: x[index], lambda x: x[torch_index(torch, index)], [random_array(shape, seed)], seed=seed)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), data=st.data(), seed=seeds)
def test_getitem_boolean_mask(torch, shape, data, seed):
    k = data.draw(st.integers(1, len(shape)))
    mask = data.draw(hnp.arrays(bool, shape[:k]))  # over the leading k axes
    check_against_torch(torch, lambda x: x[mask], lambda x: x[torch.as_tensor(mask)], [random_array(shape, seed)], seed=seed)


# ----------------------------------------------------------------- joining and splitting
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), lengths=st.lists(sides, min_size=1, max_size=3),
       data=st.data(), seed=seeds)
def test_concatenate(torch, shape, lengths, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = axis % len(shape)
    arrays = [random_array(shape[:a] + (n,) + shape[a + 1:], seed + i) for i, n in enumerate(lengths)]
    check_against_torch(torch, lambda *xs: F.concatenate(list(xs), axis=axis), lambda *xs: torch.cat(xs, dim=axis), arrays,
            seed=seed)


@given(shape=small_shapes, count=st.integers(1, 3), data=st.data(), seed=seeds)
def test_stack(torch, shape, count, data, seed):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    arrays = [random_array(shape, seed + i) for i in range(count)]
    check_against_torch(torch, lambda *xs: F.stack(list(xs), axis=axis), lambda *xs: torch.stack(xs, dim=axis), arrays, seed=seed)


@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=seeds)
def test_split(torch, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    length = shape[axis]
    if data.draw(st.booleans()):
        sizes = data.draw(st.integers(1, length + 1))  # one chunk length; the last chunk may be shorter
    else:
        cuts = sorted(data.draw(st.sets(st.integers(1, length - 1), max_size=length - 1))) if length > 1 else []
        bounds = [0] + cuts + [length]
        sizes = [b - a for a, b in zip(bounds, bounds[1:])]
    check_against_torch(torch, lambda x: F.split(x, sizes, axis=axis), lambda x: torch.split(x, sizes, dim=axis),
            [random_array(shape, seed)], seed=seed)


# ----------------------------------------------------------------- selecting
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seed=seeds)
def test_where(torch, shapes, seed):
    cond_shape, a_shape, b_shape = shapes.input_shapes
    cond = random_array(cond_shape, seed) > 0
    check_against_torch(torch, lambda a, b: F.where(cond, a, b), lambda a, b: torch.where(torch.as_tensor(cond), a, b),
            [random_array(a_shape, seed + 1), random_array(b_shape, seed + 2)], seed=seed)


@given(shape=small_shapes, data=st.data(), value=st.floats(-10, 10), seed=seeds)
def test_masked_fill(torch, shape, data, value, seed):
    suffix = shape[data.draw(st.integers(0, len(shape))):]
    mask_shape = tuple(1 if data.draw(st.booleans()) else n for n in suffix)  # broadcasts to shape
    mask = random_array(mask_shape, seed) > 0
    check_against_torch(torch, lambda x: F.masked_fill(x, mask, value), lambda x: x.masked_fill(torch.as_tensor(mask), value),
            [random_array(shape, seed + 1)], seed=seed)


@given(vocab=st.integers(1, 5), dim=sides, data=st.data(), seed=seeds)
def test_embedding(torch, vocab, dim, data, seed):
    ids_shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, max_side=4))
    ids = data.draw(hnp.arrays(np.int64, ids_shape, elements=st.integers(0, vocab - 1)))
    check_against_torch(torch, lambda w: F.embedding(ids, w), lambda w: torch.nn.functional.embedding(torch.from_numpy(ids), w),
            [random_array((vocab, dim), seed)], seed=seed)


# ----------------------------------------------------------------- softmax, losses, normalisation
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), data=st.data(), seed=seeds)
def test_softmax(torch, name, shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    op, torch_op = getattr(F, name), getattr(torch, name)
    check_against_torch(torch, lambda x: op(x, axis=axis), lambda x: torch_op(x, dim=axis), [random_array(shape, seed)], seed=seed)


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), classes=st.integers(1, 4),
       ignore_index=st.sampled_from([-100, -1, 0]), data=st.data(), seed=seeds)
def test_cross_entropy_with_ignore_index(torch, batch, classes, ignore_index, data, seed):
    targets = data.draw(hnp.arrays(np.int64, batch, elements=st.integers(0, classes - 1)))
    targets = np.where(data.draw(hnp.arrays(bool, batch)), ignore_index, targets)
    assume((targets != ignore_index).any())  # the mean needs at least one kept target
    flat = torch.from_numpy(targets.reshape(-1))
    check_against_torch(torch, lambda z: F.cross_entropy(z, targets, ignore_index=ignore_index),
            lambda z: torch.nn.functional.cross_entropy(z.reshape(-1, classes), flat, ignore_index=ignore_index),
            [random_array(batch + (classes,), seed)], seed=seed)


@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), channels=st.integers(1, 4), seed=seeds,
       needs=st.sampled_from([[True, True, True], [True, False, False], [False, True, False], [False, False, True]]))
def test_layer_norm(torch, batch, channels, seed, needs):
    arrays = [random_array(batch + (channels,), seed), random_array((channels,), seed + 1),
              random_array((channels,), seed + 2)]  # x (..., C), weight (C,), bias (C,)
    check_against_torch(torch, lambda x, w, b: F.layer_norm(x, w, b, eps=1e-5),
            lambda x, w, b: torch.nn.functional.layer_norm(x, (channels,), w, b, eps=1e-5), arrays, needs, seed)


# ----------------------------------------------------------------- dropout and dtype casts
@given(shape=small_shapes, p=st.sampled_from([0.1, 0.5, 0.9]), seed=seeds)
def test_dropout_against_the_formula_in_torch(torch, shape, p, seed):
    # torch draws its own random numbers, so torch computes x * mask / (1 - p) with tinylora's mask
    x = random_array(shape, seed, kind="nonzero")  # no zeros: a zero in the output means "dropped"
    tinylora.manual_seed(seed)
    mask = F.dropout(tinylora.tensor(x, dtype="float64"), p).data != 0

    def ours(x):
        tinylora.manual_seed(seed)  # the same mask again
        return F.dropout(x, p)

    check_against_torch(torch, ours, lambda x: x * torch.as_tensor(mask) / (1 - p), [x], seed=seed)


@given(shape=small_shapes, seed=seeds)
def test_to_dtype_round_trip(torch, shape, seed):
    check_against_torch(torch, lambda x: x.to(dtype="float32").to(dtype="float64"),
            lambda x: x.to(torch.float32).to(torch.float64), [random_array(shape, seed)], seed=seed)
