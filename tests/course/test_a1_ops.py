"""A1 ops and broadcasting: the tests each task is graded by (`pytest -m a1_task2`, ...).

Every gradient is checked against central differences in float64 with a random upstream gradient
(tests/gradcheck.py explains why not a bare .sum()).
"""

import numpy as np
import pytest
from gradcheck import gradcheck, random_array

import tinylora
import tinylora.functional as F
from tinylora.engine.ops._util import unbroadcast


def t64(shape, seed=0, kind="normal"):
    return tinylora.tensor(random_array(shape, seed, kind), dtype="float64", requires_grad=True)


# ------------------------------------------------------------------ task 1: unbroadcast
@pytest.mark.a1_task1
@pytest.mark.parametrize("grad_shape, shape", [
    ((2, 3, 4), (4,)), ((2, 3, 4), (1, 4)), ((2, 3, 4), (2, 1, 4)), ((2, 3, 4), (3, 1)), ((2, 3, 4), ()),
    ((5, 1, 4), (1, 1, 4)),
])
def test_unbroadcast_sums_over_the_stretched_axes(grad_shape, shape):
    grad = random_array(grad_shape, seed=1)
    # the answer by definition: an input of `shape` broadcast to grad_shape was used once per copy
    ones = np.ones(shape)
    expected = np.zeros(shape)
    for index in np.ndindex(*grad_shape):
        source = tuple(0 if n == 1 else i for i, n in zip(index[len(grad_shape) - len(shape):], shape))
        expected[source] += grad[index]
    got = unbroadcast(grad, shape)
    assert got.shape == ones.shape, f"unbroadcast to {shape} returned shape {got.shape}"
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                               err_msg="each entry of the input gets the sum of the gradient over its broadcast copies")


@pytest.mark.a1_task1
def test_unbroadcast_of_the_same_shape_changes_nothing():
    grad = random_array((3, 4))
    np.testing.assert_array_equal(unbroadcast(grad, (3, 4)), grad,
                                  err_msg="a gradient that already has the input's shape passes through unchanged")


# ------------------------------------------------------------------ task 2: exp and tanh
@pytest.mark.a1_task2
@pytest.mark.parametrize("op, reference", [(F.exp, np.exp), (F.tanh, np.tanh)])
def test_exp_and_tanh_forward_and_gradient(op, reference):
    x = t64((3, 5))
    np.testing.assert_allclose(op(x).detach().numpy(), reference(x.detach().numpy()), rtol=1e-12,
                               err_msg=f"the forward of {op.__name__} must equal NumPy's {reference.__name__}")
    gradcheck(op, [x])


@pytest.mark.a1_task2
@pytest.mark.parametrize("op", [F.exp, F.tanh])
def test_exp_and_tanh_save_their_output_not_their_input(op):
    x = t64((4,))
    y = op(x)
    saved = [a for a in y._ctx.saved if a is not None]
    assert len(saved) == 1, f"{op.__name__} should save one array for backward, saved {len(saved)}"
    np.testing.assert_array_equal(saved[0], y.detach().numpy(), err_msg="the saved array should be the output y, not x")


# ------------------------------------------------------------------ task 3: mul and div
@pytest.mark.a1_task3
@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1))])
def test_mul_and_div_gradients_with_broadcasting(shape_a, shape_b):
    a, b = t64(shape_a, 1), t64(shape_b, 2, kind="nonzero")
    gradcheck(lambda a, b: a * b, [a, b])
    gradcheck(lambda a, b: a / b, [a, b])


@pytest.mark.a1_task3
def test_mul_gives_no_gradient_to_an_input_that_does_not_want_one():
    a = t64((2, 3))
    frozen = tinylora.tensor(random_array((2, 3), 3), dtype="float64")  # requires_grad=False
    (a * frozen).backward(tinylora.tensor(np.ones((2, 3))))
    np.testing.assert_allclose(a.grad.detach().numpy(), frozen.detach().numpy(),
                               err_msg="d(a * b)/da = b")
    assert frozen.grad is None, "an input that does not require grad must get no gradient"


# ------------------------------------------------------------------ task 4: matmul
@pytest.mark.a1_task4
@pytest.mark.parametrize("shape_a, shape_b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                              ((2, 1, 3, 4), (5, 4, 6))])
def test_matmul_gradients_batched_and_broadcast(shape_a, shape_b):
    a, b = t64(shape_a, 1), t64(shape_b, 2)
    gradcheck(lambda a, b: a @ b, [a, b])
