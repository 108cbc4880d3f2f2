"""Bad input gets a clear error, and dtypes never change behind the user's back.

- a shape mismatch names the op and both shapes;
- float32 and float64 never mix in one op, and 'cpu' and 'fake' tensors never meet;
- only floating tensors can require a gradient;
- float32 stays float32 through every op and its backward, even next to a NumPy
  float64 scalar (under NumPy 2, `float32_array * np.float64(2.0)` is float64);
- backward() from a non-scalar needs an explicit upstream gradient.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import tinylora
import tinylora.functional as F


def f32(*shape, requires_grad=False, device=None):
    """A float32 tensor of `shape` with values in [0.5, 1.5) (safe for log, sqrt, division)."""
    values = np.random.default_rng(0).uniform(0.5, 1.5, size=shape).astype(np.float32)
    return tinylora.tensor(values, requires_grad=requires_grad, device=device)


def f64(*shape, requires_grad=False, device=None):
    return tinylora.tensor(np.ones(shape), dtype="float64", requires_grad=requires_grad, device=device)


def raises_naming(exception, *words):
    """pytest.raises that also checks the message mentions every word (shapes, op names, dtypes)."""
    return pytest.raises(exception, match="(?s)" + "".join(f"(?=.*{re.escape(w)})" for w in words))


# ----------------------------------------------------------------- shape mismatches
@pytest.mark.parametrize("op", [F.add, F.sub, F.mul, F.div])
def test_elementwise_shapes_that_do_not_broadcast(op):
    with raises_naming(ValueError, op.__name__, "(2, 3)", "(4,)"):
        op(f32(2, 3), f32(4))


def test_operators_report_the_op_and_both_shapes():
    with raises_naming(ValueError, "add", "(2, 3)", "(2,)"):
        f32(2, 3) + f32(2)
    with raises_naming(ValueError, "mul", "(3, 1, 5)", "(4, 6)"):
        f32(3, 1, 5) * f32(4, 6)


def test_matmul_shapes_that_do_not_align():
    with raises_naming(ValueError, "matmul", "(2, 3)", "(4, 5)"):
        f32(2, 3) @ f32(4, 5)
    with raises_naming(ValueError, "matmul", "(3,)", "(2, 5)"):
        F.matmul(f32(3), f32(2, 5))
    with raises_naming(ValueError, "matmul", "(2, 3, 4)", "(5, 4, 2)"):  # batch axes 2 and 5
        F.matmul(f32(2, 3, 4), f32(5, 4, 2))


def test_linear_input_that_does_not_match_the_weight():
    with raises_naming(ValueError, "linear", "(2, 3)", "(4, 5)"):
        F.linear(f32(2, 3), f32(4, 5))
    with raises_naming(ValueError, "linear", "bias", "(3,)"):
        F.linear(f32(2, 5), f32(4, 5), f32(3))


BAD_INPUT = {  # name: (call, exception, words the message must contain)
    "where": (lambda: F.where(np.ones(5, bool), f32(2, 3), f32(3)), ValueError, ["where", "(5,)", "(2, 3)"]),
    "masked_fill enlarges": (lambda: F.masked_fill(f32(1, 3), np.ones((2, 3), bool), 0.0), ValueError,
                             ["masked_fill", "(2, 3)", "(1, 3)"]),
    "masked_fill mask dtype": (lambda: F.masked_fill(f32(3), np.ones(3), 0.0), TypeError, ["boolean"]),
    "reshape": (lambda: F.reshape(f32(2, 3), 4, 2), ValueError, ["reshape", "(2, 3)", "(4, 2)"]),
    "permute": (lambda: F.permute(f32(2, 3), 0, 0), ValueError, ["permute", "(2, 3)"]),
    "concatenate": (lambda: F.concatenate([f32(2, 3), f32(2, 4)], axis=0), ValueError,
                    ["concatenate", "(2, 3)", "(2, 4)"]),
    "stack": (lambda: F.stack([f32(2, 3), f32(3, 2)]), ValueError, ["stack", "(2, 3)", "(3, 2)"]),
    "split": (lambda: F.split(f32(5), [2, 2]), ValueError, ["split", "[2, 2]", "5"]),
    "layer_norm": (lambda: F.layer_norm(f32(2, 4), f32(3), f32(4)), ValueError, ["layer_norm", "(3,)", "(2, 4)"]),
    "cross_entropy shape": (lambda: F.cross_entropy(f32(2, 5), np.array([1, 2, 3])), ValueError,
                            ["cross_entropy", "(3,)", "(2,)"]),
    "cross_entropy dtype": (lambda: F.cross_entropy(f32(2, 5), np.array([1.0, 2.0])), TypeError,
                            ["cross_entropy", "float"]),
    "cross_entropy range": (lambda: F.cross_entropy(f32(2, 5), np.array([1, 5])), IndexError, ["cross_entropy", "5"]),
    "embedding range": (lambda: F.embedding(np.array([0, 7]), f32(4, 2)), IndexError, ["embedding", "7", "4 rows"]),
    "embedding dtype": (lambda: F.embedding(np.array([0.0]), f32(4, 2)), TypeError, ["embedding", "float"]),
    "dropout p": (lambda: F.dropout(f32(3), 1.0), ValueError, ["dropout", "p"]),
    "pow exponent": (lambda: F.pow(f32(3), f32(3)), TypeError, ["pow", "exponent"]),
    "var ddof": (lambda: F.var(f32(1, 3), axis=0, ddof=1), ValueError, ["var", "ddof"]),
    "axis": (lambda: F.sum(f32(2, 3), axis=2), ValueError, ["axis 2", "2 dimensions"]),
}


@pytest.mark.parametrize("name", BAD_INPUT)
def test_bad_input_names_what_is_wrong(name):
    call, exception, words = BAD_INPUT[name]
    with raises_naming(exception, *words):
        call()


# ----------------------------------------------------------------- dtypes and devices never mix
MIXING = {  # name: op taking (first, second), where the two may differ in dtype or device
    "add": lambda a, b: a + b,
    "mul": lambda a, b: F.mul(a, b),
    "matmul": lambda a, b: F.matmul(a.reshape(2, 3), b.reshape(3, 2)),
    "linear weight": lambda a, b: F.linear(a.reshape(2, 3), b.reshape(2, 3)),
    "where": lambda a, b: F.where(np.ones(6, bool), a, b),
    "concatenate": lambda a, b: F.concatenate([a, b]),
    "stack": lambda a, b: F.stack([a, b]),
    "layer_norm weight": lambda a, b: F.layer_norm(a.reshape(1, 6), b, a),
}


@pytest.mark.parametrize("name", MIXING)
def test_float32_and_float64_never_mix(name):
    with raises_naming(TypeError, "float32", "float64"):
        MIXING[name](f32(6, requires_grad=True), f64(6))


@pytest.mark.parametrize("name", MIXING)
def test_cpu_and_fake_devices_never_mix(name):
    with raises_naming(RuntimeError, "cpu", "fake"):
        MIXING[name](f32(6, requires_grad=True, device="cpu"), f32(6, device="fake"))


def test_index_tensors_on_another_device_are_refused():
    with raises_naming(RuntimeError, "embedding", "fake", "cpu"):
        F.embedding(tinylora.tensor([0, 1], device="fake"), f32(4, 2, device="cpu"))
    with raises_naming(RuntimeError, "cross_entropy", "fake", "cpu"):
        F.cross_entropy(f32(2, 5, device="cpu"), tinylora.tensor([0, 1], device="fake"))


def test_python_floats_take_the_tensors_dtype():
    assert (f64(3) + 2.0).dtype == np.float64  # not an error, and not float32 either
    assert (2.0 * f64(3)).dtype == np.float64


# ----------------------------------------------------------------- requires_grad
@pytest.mark.parametrize("values", [[1, 2, 3], [True, False]])
def test_integer_and_bool_tensors_cannot_require_grad(values):
    with raises_naming(TypeError, "floating"):
        tinylora.tensor(values, requires_grad=True)
    t = tinylora.tensor(values)
    with raises_naming(TypeError, "floating"):
        t.requires_grad_()
    assert not t.requires_grad


# ----------------------------------------------------------------- float32 stays float32
NP64 = np.float64(2.0)  # a NumPy float64 scalar: under NumPy 2 it would promote float32 arrays
FLOAT32_OPS = {  # name: function of a float32 (3, 4) tensor x that requires grad
    "add": lambda x: x + f32(4), "add python float": lambda x: x + 2.0,
    "add np.float64": lambda x: x + NP64, "radd np.float64": lambda x: NP64 + x,
    "sub np.float64": lambda x: x - NP64, "rsub np.float64": lambda x: NP64 - x,
    "mul np.float64": lambda x: x * NP64, "rmul np.float64": lambda x: NP64 * x,
    "mul np.sqrt": lambda x: x * np.sqrt(2.0), "mul math.sqrt": lambda x: x * math.sqrt(2.0),
    "div np.float64": lambda x: x / NP64, "rdiv np.float64": lambda x: NP64 / x,
    "neg": lambda x: -x, "pow 2": lambda x: x**2, "pow 0.5": lambda x: x**0.5, "pow np.float64": lambda x: x**NP64,
    "exp": F.exp, "log": F.log, "sqrt": F.sqrt, "tanh": F.tanh, "relu": F.relu, "gelu": F.gelu,
    "matmul": lambda x: x @ f32(4, 2), "matmul vector": lambda x: x @ f32(4),
    "linear": lambda x: F.linear(x, f32(5, 4), f32(5)), "linear frozen weight": lambda x: F.linear(x, f32(5, 4)),
    "sum": lambda x: x.sum(axis=0), "mean": lambda x: x.mean(), "max": lambda x: x.max(axis=1, keepdims=True),
    "var": lambda x: x.var(axis=-1, ddof=1),
    "reshape": lambda x: x.reshape(2, 6), "transpose": lambda x: x.transpose(0, 1),
    "permute": lambda x: x.permute(1, 0),
    "getitem slice": lambda x: x[1:, None, ::2], "getitem array": lambda x: x[np.array([0, 0, 2])],
    "getitem mask": lambda x: x[x > 1.0],
    "concatenate": lambda x: F.concatenate([x, f32(1, 4)]), "stack": lambda x: F.stack([x, x], axis=1),
    "split": lambda x: F.split(x, [1, 3], axis=1),
    "where": lambda x: F.where(x > 1.0, x, f32(4)), "where np.float64": lambda x: F.where(x > 1.0, x, NP64),
    "masked_fill np.float64": lambda x: F.masked_fill(x, np.eye(3, 4, dtype=bool), -NP64),
    "embedding": lambda x: F.embedding(np.array([[0, 2], [2, 1]]), x),
    "softmax": lambda x: F.softmax(x, axis=0), "log_softmax": F.log_softmax,
    "cross_entropy": lambda x: F.cross_entropy(x, np.array([0, -100, 3])),
    "layer_norm": lambda x: F.layer_norm(x, f32(4), f32(4)),
    "dropout": lambda x: F.dropout(x, 0.5),
    "to float64 and back": lambda x: x.double().float(),
}


@pytest.mark.parametrize("name", FLOAT32_OPS)
def test_float32_stays_float32_forward_and_backward(name):
    x = f32(3, 4, requires_grad=True)
    outputs = FLOAT32_OPS[name](x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for y in outputs:
        assert y.dtype == np.float32, f"{name}: output is {y.dtype}"
        y.backward(np.random.default_rng(1).standard_normal(y.shape))  # a float64 upstream, cast to float32
    assert x.grad is not None and x.grad.dtype == np.float32, f"{name}: gradient is {x.grad.dtype}"


# ----------------------------------------------------------------- backward needs an upstream gradient
def test_backward_from_a_non_scalar_needs_an_upstream_gradient():
    y = f32(2, 3, requires_grad=True) * 2.0
    with raises_naming(RuntimeError, "(2, 3)", "upstream gradient"):
        y.backward()


def test_backward_upstream_gradient_must_match_the_shape():
    y = f32(2, 3, requires_grad=True) * 2.0
    with raises_naming(ValueError, "(3, 2)", "(2, 3)"):
        y.backward(np.ones((3, 2)))


def test_backward_from_a_single_element_needs_no_upstream_gradient():
    x = f32(1, 1, requires_grad=True)
    (x * 3.0).backward()  # one element: the upstream gradient is 1
    np.testing.assert_array_equal(x.grad.data, [[3.0]])
