"""Every fast path in tinylora/engine/kernels/ equals the readable lines of the op it stands in for.

Each test runs an op (forward and backward) twice, kernels on and off (TINYLORA_KERNELS's switch),
on shapes that leave a ragged last block, with the blocks made small and the work shared by two
threads, so the block and thread bookkeeping is exercised on small arrays; float64 must agree to
rounding (1e-12), float32 to a few ulps. The CUDA kernels' bodies are checked through `emulate`.
"""

import math

import numpy as np
import pytest

import tinylora
import tinylora.functional as F
from tinylora.engine import kernels
from tinylora.engine.backend import threads
from tinylora.engine.kernels import blocks, cuda
from tinylora.engine.ops.gelu import C as GELU_C, K as GELU_K


@pytest.fixture
def small_blocks_two_threads(monkeypatch):
    """Blocks of 64 numbers and two workers, whatever the array size: many blocks, a ragged last one."""
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(threads, "workers_for", lambda elements: 2)


def _tolerance(dtype):
    # float32: the two orders of evaluation differ by a few ulps of 1 inside tanh, and 1 + tanh u cancels
    # for a very negative x, so the absolute error is a few ulps times |x| (inputs here reach about 10)
    return {"rtol": 1e-12, "atol": 1e-13} if dtype == np.float64 else {"rtol": 1e-5, "atol": 1e-5}


def _both_ways(fn, *arrays):
    """fn(*tensors) -> output tensor; returns [(output, grads...) with kernels on, then off]."""
    results = []
    rng = np.random.default_rng(1)
    for on in (True, False):
        kernels.set_enabled(on)
        try:
            leaves = [tinylora.tensor(a, requires_grad=True) for a in arrays]
            y = fn(*leaves)
            upstream = rng.standard_normal(y.shape).astype(y.dtype) if y.ndim else np.ones((), y.dtype)
            y.backward(tinylora.tensor(upstream))
            results.append([y.detach().numpy()] + [leaf.grad.numpy() for leaf in leaves])
        finally:
            kernels.set_enabled(True)
        rng = np.random.default_rng(1)
    return results


def _assert_same(results, dtype):
    fast, readable = results
    for a, b in zip(fast, readable):
        np.testing.assert_allclose(a, b, **_tolerance(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(7,), (3, 45), (2, 5, 33)])
def test_gelu_kernel_equals_the_readable_op(small_blocks_two_threads, dtype, shape):
    x = (np.random.default_rng(0).standard_normal(shape) * 3).astype(dtype)
    _assert_same(_both_ways(F.gelu, x), dtype)


