"""The 'fake' device: NumPy underneath, CuPy's rules on top, so GPU mistakes fail on a CPU-only machine.

Code that runs on NumPy can still be wrong for CuPy, and on a machine without a GPU nobody finds out.
The usual mistakes, and what the fake device does with each (as CuPy would, or stricter):

    numpy.asarray(device_array), numpy.some_function(device_array, host_array)
        -> TypeError: a device array never turns into a host array by itself; copy it explicitly
           with `to_host(a)` / `a.get()` (CuPy raises the same way).
    device_array + host_array (any op mixing the two)
        -> TypeError (CuPy: "Unsupported type <class 'numpy.ndarray'>").
    float(a), int(a), bool(a), `if a:` on a device array
        -> TypeError here (CuPy would copy to the host silently and wait for the GPU): write
           `a.item()` (or `float(a.item())`) where a host number is really wanted.
    a.sum(), a.max() ...
        -> a 0-d device array, not a host scalar (as in CuPy).
    a[index_array] with an index out of range
        -> rows read modulo the axis' length, no IndexError (CuPy does not check integer array
           indices; code must check ranges itself, as `embedding` does).
    xp.ma, xp.nditer ... (NUMPY_ONLY), numpy.add.at(device_array, ...)
        -> AttributeError / TypeError naming them (CuPy has no masked arrays or nditer, and ufunc.at
           only in recent versions: `backend.scatter_add` is the portable spelling of add.at).

One exception: code in a tests/ folder (the checkers) may read device arrays implicitly and mix them
with host arrays, so `np.testing.assert_allclose(t.data, expected)` works there and the suite run on
the fake device finds tinylora's own mistakes (on a real GPU such a test line would fail;
TINYLORA_FAKE_STRICT=1 lifts the exception and lists them).

A `FakeArray` wraps one NumPy array (`._host`); every NumPy ufunc and array function that meets it
unwraps its inputs, checks them, runs NumPy and wraps what comes out. `fake_numpy` is the array
module (`device.xp`) of the fake device: numpy's functions and submodules (xp.linalg, xp.fft, ...),
with host arrays going in only through `asarray`/`array` (a copy to the device, as `cupy.asarray`
makes); `xp.ndarray` is FakeArray, as `cupy.ndarray` is CuPy's device array.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types

import numpy
from numpy.lib.mixins import NDArrayOperatorsMixin

# NumPy names CuPy does not offer (a conservative list: CuPy mirrors most of NumPy's namespace)
NUMPY_ONLY = frozenset({"ma", "char", "rec", "memmap", "ctypeslib", "f2py", "nditer", "nested_iters"})
_MESSAGE = ("the 'fake' device follows CuPy's rules: {what}; copy to the host explicitly "
            "(tinylora.engine.backend.to_host(a), a.get() or a.item())")


def _reject(what: str):
    raise TypeError(_MESSAGE.format(what=what))


# False inside `strict()` (the fake device's own tests check its rules), or everywhere with
# TINYLORA_FAKE_STRICT=1: then test code too must copy to the host explicitly, as it must on a real GPU
_exempt_tests = os.environ.get("TINYLORA_FAKE_STRICT", "0") != "1"


@contextlib.contextmanager
def strict():
    """Apply the rules to test code too (for the tests of the rules themselves)."""
    global _exempt_tests
    before, _exempt_tests = _exempt_tests, False
    try:
        yield
    finally:
        _exempt_tests = before


_NUMPY_DIR = os.path.dirname(numpy.__file__) + os.sep
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _is_test_file(filename: str) -> bool:
    """True for a file in a tests/ folder: tinylora's own tests/ (judged below the repository, so a
    checkout that itself lies under some /tests/ folder exempts nothing else) or any other tests/."""
    if filename.startswith(_REPOSITORY + os.sep):
        filename = filename[len(_REPOSITORY):]
    return f"{os.sep}tests{os.sep}" in filename


def _asked_by_tests() -> bool:
    """True when the code asking (the first caller outside NumPy and this file) is test code in a tests/ folder.

    Tests are the checkers, not the checked: `np.testing.assert_allclose(t.data, expected)` may read a
    device array implicitly there, so the suite on the fake device finds mistakes in tinylora itself.
    """
    if not _exempt_tests:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__ and not name.startswith(_NUMPY_DIR):
            return _is_test_file(name)
        frame = frame.f_back
    return False


def unwrap(value, allow_host: bool = False):
    """FakeArray -> its NumPy array, recursively inside lists, tuples and dicts; host arrays are refused."""
    if isinstance(value, FakeArray):
        return value._host
    if isinstance(value, numpy.ndarray):
        if not allow_host and not _asked_by_tests():
            _reject(f"a host (NumPy) array of shape {value.shape} where a device array is expected")
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v, allow_host) for v in value)
    if isinstance(value, dict):
        return {k: unwrap(v, allow_host) for k, v in value.items()}
    return value


def _wrap(value):
    """NumPy results -> FakeArrays (NumPy scalars become 0-d device arrays, as CuPy returns them)."""
    if isinstance(value, numpy.ndarray):
        return FakeArray(value)
    if isinstance(value, numpy.generic):
        return FakeArray(numpy.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _axes_taken(part) -> int:
    """How many axes one part of an index consumes: None 0, a boolean mask its ndim, anything else 1."""
    if part is None:
        return 0
    if isinstance(part, numpy.ndarray) and part.dtype == bool:
        return part.ndim
    return 1


def wrap_around(key, shape: tuple):
    """An index `key` with its integer arrays taken modulo their axis' length, as CuPy reads them.

    NumPy raises IndexError for an out-of-range integer array index; CuPy does not check and wraps
    around (a[[1, 3]] on 3 rows reads rows 1 and 0). Code that relies on NumPy's error must check
    the range itself, or a GPU reads the wrong rows silently. Python ints and slices keep NumPy's rules.
    """
    parts = key if isinstance(key, tuple) else (key,)
    if sum(p is Ellipsis for p in parts) > 1:
        return key  # NumPy's own error
    wrapped, axis = [], 0
    for part in parts:
        if part is Ellipsis:
            axis += len(shape) - sum(_axes_taken(p) for p in parts if p is not Ellipsis)
            wrapped.append(part)
            continue
        if isinstance(part, (list, numpy.ndarray)) and axis < len(shape) and shape[axis] > 0:
            array = numpy.asarray(part)
            if array.dtype.kind in "iu":
                part = array % shape[axis]
        wrapped.append(part)
        axis += _axes_taken(part)
    return tuple(wrapped) if isinstance(key, tuple) else wrapped[0]


class FakeArray(NDArrayOperatorsMixin):
    """An array on the fake device: a NumPy array that refuses to be used as one implicitly."""

    __slots__ = ("_host", "__weakref__")

    def __init__(self, host_array):
        if not isinstance(host_array, numpy.ndarray):
            raise TypeError(f"FakeArray wraps a numpy.ndarray, got {type(host_array).__name__}")
        self._host = host_array

    # ------------------------------------------------------------ NumPy's protocols
    def __array__(self, dtype=None, copy=None):
        if not _asked_by_tests():
            _reject("implicit conversion of a device array to a NumPy array")
        return self._host if dtype is None else self._host.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "at":
            _reject(f"numpy.{ufunc.__name__}.at is NumPy-only (use backend.scatter_add)")
        out = kwargs.get("out")
        result = getattr(ufunc, method)(*unwrap(inputs), **unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        if numpy.ndarray in types and not _asked_by_tests():
            _reject(f"numpy.{func.__name__} got a host (NumPy) array beside a device array")
        if func.__name__ in NUMPY_ONLY:
            _reject(f"numpy.{func.__name__} is NumPy-only")
        out = kwargs.get("out")
        result = func(*unwrap(args), **unwrap(kwargs))
        return out if out is not None else _wrap(result)

    # ------------------------------------------------------------ host numbers need an explicit copy
    def __float__(self):
        return float(self._host) if _asked_by_tests() else _reject("float() of a device array")

    def __int__(self):
        return int(self._host) if _asked_by_tests() else _reject("int() of a device array")

    def __index__(self):
        return self._host.__index__() if _asked_by_tests() else _reject("a device array used as a Python index")

    def __bool__(self):
        return bool(self._host) if _asked_by_tests() else _reject("bool() (an `if` or `and`) of a device array")

    def __format__(self, spec):
        if spec and not _asked_by_tests():
            _reject(f"formatting a device array with '{spec}'")
        return format(self._host.item() if self._host.ndim == 0 else self._host, spec) if spec else repr(self)

    def __complex__(self):
        _reject("complex() of a device array")

    # ------------------------------------------------------------ what CuPy arrays offer
    def get(self):
        """A host copy (NumPy array), as cupy.ndarray.get() returns."""
        return self._host.copy()

    def item(self):
        return self._host.item()

    def tolist(self):
        return self._host.tolist()

    @property
    def base(self):
        """The NumPy array that owns this array's memory (memory accounting follows `.base` to it)."""
        return self._host if self._host.base is None else self._host.base

    @property
    def device(self):
        return "fake"

    def __len__(self):
        return len(self._host)

    def __iter__(self):
        return (_wrap(row) for row in self._host)

    def __getitem__(self, key):
        return _wrap(self._host[wrap_around(unwrap(key, allow_host=True), self._host.shape)])

    def __setitem__(self, key, value):  # a host value is copied in (host -> device is explicit enough, as in CuPy)
        self._host[wrap_around(unwrap(key, allow_host=True), self._host.shape)] = unwrap(value, allow_host=True)

    def __repr__(self):
        return f"fake_array({numpy.array2string(self._host, separator=', ')}, dtype={self._host.dtype})"

    def __getattr__(self, name):
        if name.startswith("__") or name in ("data", "ctypes"):  # no buffer or array interface: no silent copies
            raise AttributeError(f"'FakeArray' has no attribute '{name}'")
        value = getattr(self._host, name)
        if not callable(value):
            return _wrap(value) if isinstance(value, numpy.ndarray) else value
        def method(*args, **kwargs):
            out = kwargs.get("out")
            result = value(*unwrap(args), **unwrap(kwargs))
            return out if out is not None else _wrap(result)
        method.__name__ = name
        return method


