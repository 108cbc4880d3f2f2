"""The mechanisms behind speed and GPU-readiness (engine/backend: tuning.py, allocator.py, threads.py, fake.py).

- importing tinylora changes nothing outside it (no mallopt, no BLAS thread count, no read of /proc);
  tune_for_training() (which train() calls) switches the allocator and the thread choice on, once;
- the allocator setting is on once tuned, off with TINYLORA_ALLOCATOR=system, and a wrong value is an error;
- a small product runs on one thread, a large one on at most the user's limit and the free cores, and
  the thread count never changes a product's value beyond float rounding; a stack of transposed matrices
  copied to row-major first is the same product, and attention's gradients through it pass the float64
  check and equal the plain path's;
- the fake device refuses what CuPy refuses (implicit host copies, host arrays in device ops, Python
  numbers from device arrays, NumPy-only functions) and otherwise computes what NumPy computes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import tinylora
import tinylora.functional as F
from tinylora.engine.backend import fake, get_device, scatter_add, threads, to_host
from tinylora.engine.kernels import matmul as fast_matmul

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fresh_process(code: str, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("TINYLORA_ALLOCATOR", "TINYLORA_ADAPTIVE_THREADS", "TINYLORA_THREADS")}
    return subprocess.run([sys.executable, "-c", code], env=dict(clean, PYTHONPATH=ROOT, **env),
                          capture_output=True, text=True)


def _setting_in_fresh_process(**env) -> subprocess.CompletedProcess:
    return _fresh_process("import tinylora.engine.backend as b; b.tune_for_training(); b.tune_for_training(); "
                          "print(b.allocator.setting)", **env)


# Records, from the moment `watching` is set, every ctypes symbol looked up (mallopt is one), every file
# opened under /proc, and the BLAS libraries' thread counts before and after.
_WATCH = """
import sys, numpy
from threadpoolctl import threadpool_info
blas_before = [i["num_threads"] for i in threadpool_info()]
seen, watching = [], [True]
def hook(event, args):
    if watching[0] and (event == "ctypes.dlsym" or (event == "open" and str(args[0]).startswith("/proc"))):
        seen.append(f"{event} {args[-1] if event == 'ctypes.dlsym' else args[0]}")
sys.addaudithook(hook)
"""


def test_importing_tinylora_changes_nothing_outside_it():
    code = _WATCH + """
import tinylora, tinylora.functional, tinylora.optim, tinylora.train
watching[0] = False
from tinylora.engine.backend import allocator, threads, tuned
print(seen, allocator.setting, tuned(), threads._tuned)
print(blas_before == [i["num_threads"] for i in threadpool_info()])
"""
    out = _fresh_process(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[] system False False", "True"], out.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's, /proc/stat Linux's")
def test_train_switches_the_tuning_on_and_a_plain_product_does_not():
    code = _WATCH + """
import numpy as np
import tinylora
from tinylora.data import TextDataset
from tinylora.engine.backend import allocator, tuned
from tinylora.train import TrainConfig, train
x = tinylora.randn(64, 64)
y = x @ x  # a product outside training: no tuning
print(seen, tuned())
model = tinylora.GPT(tinylora.GPTConfig.tiny(vocab_size=16, block_size=8, n_embd=16))
data = TextDataset(np.arange(64) % 16, block_size=8)
tinylora.set_num_threads(2)  # a limit above 1 (whatever the BLAS default): the run's plan measures the load
train(model, data, config=TrainConfig(max_steps=1, batch_size=2, progress=False))
print(any("mallopt" in s for s in seen), any("/proc/stat" in s for s in seen), tuned(), allocator.setting)
"""
    out = _fresh_process(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[] False", "True True True keep"], out.stdout


def test_the_tinylora_command_switches_the_tuning_on():
    """`tinylora ...` trains and generates: its entry point calls tune_for_training() before the command runs."""
    code = """
