"""Edge cases of the engine and the layers: one clear error, or the value PyTorch gives.

- an axis out of range (transpose(0, 4) on a 3-D tensor, permute, split) names the op and the axis;
- a forward pass over zero tokens, a reduction or softmax over an empty axis: a clear error;
- nn.Linear(0, 4) and friends: a clear error instead of a ZeroDivisionError in the init;
- gelu(3e38) is 3e38 in float32 (PyTorch's value), not inf;
- `dim=` works wherever `axis=` has a default other than None (softmax, cat, stack, split);
- `to()` is an ordinary node made by Function.apply: gradients flow back across device and dtype.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import tinylora
import tinylora.functional as F
from tinylora.engine.ops.shape import To
from tinylora.model.gpt import GPT, GPTConfig


def raises_naming(exception, *words):
    return pytest.raises(exception, match="(?s)" + "".join(f"(?=.*{re.escape(w)})" for w in words))


# ----------------------------------------------------------------- axes out of range
def test_transpose_with_an_axis_out_of_range_names_it():
    x = tinylora.zeros(2, 3, 4)
    with raises_naming(ValueError, "transpose", "axis 4", "3 dimensions"):
        x.transpose(0, 4)
    with raises_naming(ValueError, "transpose", "axis -4"):
        F.transpose(x, -4, 0)
    assert x.transpose(0, -1).shape == (4, 3, 2)


def test_permute_with_an_axis_out_of_range_is_refused_not_wrapped():
    x = tinylora.zeros(2, 3, 4)
    with raises_naming(ValueError, "permute", "axis 5"):
        x.permute(0, 1, 5)  # 5 % 3 == 2 would silently pass as a valid ordering
    assert x.permute(2, 0, 1).shape == (4, 2, 3)


def test_split_with_an_axis_out_of_range_is_refused_not_wrapped():
    with raises_naming(ValueError, "split", "axis 3"):
        tinylora.zeros(2, 3).split(1, axis=3)


# ----------------------------------------------------------------- empty inputs
def test_a_forward_pass_over_zero_tokens_is_a_clear_error():
    model = GPT(GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=2, n_embd=8))
    for shape in [(1, 0), (0, 3)]:
        with raises_naming(ValueError, "GPT", str(shape), "at least one"):
            model(np.zeros(shape, dtype=np.int64))


def test_cross_entropy_over_zero_positions_is_a_clear_error():
    with raises_naming(ValueError, "cross_entropy", "no positions"):
        F.cross_entropy(tinylora.zeros(0, 3), np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize("op", ["max", "softmax", "log_softmax"])
def test_an_empty_axis_is_a_clear_error_where_the_result_is_undefined(op):
    with raises_naming(ValueError, op, "(2, 0)"):
        getattr(F, op)(tinylora.zeros(2, 0), axis=1)


def test_layers_on_zero_rows_give_empty_outputs():
    assert tinylora.nn.Linear(3, 4)(tinylora.zeros(0, 3)).shape == (0, 4)
    assert F.layer_norm(tinylora.zeros(0, 3), tinylora.ones(3), tinylora.zeros(3)).shape == (0, 3)
    assert F.sum(tinylora.zeros(2, 0), axis=1).numpy().tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: tinylora.nn.Linear(0, 4), ["Linear", "in_features", "0"]),
        (lambda: tinylora.nn.Linear(4, 0), ["Linear", "out_features", "0"]),
        (lambda: tinylora.nn.Linear(3, 2.5), ["Linear", "out_features", "2.5"]),
        (lambda: tinylora.nn.Embedding(0, 4), ["Embedding", "num_embeddings"]),
        (lambda: tinylora.nn.LayerNorm(-1), ["LayerNorm", "dim", "-1"]),
    ],
)
def test_layers_with_a_non_positive_size_are_refused(make, words):
    with raises_naming(ValueError, *words):
        make()


# ----------------------------------------------------------------- numerics
def test_gelu_of_a_huge_float32_is_itself_not_inf():
    x = tinylora.tensor(np.array([3e38, -3e38, 1e20, 50.0], dtype=np.float32))
    with np.errstate(over="ignore"):  # x^3 overflows inside; the result must not
        y = F.gelu(x).numpy()
    # PyTorch (gelu, approximate="tanh") gives 3e38, -0, 1e20, 50 here
    np.testing.assert_array_equal(y, np.array([3e38, -0.0, 1e20, 50.0], dtype=np.float32))


# ----------------------------------------------------------------- dim= keyword
def test_dim_keyword_where_axis_has_a_default():
    x = tinylora.tensor(np.arange(6.0).reshape(2, 3))
    np.testing.assert_allclose(F.softmax(x, dim=0).numpy().sum(axis=0), np.ones(3), rtol=1e-6)
    np.testing.assert_allclose(x.log_softmax(dim=0).numpy(), F.log_softmax(x, axis=0).numpy())
    assert F.cat([x, x], dim=1).shape == (2, 6) and F.stack([x, x], dim=2).shape == (2, 3, 2)
    assert [p.shape for p in x.split(1, dim=1)] == [(2, 1)] * 3


# ----------------------------------------------------------------- to() is an ordinary node
def test_to_is_a_node_made_by_apply_and_gradients_flow_back():
    a = tinylora.tensor([1.0, 2.0], dtype="float64", requires_grad=True, device="cpu")
    b = a.to("fake", dtype="float32")
    assert isinstance(b._ctx, To) and b._ctx.parents == (a,)
    assert b.device == "fake" and b.dtype == np.float32
    (b * b).sum().backward()
    assert a.grad.device == "cpu" and a.grad.dtype == np.float64
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 4.0])


def test_to_without_grad_builds_no_node():
    a = tinylora.tensor([1.0, 2.0], requires_grad=True, device="cpu")  # not the default: the suite also runs on fake
    with tinylora.no_grad():
        b = a.to("fake")
    assert b._ctx is None and not b.requires_grad and b.device == "fake"