class _FakeRandom:
    """numpy.random on the fake device: generators whose draws are device arrays."""

    def default_rng(self, seed=None):
        return _FakeGenerator(numpy.random.default_rng(seed))


class _FakeGenerator:
    def __init__(self, generator):
        self._generator = generator

    def __getattr__(self, name):
        value = getattr(self._generator, name)
        if not callable(value):
            return value
        return lambda *args, **kwargs: _wrap(value(*unwrap(args), **unwrap(kwargs)))


class _FakeNumpy:
    """The fake device's array module: numpy's names, device arrays in and out, host arrays refused
    (except by `asarray`/`array`, which copy them to the device as cupy.asarray does).

    Submodules (`xp.linalg`, `xp.fft`, ...) follow the same rules, `xp.random` hands out device
    generators, and `xp.ndarray` is the device array type, as `cupy.ndarray` is."""

    _FROM_HOST = frozenset({"asarray", "array", "ascontiguousarray", "asanyarray"})

    def __init__(self, module=numpy):
        self._module = module
        self.__name__ = "tinylora.engine.backend.fake.fake_" + module.__name__.replace(".", "_")

    def __getattr__(self, name):
        if name in NUMPY_ONLY:
            raise AttributeError(f"xp.{name}: NumPy-only (CuPy has no {name}); the fake device refuses it")
        if name == "ndarray":
            return FakeArray
        if name == "random" and self._module is numpy:
            return _FakeRandom()
        value = getattr(self._module, name)
        if isinstance(value, types.ModuleType):
            return _FakeNumpy(value)  # xp.linalg, xp.fft: host arrays refused there too
        if isinstance(value, type) or not callable(value):
            return value  # dtypes, constants
        allow_host = name in self._FROM_HOST

        def function(*args, **kwargs):
            out = kwargs.get("out")
            result = value(*unwrap(args, allow_host), **unwrap(kwargs, allow_host))
            return out if out is not None else _wrap(result)

        function.__name__ = name
        return function


fake_numpy = _FakeNumpy()


def to_device(array) -> FakeArray:
    """A host array (or anything numpy.asarray takes) copied onto the fake device."""
    if isinstance(array, FakeArray):
        return array
    return FakeArray(numpy.array(array, copy=True))
