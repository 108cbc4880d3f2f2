"""The backend: device selection, clear errors for a missing GPU, and tagged memory accounting."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import tinylora
from tinylora.engine.backend import fake, get_device, memory
from tinylora.nn import Linear
from tinylora.optim import SGD


def test_default_device_is_the_one_tinylora_device_names():
    """cpu (NumPy arrays) unless TINYLORA_DEVICE says otherwise; CI's second run sets 'fake', and this
    proves that run's tensors really were device arrays, not NumPy arrays under another name."""
    name = os.environ.get("TINYLORA_DEVICE", "cpu")
    t, model = tinylora.tensor([1.0, 2.0]), Linear(3, 2)
    assert t.device == name and all(p.device == name for p in model.parameters())
    if name == "cpu":
        assert isinstance(t.data, np.ndarray)
    if name == "fake":
        assert isinstance(t.data, fake.FakeArray) and not isinstance(t.data, np.ndarray)
        assert all(isinstance(p.data, fake.FakeArray) for p in model.parameters())


def test_fake_device_is_distinct_and_mixing_devices_is_an_error():
    a = tinylora.tensor([1.0, 2.0], device="cpu")
    b = tinylora.tensor([1.0, 2.0], device="fake")
    assert b.device == "fake" and a.device != b.device
    with pytest.raises(RuntimeError, match="different devices"):
        a + b
    c = b.to("cpu")
    assert c.device == "cpu"
    np.testing.assert_array_equal((a + c).numpy(), [2.0, 4.0])


def test_to_device_is_differentiable():
    a = tinylora.tensor([1.0, 2.0], requires_grad=True, device="cpu")
    b = a.to("fake")
    (b * b).sum().backward()
    assert a.grad.device == "cpu"
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 4.0])


def test_module_to_moves_parameters():
    layer = Linear(3, 2).to("fake")
    assert all(p.device == "fake" for p in layer.parameters())
    with pytest.raises(RuntimeError, match="different devices"):
        layer(tinylora.tensor(np.ones((1, 3), dtype=np.float32), device="cpu"))


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        get_device("tpu")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cuda_without_cupy_says_how_to_install_it():
    with pytest.raises(RuntimeError, match="CuPy"):
        tinylora.tensor([1.0], device="cuda")


def test_env_var_selects_the_default_device():
    code = "import tinylora; print(tinylora.tensor([1.0]).device)"
    env = dict(os.environ, TINYLORA_DEVICE="fake")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "fake"


def test_import_pulls_in_no_heavy_library():
    code = (
        "import sys, tinylora, tinylora.functional, tinylora.nn, tinylora.optim\n"
        "heavy = [m for m in ('torch', 'cupy', 'transformers', 'matplotlib', 'peft') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import tinylora imported {out.stdout.strip()}"


def test_memory_categories_for_a_training_step():
    layer = Linear(256, 256)
    opt = SGD(layer.parameters(), lr=0.1, momentum=0.9)
    param_bytes = sum(p.data.nbytes for p in layer.parameters())
    x = tinylora.tensor(np.ones((64, 256), dtype=np.float32))
    start = memory.stats()["current"]
    memory.reset_peak()
    loss = (layer(x) * layer(x)).mean()
    loss.backward()
    opt.step()
    del loss
    now = memory.stats()["current"]
    assert now["gradients"] - start["gradients"] == param_bytes
    assert now["optimizer"] - start["optimizer"] == param_bytes  # one momentum buffer per parameter
    assert now["saved"] == start["saved"]  # everything saved was released by backward
    peak = memory.stats()
    # at the peak the two linear outputs were saved for the product's backward, and x for dW
    assert peak["category_peak"]["saved"] - start["saved"] >= 2 * 64 * 256 * 4 + x.data.nbytes
    assert peak["peak"] >= peak["total"]


def test_a_view_is_counted_once():
    t = tinylora.tensor(np.ones((100, 100), dtype=np.float32))
    before = memory.total()
    v = t.T.reshape(-1)  # views (or one copy) of t
    extra = memory.total() - before
    assert extra in (0, t.data.nbytes)  # a transpose-then-flatten needs one copy at most
    del v
