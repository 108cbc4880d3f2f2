"""A3 fused ops: softmax, cross-entropy and layer norm backward, each checked against finite differences."""

import numpy as np
import pytest
from gradcheck import gradcheck, random_array

import tinylora
import tinylora.functional as F


def t64(shape, seed=0, kind="normal", grad=True):
    return tinylora.tensor(random_array(shape, seed, kind), dtype="float64", requires_grad=grad)


# ------------------------------------------------------------------ task 1: softmax
@pytest.mark.a3_task1
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_values_and_gradient(axis):
    x = t64((3, 4, 5))
    z = x.detach().numpy()
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(F.softmax(x, axis=axis).detach().numpy(), e / e.sum(axis=axis, keepdims=True), rtol=1e-12,
                               err_msg=f"softmax along axis {axis}: exp(x - max) / sum(exp(x - max))")
    gradcheck(lambda x: F.softmax(x, axis=axis), [x])


@pytest.mark.a3_task1
def test_softmax_does_not_overflow():
    x = tinylora.tensor([[1000.0, 1001.0, 1002.0]], dtype="float64")
    y = F.softmax(x).detach().numpy()
    assert np.isfinite(y).all(), "softmax of large logits overflowed: subtract the row maximum before exp"
    np.testing.assert_allclose(y.sum(), 1.0, err_msg="softmax probabilities sum to 1")


# ------------------------------------------------------------------ task 2: cross-entropy
@pytest.mark.a3_task2
def test_cross_entropy_gradient():
    logits = t64((2, 3, 7))
    targets = tinylora.tensor(np.array([[0, 6, 3], [2, 2, 5]]))
    gradcheck(lambda z: F.cross_entropy(z, targets), [logits])


@pytest.mark.a3_task2
def test_cross_entropy_ignored_rows_get_zero_gradient():
    logits = t64((4, 5))
    targets = tinylora.tensor(np.array([1, -100, 3, -100]))
    F.cross_entropy(logits, targets).backward()
    g = logits.grad.detach().numpy()
    np.testing.assert_array_equal(g[[1, 3]], 0.0, err_msg="rows with target == ignore_index must get no gradient")
    p = np.exp(logits.detach().numpy()[[0, 2]])
    p /= p.sum(axis=1, keepdims=True)
    p[0, 1] -= 1
    p[1, 3] -= 1
    np.testing.assert_allclose(g[[0, 2]], p / 2, rtol=1e-10, err_msg="(softmax - onehot) / kept rows")


# ------------------------------------------------------------------ task 3: layer norm
@pytest.mark.a3_task3
def test_layer_norm_gradients_for_x_weight_and_bias():
    x, w, b = t64((2, 3, 6), 1), t64((6,), 2), t64((6,), 3)
    gradcheck(lambda x, w, b: F.layer_norm(x, w, b), [x, w, b])


@pytest.mark.a3_task3
def test_layer_norm_gradient_for_x_alone():
    x = t64((4, 5), 4)
    w, b = t64((5,), 5, grad=False), t64((5,), 6, grad=False)
    gradcheck(lambda x: F.layer_norm(x, w, b), [x])