from tinylora.cli import main
from tinylora.engine.backend import tuned
before = tuned()
main(["info", "--model", "tiny"])
print(before, tuned())
"""
    out = _fresh_process(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "False True", out.stdout


def test_small_products_get_one_thread_and_large_ones_at_most_the_limit(monkeypatch):
    monkeypatch.setattr(threads, "_tuned", True)
    assert threads.threads_for(threads.SMALL_FLOPS / 2) == 1
    before = threads.get_num_threads()
    try:
        tinylora.set_num_threads(1)
        assert threads.threads_for(1e12) == 1
        tinylora.set_num_threads(2)
        assert 1 <= threads.threads_for(1e12) <= min(2, threads.usable_cores())
    finally:
        threads.set_num_threads(None)
    assert threads.get_num_threads() == before
    with pytest.raises(ValueError, match="positive integer"):
        tinylora.set_num_threads(0)


def test_free_cores_is_between_one_and_the_usable_cores():
    assert 1 <= threads.free_cores() <= threads.usable_cores()


@pytest.mark.parametrize("others, free", [(0.0, 2), (0.2, 2), (0.3, 1), (0.6, 1), (1.0, 1), (1.8, 1)])
def test_a_core_others_use_more_than_a_quarter_of_the_time_is_not_free(monkeypatch, others, free):
    """2 cores; over a 1 s interval this process used 0.9 CPU seconds and the others `others`."""
    clock = {"wall": 100.0, "own": 50.0, "machine": 500.0}
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "time", SimpleNamespace(perf_counter=lambda: clock["wall"],
                                                         process_time=lambda: clock["own"]))
    monkeypatch.setattr(threads, "_cpu_seconds_of_all_processes", lambda: clock["machine"])
    monkeypatch.setattr(threads, "_sample", None)
    assert threads.free_cores() == 2  # no interval yet: a quiet machine is assumed
    clock["wall"] += 1.0
    clock["own"] += 0.9
    clock["machine"] += 0.9 + others
    assert threads.free_cores() == free


def test_the_thread_count_does_not_change_a_product():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((30, 20)), rng.standard_normal((20, 25))  # 30 kFLOP: one thread
    big_a, big_b = rng.standard_normal((1200, 1000)), rng.standard_normal((1000, 1300))  # 3.1 GFLOP: threaded
    np.testing.assert_allclose(fast_matmul.product(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast_matmul.product(big_a, big_b), big_a @ big_b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape_a, shape_b", [((5, 3, 4, 6), (5, 3, 6, 2)), ((4, 6), (5, 3, 6, 2)), ((1, 3, 4, 6), (3, 6, 2))])
def test_a_stack_of_transposed_matrices_copied_first_is_the_same_product(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    transposed = np.ascontiguousarray(b.swapaxes(-1, -2)).swapaxes(-1, -2)  # b's values, column-major matrices
    assert transposed.strides[-2] == transposed.itemsize  # the layout the copy is for
    np.testing.assert_allclose(fast_matmul.product(a, transposed), a @ b, rtol=1e-13, atol=1e-13)


def _attention(q, k, v):
    """softmax(q k^T / sqrt(hs), causal) v: every product a stack, k^T a stack of transposed matrices."""
    t = q.shape[-2]
    att = F.causal_softmax(q @ k.transpose(-2, -1), 1.0 / np.sqrt(q.shape[-1]), np.triu(np.ones((t, t), bool), k=1))
    return att @ v


@pytest.mark.parametrize("thread_count", [1, 2])
def test_attention_gradients_with_the_copy_pass_gradcheck_and_equal_the_plain_path(monkeypatch, thread_count):
    from gradcheck import gradcheck, random_array

    monkeypatch.setattr(threads, "threads_for", lambda flops: min(thread_count, threads.usable_cores()))
    shape = (3, 2, 5, 4)  # (B, nh, T, hs)
    inputs = [tinylora.tensor(random_array(shape, seed=i), dtype="float64", requires_grad=True) for i in range(3)]
    upstream = tinylora.tensor(random_array(shape, seed=9), dtype="float64")
    results = {}
    for copy in (False, True):
        monkeypatch.setattr(fast_matmul, "copy_transposed_stacks", copy)
        for t in inputs:
            t.grad = None
        y = _attention(*inputs)
        y.backward(upstream)
        results[copy] = [y.data] + [t.grad.data for t in inputs]
        gradcheck(_attention, inputs)
    for plain, copied in zip(results[False], results[True]):
        np.testing.assert_allclose(copied, plain, rtol=1e-12, atol=1e-13)


def test_the_fake_device_refuses_what_cupy_refuses():
    a = fake.to_device(np.arange(6.0).reshape(2, 3))
    with fake.strict():
        for mistake in (lambda: np.asarray(a), lambda: float(a.sum()), lambda: int(a[0, 0]), lambda: bool(a.any()),
                        lambda: a + np.ones(3), lambda: np.concatenate([a, np.ones((1, 3))]),
                        lambda: np.add.at(a, [0], 1.0)):
            with pytest.raises(TypeError, match="CuPy's rules"):
                mistake()
        with pytest.raises(AttributeError, match="NumPy-only"):
            get_device("fake").xp.ma  # noqa: B018  (masked arrays: NumPy only)
        with pytest.raises(TypeError, match="CuPy's rules"):
            get_device("fake").xp.linalg.norm(np.ones(3))  # submodules refuse host arrays too
        assert isinstance(a.sum(), fake.FakeArray) and a.sum().item() == 15.0  # a 0-d device array, as CuPy
        assert isinstance(get_device("fake").xp.asarray(np.ones(2)), fake.FakeArray)  # host -> device is explicit
        assert isinstance(a, get_device("fake").xp.ndarray)  # xp.ndarray is the device array type, as cupy.ndarray


def test_the_fake_device_is_strict_outside_tests_and_explicit_copies_work():
    """The rules hold for code outside tests/ (tinylora's own), with no strict() needed; the explicit
    host copies (to_host, .get(), .item(), .tolist(), Tensor.numpy()/.item()) are what always works."""
    code = ("import numpy as np, tinylora\n"
            "from tinylora.engine.backend import to_host\n"
            "t = tinylora.tensor([[1.0, 2.0], [3.0, 4.0]], device='fake')\n"
            "for name, mistake in [('asarray', lambda: np.asarray(t.data)), ('float', lambda: float(t.data.sum())),\n"
            "                      ('int', lambda: int(t.data[0, 0])), ('bool', lambda: bool(t.data.any())),\n"
            "                      ('mix', lambda: t.data + np.ones(2))]:\n"
            "    try:\n"
            "        mistake()\n"
            "        print('allowed', name)\n"
            "    except TypeError:\n"
            "        print('refused', name)\n"
            "print(type(to_host(t.data)).__name__, type(t.data.get()).__name__, t.data.sum().item(),\n"
            "      t.data.tolist(), t.numpy().sum(), t.sum().item())\n")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:5] == [f"refused {name}" for name in ("asarray", "float", "int", "bool", "mix")], out
    assert out[5] == "ndarray ndarray 10.0 [[1.0, 2.0], [3.0, 4.0]] 10.0 10.0", out


def test_the_fake_device_wraps_out_of_range_indices_as_cupy_does():
    """CuPy does not check integer array indices (it reads them modulo the axis); NumPy raises. Code
    that counts on NumPy's IndexError reads wrong rows on a GPU, so the fake device wraps too."""
    a = fake.to_device(np.arange(12).reshape(3, 4))
    assert a[[1, 3]].tolist() == [[4, 5, 6, 7], [0, 1, 2, 3]]  # row 3 of 3 is row 0
    assert a[..., [-1, 4]].tolist() == [[3, 0], [7, 4], [11, 8]]
    assert a[np.array([5]), 1:3].tolist() == [[9, 10]]
    with pytest.raises(IndexError):
        a[3]  # noqa: B018  (a Python int index is checked, in CuPy too)
    grad = fake.to_device(np.zeros(3))
    scatter_add(grad, np.array([0, 3, 4]), fake.to_device(np.ones(3)))  # 3 -> 0, 4 -> 1
    assert grad.tolist() == [2.0, 1.0, 0.0]
    with pytest.raises(IndexError, match="out of range"):  # tinylora's embedding checks the range itself
        tinylora.functional.embedding(tinylora.tensor([0, 3], device="fake"),
                                      tinylora.tensor(np.ones((3, 2)), device="fake"))


def test_the_fake_device_computes_what_numpy_computes():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    t = tinylora.tensor(x, device="fake", requires_grad=True)
    y = (tinylora.functional.softmax(t, axis=-1) * t).sum()
    y.backward()
    ref = tinylora.tensor(x, device="cpu", requires_grad=True)
    (tinylora.functional.softmax(ref, axis=-1) * ref).sum().backward()
    assert isinstance(t.data, fake.FakeArray) and t.grad.device == "fake"
    np.testing.assert_array_equal(to_host(t.grad.data), ref.grad.numpy())


def test_only_test_files_are_exempt_even_in_a_checkout_under_a_tests_folder(monkeypatch):
    monkeypatch.setattr(fake, "_REPOSITORY", os.path.join(os.sep, "ci", "tests", "repo"))
    inside = os.path.join(os.sep, "ci", "tests", "repo")
    assert not fake._is_test_file(os.path.join(inside, "tinylora", "lora", "layer.py"))  # tinylora: strict
    assert not fake._is_test_file(os.path.join(inside, "benchmarks", "speed.py"))
    assert fake._is_test_file(os.path.join(inside, "tests", "test_backend.py"))
    assert fake._is_test_file(os.path.join(os.sep, "elsewhere", "tests", "test_mine.py"))


def test_tinylora_fake_strict_applies_the_rules_to_test_code_too():
    """TINYLORA_FAKE_STRICT=1 lifts the tests/ exception (to list the test lines that a real GPU would fail)."""
    as_test = ("import numpy as np; from tinylora.engine.backend import fake\n"
               "try:\n"
               "    np.asarray(fake.to_device(np.ones(2)))\n"
               "    print('read')\n"
               "except TypeError:\n"
               "    print('refused')\n")
    code = f"exec(compile({as_test!r}, {os.path.join(ROOT, 'tests', 'test_x.py')!r}, 'exec'))"  # code of a test file
    for strict, expected in (("0", "read"), ("1", "refused")):
        env = dict(os.environ, PYTHONPATH=ROOT, TINYLORA_FAKE_STRICT=strict)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, (strict, out.stdout, out.stderr)


def test_a_thread_plan_fixes_every_product_and_a_saved_plan_is_used_as_it_is(monkeypatch):
    monkeypatch.setattr(threads, "_tuned", True)
    monkeypatch.setattr(threads, "_adaptive", True)
    monkeypatch.setattr(threads, "_limit", 2)
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    try:
        assert threads.fix_plan() == {"large_product_threads": 2, "small_flops": threads.SMALL_FLOPS}
        monkeypatch.setattr(threads, "free_cores", lambda: 1)  # the load changes during the run: the plan does not
        assert [threads.threads_for(f) for f in (1e3, 1e12)] == [1, 2]
        monkeypatch.setattr(threads, "_limit", 3)
        assert threads.fix_plan(measure=False)["large_product_threads"] == 3  # MPI ranks: the limit, not the load
        saved = {"large_product_threads": 1, "small_flops": 0}  # a checkpoint's plan wins over the measurement
        assert threads.fix_plan(saved) == saved and threads.threads_for(1e3) == 1
        for bad in ({"large_product_threads": 0, "small_flops": 0}, {"small_flops": 2e6}, [2, 2e6],
                    {"large_product_threads": 2, "small_flops": float("nan")}):
            with pytest.raises(ValueError, match="thread plan"):
                threads.fix_plan(bad)
    finally:
        threads.release_plan()
    assert threads.current_plan() is None and threads.threads_for(1e12) == 1  # the load again: 1 free core
