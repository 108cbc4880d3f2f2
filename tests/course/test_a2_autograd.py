"""A2 the autograd engine: no_grad, the topological order, gradient accumulation, releasing nodes, and the
frozen-weight rule that lets LoRA save memory."""

import numpy as np
import pytest
from gradcheck import gradcheck, random_array

import tinylora
from tinylora import nn
from tinylora.engine.autograd import is_grad_enabled, no_grad, topological_order
from tinylora.engine.backend import memory


def t64(shape, seed=0, grad=True):
    return tinylora.tensor(random_array(shape, seed), dtype="float64", requires_grad=grad)


# ------------------------------------------------------------------ task 1: no_grad
@pytest.mark.a2_task1
def test_no_grad_builds_no_graph_and_restores_the_previous_state():
    x = t64((3,))
    with no_grad():
        assert not is_grad_enabled(), "inside no_grad, graph building is off"
        y = x * 2
        with no_grad():
            pass
        assert not is_grad_enabled(), "leaving an inner no_grad must not switch gradients back on"
    assert is_grad_enabled(), "leaving the outer no_grad must switch graph building back on"
    assert not y.requires_grad and y._ctx is None, "an op under no_grad must not record a node"


@pytest.mark.a2_task1
def test_no_grad_restores_the_state_after_an_exception_and_works_as_a_decorator():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled(), "an exception inside no_grad must not leave gradients off"

    @no_grad()
    def double(t):
        return t * 2

    assert not double(t64((2,))).requires_grad and is_grad_enabled(), \
        "as a decorator, no_grad switches graph building off inside the function only"


# ------------------------------------------------------------------ task 2: topological order
@pytest.mark.a2_task2
def test_every_node_comes_before_the_nodes_that_made_its_inputs():
    x = t64((3,))
    a = x * 2.0
    b, c = a + 1.0, a * 3.0
    y = b * c  # a diamond: a feeds both b and c
    order = topological_order(y._ctx)
    assert [id(n) for n in order].count(id(a._ctx)) == 1, "each node appears once"
    position = {id(n): i for i, n in enumerate(order)}
    assert set(position) == {id(t._ctx) for t in (a, b, c, y)}, "the order holds every node of the graph, and only those"
    for consumer, producer in [(y, b), (y, c), (b, a), (c, a)]:
        assert position[id(consumer._ctx)] < position[id(producer._ctx)], \
            "a node must come before the node that produced its input (its gradient is complete only then)"


@pytest.mark.a2_task2
def test_a_chain_of_ten_thousand_ops_needs_no_recursion():
    x = t64((1,))
    y = x
    for _ in range(10_000):
        y = y * 1.0
    assert len(topological_order(y._ctx)) == 10_000, "a chain of 10,000 ops has 10,000 nodes, each once"


# ------------------------------------------------------------------ task 3: accumulation
@pytest.mark.a2_task3
def test_an_input_used_twice_gets_the_sum_of_both_gradients():
    x = t64((4,))
    y = x * x + x  # dy/dx = 2x + 1
    y.backward(tinylora.tensor(np.ones(4)))
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy() + 1, rtol=1e-12,
                               err_msg="a leaf used three times gets the sum of all three gradients: 2x + 1")


@pytest.mark.a2_task3
def test_gradients_of_a_diamond_and_only_leaves_get_grad():
    x = t64((2, 3), 1)
    w = t64((3,), 2)
    gradcheck(lambda x, w: (x * w + x) * (x - w), [x, w])
    a = x * 2.0
    (a * a).backward(tinylora.tensor(np.ones((2, 3))))
    assert a.grad is None, "intermediate tensors never get .grad"


@pytest.mark.a2_task3
def test_two_backward_passes_add_up():
    x = t64((3,))
    for _ in range(2):
        (x * 3.0).backward(tinylora.tensor(np.ones(3)))
    np.testing.assert_allclose(x.grad.numpy(), 6.0, err_msg="two backward passes add into .grad: 3 + 3 = 6")


# ------------------------------------------------------------------ task 4: releasing nodes
@pytest.mark.a2_task4
def test_backward_releases_every_node_and_a_second_backward_is_an_error():
    x = t64((5,))
    a = x.exp()
    y = a * x
    nodes = [a._ctx, y._ctx]
    y.backward(tinylora.tensor(np.ones(5)))
    for node in nodes:
        assert node.freed and node.saved == () and node.parents == (), \
            "after backward a node keeps nothing: no saved arrays, no links"
    with pytest.raises(RuntimeError, match="freed"):
        y.backward(tinylora.tensor(np.ones(5)))


@pytest.mark.a2_task4
def test_saved_memory_returns_to_zero_after_backward():
    x = t64((64, 64))
    before = memory.stats()["current"]["saved"]
    y = (x.exp() * x).tanh()
    assert memory.stats()["current"]["saved"] > before, "a forward that needs gradients saves arrays for backward"
    y.backward(tinylora.tensor(np.ones((64, 64))))
    assert memory.stats()["current"]["saved"] == before, "released nodes must stop counting their saved arrays"


# ------------------------------------------------------------------ task 5: the frozen-weight rule
@pytest.mark.a2_task5
@pytest.mark.parametrize("weight_trains", [True, False])
def test_linear_saves_x_only_when_the_weight_trains(weight_trains):
    layer = nn.Linear(8, 6, dtype="float64")
    layer.weight.requires_grad_(weight_trains)
    x = t64((4, 3, 8))
    y = layer(x)
    np.testing.assert_allclose(y.detach().numpy(), x.detach().numpy() @ layer.weight.detach().numpy().T
                               + layer.bias.detach().numpy(), rtol=1e-12, err_msg="y = x Wᵀ + b")
    saved_sizes = sorted(a.size for a in y._ctx.saved if a is not None)
    if weight_trains:
        assert 4 * 3 * 8 in saved_sizes, "a trainable W needs x for dW = dyᵀ x"
    else:
        assert saved_sizes == [6 * 8], f"with W frozen the node must keep W only (not x), kept sizes {saved_sizes}"


@pytest.mark.a2_task5
def test_linear_gradients():
    layer = nn.Linear(5, 4, dtype="float64")
    x = t64((2, 3, 5), 3)
    gradcheck(lambda x, w, b: tinylora.functional.linear(x, w, b), [x, layer.weight, layer.bias])


@pytest.mark.a2_task3
def test_a_node_used_twice_receives_the_sum_of_both_gradients():
    x = t64((4,))
    a = x * 2.0  # an intermediate node, used twice below
    (a * a).backward(tinylora.tensor(np.ones(4)))
    np.testing.assert_allclose(x.grad.numpy(), 8 * x.detach().numpy(), rtol=1e-12,
                               err_msg="a node used twice must receive the sum of both gradients: d(2x)²/dx = 8x")


@pytest.mark.a2_task3
def test_a_gradient_array_two_inputs_share_is_never_added_into_in_place():
    x = t64((3,))
    a, b = x * 2.0, x * 3.0
    y = (a + b) + a  # the sums hand the same gradient array to both of their inputs
    y.backward(tinylora.tensor(np.ones(3)))
    np.testing.assert_allclose(x.grad.numpy(), 7.0, rtol=1e-12,
                               err_msg="dy/dx = 2 + 3 + 2 = 7: adding in place into an array another input "
                                       "shares changes that input's gradient too")


@pytest.mark.a2_task3
def test_a_one_input_op_passes_its_whole_gradient_on():
    x = t64((3, 4), 5)
    gradcheck(lambda x: (x * 1.5).exp(), [x])