@pytest.mark.filterwarnings("ignore:overflow")
def test_gelu_kernel_keeps_huge_inputs_finite():
    x = tinylora.tensor(np.array([3e38, -3e38, 0.0], dtype=np.float32))
    np.testing.assert_array_equal(F.gelu(x).numpy(), np.array([3e38, -0.0, 0.0], dtype=np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("b, h, t", [(1, 1, 5), (2, 3, 9)])
def test_causal_softmax_kernel_equals_the_readable_op(small_blocks_two_threads, dtype, b, h, t):
    scores = np.random.default_rng(2).standard_normal((b, h, t, t)).astype(dtype) * 4
    future = np.triu(np.ones((t, t), dtype=bool), k=1)
    _assert_same(_both_ways(lambda s: F.causal_softmax(s, 0.3, future), scores), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_kernel_equals_the_readable_op(small_blocks_two_threads, dtype):
    logits = np.random.default_rng(3).standard_normal((2, 13, 50)).astype(dtype) * 5
    targets = np.random.default_rng(4).integers(0, 50, size=(2, 13))
    targets[0, 3] = -100  # an ignored position
    _assert_same(_both_ways(lambda z: F.cross_entropy(z, targets), logits), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(5, 8), (2, 7, 24)])
def test_layer_norm_kernel_equals_the_readable_op(small_blocks_two_threads, dtype, shape):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    w, b = rng.standard_normal(shape[-1]).astype(dtype), rng.standard_normal(shape[-1]).astype(dtype)
    _assert_same(_both_ways(F.layer_norm, x, w, b), dtype)


def test_blocks_cover_every_row_once_on_two_threads(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 10)
    monkeypatch.setattr(threads, "workers_for", lambda elements: 2)
    seen = np.zeros(103, dtype=int)

    def kernel(i, j):
        seen[i:j] += 1

    blocks.run(kernel, 103, 3, like=seen)  # 3 rows per block, the last one ragged
    assert (seen == 1).all()


def test_a_worker_error_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 1)
    monkeypatch.setattr(threads, "workers_for", lambda elements: 2)

    def kernel(i, j):
        if i >= 5:
            raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        blocks.run(kernel, 10, 1, like=np.zeros(1))


def test_the_switch_really_changes_the_path(monkeypatch):
    calls = []
    monkeypatch.setattr(blocks, "run", lambda *args, **kwargs: calls.append(1))
    kernels.set_enabled(False)
    try:
        F.gelu(tinylora.tensor(np.ones(4), device="cpu"))
    finally:
        kernels.set_enabled(True)
    assert calls == []
    F.gelu(tinylora.tensor(np.ones(4), device="cpu"))  # the kernel (stubbed here) is called when the switch is on
    assert calls == [1]


def test_kernels_skip_arrays_they_do_not_take():
    assert kernels.use(np.ones((3, 4))) == "cpu"
    assert kernels.use(np.ones((3, 4)).T) is None  # not C-contiguous
    assert kernels.use(np.ones(3, dtype=np.int64)) is None


# ---------------------------------------------------------------- the CUDA kernels' bodies, on NumPy


def test_cuda_gelu_bodies_equal_the_readable_op():
    x = np.random.default_rng(6).standard_normal(101) * 3
    g = np.random.default_rng(7).standard_normal(101)
    kernels.set_enabled(False)
    try:
        leaf = tinylora.tensor(x, requires_grad=True)
        y = F.gelu(leaf)
        y.backward(tinylora.tensor(g))
    finally:
        kernels.set_enabled(True)
    (fwd,) = cuda.emulate(np, "gelu_forward", x, GELU_C, GELU_K)
    (bwd,) = cuda.emulate(np, "gelu_backward", x, g, GELU_C, GELU_K)
    np.testing.assert_allclose(fwd, y.detach().numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(bwd, leaf.grad.numpy(), rtol=1e-13, atol=1e-14)


def test_cuda_softmax_backward_body_equals_the_readable_op():
    rng = np.random.default_rng(11)
    scores, dy = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((2, 3, 6, 6))
    future = np.triu(np.ones((6, 6), dtype=bool), k=1)
    kernels.set_enabled(False)
    try:
        leaf = tinylora.tensor(scores, requires_grad=True)
        y = F.causal_softmax(leaf, 0.5, future)
        y.backward(tinylora.tensor(dy))
    finally:
        kernels.set_enabled(True)
    y = y.detach().numpy()
    (ds,) = cuda.emulate(np, "softmax_backward", y, dy, (dy * y).sum(-1, keepdims=True), 0.5)
    np.testing.assert_allclose(ds, leaf.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_cuda_layer_norm_bodies_equal_the_readable_op():
    rng = np.random.default_rng(8)
    x, dy = rng.standard_normal((6, 10)), rng.standard_normal((6, 10))
    w, b = rng.standard_normal(10), rng.standard_normal(10)
    kernels.set_enabled(False)
    try:
        leaf = tinylora.tensor(x, requires_grad=True)
        y = F.layer_norm(leaf, tinylora.tensor(w), tinylora.tensor(b))
        y.backward(tinylora.tensor(dy))
    finally:
        kernels.set_enabled(True)
    mean, rstd = x.mean(1, keepdims=True), 1 / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    xhat, out = cuda.emulate(np, "layer_norm_forward", x, mean, rstd, w, b)
    g = dy * w
    (dx,) = cuda.emulate(np, "layer_norm_backward", dy, w, xhat, rstd, g.mean(1, keepdims=True),
                         (g * xhat).mean(1, keepdims=True))
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, leaf.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_cuda_adam_body_equals_the_optimizer():
    rng = np.random.default_rng(9)
    theta, grads = rng.standard_normal((4, 5)), [rng.standard_normal((4, 5)) for _ in range(3)]
    p = tinylora.nn.Parameter(tinylora.tensor(theta.copy()))
    opt = tinylora.optim.AdamW([p], lr=0.01, weight_decay=0.0)
    p_k, m, v = theta.copy(), np.zeros_like(theta), np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        p.grad = tinylora.tensor(g)
        opt.step()
        c1, c2 = 1 - 0.9**t, 1 - 0.999**t
        cuda.emulate(np, "adam_update", g, 0.9, 0.999, 1e-8, 0.01 / c1, math.sqrt(c2), p_k, m, v)
    np.testing.assert_allclose(p_k, p.data, rtol=1e-13, atol=1e-15)


def _adam_run(on: bool, dtype, kind: str = "AdamW") -> np.ndarray:
    rng = np.random.default_rng(10)
    p = tinylora.nn.Parameter(tinylora.tensor(rng.standard_normal((33, 7)).astype(dtype), device="cpu"))
    opt = getattr(tinylora.optim, kind)([p], lr=0.01, weight_decay=0.1)  # Adam: the L2 penalty, AdamW: decay
    kernels.set_enabled(on)
    try:
        for _ in range(3):
            p.grad = tinylora.tensor(rng.standard_normal((33, 7)).astype(dtype), device="cpu")
            opt.step()
    finally:
        kernels.set_enabled(True)
    return p.data


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_kernel_equals_the_optimizer_lines(small_blocks_two_threads, dtype, kind):
    # the kernel folds the bias corrections into two scalars (PyTorch's order), the readable lines divide
    # m and v by them: the same parameters up to rounding (float32: a few ulps of each step of 0.01)
    np.testing.assert_allclose(_adam_run(True, dtype, kind), _adam_run(False, dtype, kind),
                               **({"rtol": 1e-13, "atol": 1e-15} if dtype == np.float64 else {"rtol": 1e-6, "atol": 1e-7}))


def test_adam_kernel_needs_only_block_sized_scratch():
    import tracemalloc

    p = tinylora.nn.Parameter(tinylora.tensor(np.ones((512, 512)), device="cpu"))  # 2 MiB, 8 blocks
    opt = tinylora.optim.Adam([p], lr=0.1)
    p.grad = tinylora.tensor(np.full((512, 512), 0.1), device="cpu")
    opt.step()  # the first step makes m and v
    tracemalloc.start()
    opt.step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * blocks.BLOCK_ELEMENTS * 8, f"a step allocated {peak} bytes"  # a few blocks, not 2 MiB


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="fork is POSIX-only")
def test_a_forked_child_runs_kernels_on_threads_of_its_own(monkeypatch):
    import os

    monkeypatch.setattr(threads, "workers_for", lambda elements: 2)
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 64)
    x = np.linspace(-3, 3, 1000)
    expected = F.gelu(tinylora.tensor(x, device="cpu")).numpy()  # the parent's pool now exists
    pid = os.fork()
    if pid == 0:  # the child: the same kernel on two threads must finish and agree
        ok = np.array_equal(F.gelu(tinylora.tensor(x, device="cpu")).numpy(), expected)
        os._exit(0 if ok else 1)
    import signal
    import time

    deadline = time.monotonic() + 30  # a child waiting on its parent's (absent) threads would hang
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in a kernel")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_a_bad_switch_value_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("TINYLORA_KERNELS", "yes")
    with pytest.raises(ValueError, match="TINYLORA_KERNELS='yes'"):
        kernels._from_env()
    monkeypatch.setenv("TINYLORA_KERNELS", "0")
    assert kernels._from_env() is False
