"""Devices: which array library holds a tensor's data.

tinylora's tensor code never imports NumPy or CuPy itself. It asks a tensor for
its `Device`, and the device hands out the array module (`device.xp`), which is
either `numpy` or `cupy`. The same op code therefore runs on both.

Three devices exist:

    "cpu"   NumPy arrays in host memory (the default).
    "cuda"  CuPy arrays on an NVIDIA GPU (needs `pip install 'tinylora[gpu]'`).
    "fake"  NumPy arrays that *pretend* to live elsewhere, under CuPy's rules (fake.py):
            a device array never becomes a host array or a Python number by itself.
            The whole test suite runs on it (TINYLORA_DEVICE=fake), so code that would
            break on a GPU breaks on a CPU-only machine too.

The default device comes from the environment variable TINYLORA_DEVICE
("cpu" if unset) and can be changed with `set_default_device`.
"""

from __future__ import annotations

import os

import numpy

from tinylora.engine.backend import fake

_KNOWN = ("cpu", "cuda", "fake")

host = numpy  # the array module of host memory: Python data becomes an array here before it moves to a device


class Device:
    """A place where tensor data lives, with the array module (`xp`) that works there."""

    def __init__(self, name: str, xp):
        self.name = name
        self.xp = xp

    def __repr__(self) -> str:
        return f"device('{self.name}')"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            other = get_device(other)
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    @property
    def is_gpu(self) -> bool:
        return self.name == "cuda"


_devices: dict[str, Device] = {}
_default_name: str | None = None


def _import_cupy():
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(
            "device 'cuda' needs CuPy, which is not installed: pip install 'tinylora[gpu]' "
            "(or the cupy-cudaXXx wheel matching your CUDA version)"
        ) from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CuPy raises its own CUDARuntimeError subclasses
        raise RuntimeError(f"device 'cuda': CuPy is installed but found no usable GPU ({err})") from err
    if count == 0:
        raise RuntimeError("device 'cuda': CuPy is installed but found no GPU")
    return cupy


def get_device(spec=None) -> Device:
    """Return the Device named by `spec` ("cpu", "cuda", "fake", a Device, or None for the default)."""
    if spec is None:
        return get_device(default_device_name())
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {type(spec).__name__}")
    name = spec.split(":")[0].lower()  # accept "cuda:0" as PyTorch users write it
    if name not in _KNOWN:
        raise ValueError(f"unknown device '{spec}': choose one of {', '.join(_KNOWN)}")
    if name not in _devices:
        xp = _import_cupy() if name == "cuda" else fake.fake_numpy if name == "fake" else numpy
        _devices[name] = Device(name, xp)
        if name == "cuda":
            from tinylora.engine.backend.memory import install_cuda_hook

            install_cuda_hook(xp)
    return _devices[name]


def default_device_name() -> str:
    global _default_name
    if _default_name is None:
        _default_name = os.environ.get("TINYLORA_DEVICE", "cpu").strip() or "cpu"
    return _default_name


def set_default_device(spec) -> None:
    """Make new tensors live on `spec` unless they name a device themselves."""
    global _default_name
    _default_name = get_device(spec).name


def device_of(array) -> Device:
    """The device an array belongs to: CuPy arrays are 'cuda', NumPy arrays 'cpu'."""
    if isinstance(array, numpy.ndarray) or numpy.isscalar(array):
        return get_device("cpu")
    if type(array).__module__.startswith("cupy"):
        return get_device("cuda")
    if isinstance(array, fake.FakeArray):
        return get_device("fake")
    raise TypeError(f"expected a NumPy or CuPy array, got {type(array).__name__}")


def is_array(value) -> bool:
    """True for an array of any device (NumPy, CuPy, fake), False for Python data such as lists."""
    return (hasattr(value, "__array_interface__") or hasattr(value, "__cuda_array_interface__")
            or isinstance(value, fake.FakeArray))


def to_host(array):
    """Copy an array to host memory as a NumPy array (no copy if it already is one)."""
    if isinstance(array, numpy.ndarray):
        return array
    if hasattr(array, "get"):  # a CuPy array
        return array.get()
    return numpy.asarray(array)


def move(array, device: Device):
    """Return `array` as an array of `device` (copying across host and GPU when needed)."""
    if device.name == "cuda":
        return device.xp.asarray(array)
    if device.name == "fake":
        return fake.to_device(to_host(array) if device_of(array).name == "cuda" else array)
    return to_host(array)


def scatter_add(target, indices, values) -> None:
    """target[indices] += values, where repeated indices accumulate (in place).

    NumPy calls this `np.add.at`; CuPy calls it `cupyx.scatter_add`.
    """
    if isinstance(target, numpy.ndarray):
        numpy.add.at(target, indices, values)
    elif isinstance(target, fake.FakeArray):
        numpy.add.at(target._host, fake.wrap_around(fake.unwrap(indices, allow_host=True), target.shape),
                     fake.unwrap(values))  # host indices: as in indexing; out of range wraps, as in CuPy
    else:
        import cupyx

        cupyx.scatter_add(target, indices, values)


def synchronize(device: Device) -> None:
    """Wait until the device has finished its queued work (a no-op on the CPU). Call before stopping a timer."""
    if device.name == "cuda":
        device.xp.cuda.get_current_stream().synchronize()
