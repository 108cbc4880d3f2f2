"""The engine's memory and graph invariants, each a test, not a hope (the README's claims table cites them).

- a node saves only what its backward needs (frozen-weight matmul keeps no input);
- nodes are released as backward passes them, with no reference cycles;
- only leaves get .grad, and gradients accumulate (PyTorch semantics);
- a second backward through a freed graph is an error; no_grad builds no graph;
- the topological sort is iterative (a 10,000-op chain works);
- float32 stays float32.
"""

import gc

import numpy as np
import pytest

import tinylora
import tinylora.functional as F
from tinylora.engine.backend import memory
from tinylora.nn import Linear, Parameter


def _saved_bytes():
    return memory.stats()["current"]["saved"]


def _float32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_frozen_weight_linear_saves_no_input():
    # y = x @ W.T with W frozen: dx = dy @ W needs W (a parameter), not x
    x = tinylora.tensor(_float32(64, 32), requires_grad=True)
    w = Parameter(_float32(16, 32), requires_grad=False)
    before = _saved_bytes()
    y = F.linear(x, w)
    assert _saved_bytes() - before == 0, "a frozen-weight linear must not keep its input"
    assert y._ctx.saved[1] is None  # the slot for x
    assert y._ctx.saved[0] is w.data


def test_trainable_weight_linear_saves_exactly_its_input():
    # dW = dy.T @ x needs x; with x not requiring grad, W itself is not needed
    x = tinylora.tensor(_float32(64, 32))
    w = Parameter(_float32(16, 32))
    before = _saved_bytes()
    y = F.linear(x, w)
    assert _saved_bytes() - before == x.data.nbytes
    assert y._ctx.saved[0] is None


def test_matmul_saves_only_the_other_operand():
    a = tinylora.tensor(_float32(8, 4), requires_grad=True)
    b = tinylora.tensor(_float32(4, 5))  # no grad: a's gradient needs b only
    y = a @ b
    assert y._ctx.saved[1] is None and y._ctx.saved[0] is b.data


def _mlp_step(model_layers, x, targets):
    h = x
    for i, layer in enumerate(model_layers):
        h = layer(h)
        if i < len(model_layers) - 1:
            h = h.relu()
    return F.cross_entropy(h, targets)


def test_bytes_return_to_pre_forward_level_plus_gradients():
    layers = [Linear(32, 64), Linear(64, 64), Linear(64, 10)]
    x = tinylora.tensor(_float32(128, 32))
    targets = tinylora.tensor(np.arange(128) % 10)
    gc.collect()
    before = memory.total()
    loss = _mlp_step(layers, x, targets)
    assert memory.total() > before  # activations and saved arrays are alive now
    loss.backward()
    del loss
    grad_bytes = sum(p.grad.data.nbytes for layer in layers for p in layer.parameters())
    # no gc.collect(): everything must be freed by reference counting alone (no cycles)
    assert memory.total() == before + grad_bytes
    assert memory.stats()["current"]["saved"] == 0


def test_graph_is_freed_without_the_cycle_collector():
    gc.disable()
    try:
        layer = Linear(16, 16)
        x = tinylora.tensor(_float32(8, 16), requires_grad=True)
        before = memory.total()
        out = F.softmax(layer(x).tanh() * 2.0, axis=-1)
        assert memory.total() > before
        del out  # dropping the output must free every node and saved array, without backward
        assert memory.total() == before
    finally:
        gc.enable()


def test_backward_releases_each_node():
    x = tinylora.tensor(_float32(4, 4), requires_grad=True)
    y = x.exp()
    z = (y * y).sum()
    z.backward()
    assert y._ctx.freed and y._ctx.saved == () and y._ctx.parents == ()
    assert z._ctx.freed


def test_second_backward_through_freed_graph_raises():
    x = tinylora.tensor(_float32(3), requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already been freed"):
        loss.backward()


def test_only_leaves_get_grad():
    x = tinylora.tensor(_float32(3), requires_grad=True)
    y = x * 2.0
    y.sum().backward()
    assert x.grad is not None
    assert y.grad is None


def test_gradients_accumulate_until_zero_grad():
    x = tinylora.tensor(np.array([1.0, 2.0, 3.0], dtype=np.float32), requires_grad=True)
    for _ in range(2):
        (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * 2 * x.detach().numpy())  # d(x^2)/dx = 2x, twice
    x.zero_grad()
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * x.detach().numpy())


def test_two_leaves_never_share_a_gradient_buffer():
    # an add node hands the same upstream array to both inputs; in-place updates of one .grad must not leak
    a = tinylora.tensor(_float32(3), requires_grad=True)
    b = tinylora.tensor(_float32(3), requires_grad=True)
    (a + b).sum().backward()
    a.grad.data *= 10
    np.testing.assert_array_equal(b.grad.numpy(), np.ones(3, dtype=np.float32))


def test_no_grad_builds_no_graph():
    x = tinylora.tensor(_float32(3), requires_grad=True)
    with tinylora.no_grad():
        y = (x * 3.0).exp()
    assert y._ctx is None and not y.requires_grad
    assert tinylora.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = tinylora.tensor(_float32(3), requires_grad=True)
    y = (x * 2.0).detach()
    assert y._ctx is None and not y.requires_grad


def test_deep_chain_backpropagates_without_recursion():
    x = tinylora.tensor(np.array([0.5], dtype=np.float64), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0001**10_000], rtol=1e-9)


def test_backward_on_non_scalar_needs_upstream_gradient():
    x = tinylora.tensor(_float32(2, 3), requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match="explicit upstream gradient"):
        y.backward()
    y.backward(tinylora.ones(2, 3))
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 2.0, dtype=np.float32))


def test_float32_stays_float32_through_a_network():
    layer = Linear(8, 8)
    x = tinylora.tensor(_float32(4, 8), requires_grad=True)
    h = F.gelu(F.layer_norm(layer(x), tinylora.ones(8), tinylora.zeros(8))) * np.float64(0.5) + 1.0
    loss = F.cross_entropy(h, tinylora.tensor([1, 2, 3, 4]))
    assert h.dtype == np.float32 and loss.dtype == np.float32
    loss.backward()
    assert x.grad.dtype == np.float32 and layer.weight.grad.dtype == np.float32


def test_frozen_parameter_gets_no_grad():
    layer = Linear(4, 4)
    layer.weight.requires_grad_(False)
    x = tinylora.tensor(_float32(2, 4), requires_grad=True)
    layer(x).sum().backward()
    assert layer.weight.grad is None
    assert layer.bias.grad is not None and x.grad is not None


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        tinylora.tensor([1, 2, 3], requires_grad=True)


def test_mixing_float32_and_float64_is_an_error():
    a = tinylora.tensor(np.ones(3, dtype=np.float32))
    b = tinylora.tensor(np.ones(3, dtype=np.float64))
    with pytest.raises(TypeError, match="different dtypes"):
        a + b


def test_integer_tensor_meets_float_like_pytorch():
    ints = tinylora.tensor([1, 2])
    assert (ints * 2.5).dtype == np.float32 and (2.5 * ints).dtype == np.float32
    assert (ints + 1).dtype == np.int64
    assert (ints / 2).dtype == np.float32
    np.testing.assert_array_equal((ints * 2.5).numpy(), [2.5, 5.0])
    assert (tinylora.tensor([1.0, 2.0], dtype="float64") * ints).dtype == np.float64
