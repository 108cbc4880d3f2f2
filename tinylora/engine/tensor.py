"""Tensor: an array (NumPy or CuPy) plus what autograd needs to know about it.

    t.data           the array itself (numpy.ndarray or cupy.ndarray)
    t.device         where it lives ('cpu', 'cuda', or the test-only 'fake')
    t.requires_grad  whether backward should compute a gradient for it
    t.grad           the accumulated gradient (leaves only), a Tensor or None
    t._ctx           the op node that produced it (None for leaves)

dtypes: float32 is the default for floating data and stays float32. float64 is
for gradient checks. Mixing a float32 and a float64 tensor in one op is an
error, never a silent promotion. Python numbers mixed into an op take the
tensor's dtype (under NumPy 2 a NumPy float64 scalar would otherwise promote a
float32 array to float64).
"""

from __future__ import annotations

import numbers

from tinylora.engine import autograd
from tinylora.engine.backend import device_of, get_device, host, is_array, memory, move, to_host

float32 = host.dtype("float32")
float64 = host.dtype("float64")
int64 = host.dtype("int64")


def _as_dtype(dtype):
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in ("float", "double", "long"):
        dtype = {"float": "float32", "double": "float64", "long": "int64"}[dtype]
    return host.dtype(dtype)


class Tensor:
    """An n-dimensional array that can record the ops applied to it and backpropagate through them."""

    __array_ufunc__ = None  # make `numpy_value * tensor` call Tensor.__rmul__ instead of NumPy's ufunc

    def __init__(self, data, requires_grad: bool = False, device=None, dtype=None):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data) takes an array or nested lists; to copy a tensor use t.detach()")
        dtype = _as_dtype(dtype)
        array_input = is_array(data)
        if array_input:
            if device is not None:
                target = get_device(device)
            elif device_of(data).name != "cpu":  # a CuPy (or fake-device) array stays where it is
                target = device_of(data)
            else:  # a NumPy array goes to the default device (CuPy when TINYLORA_DEVICE=cuda)
                target = get_device(None)
            data = move(data, target)
            if dtype is not None and data.dtype != dtype:
                data = data.astype(dtype)
        else:
            target = get_device(device)
            array = host.asarray(data)  # Python numbers and lists become a host array first
            if dtype is None and array.dtype.kind == "f":
                dtype = float32  # Python floats become float32, as in PyTorch
            if dtype is None and array.dtype.kind in "iu":
                dtype = int64
            data = move(array.astype(dtype) if dtype is not None else array, target)
        if data.dtype.kind not in "fiub":
            raise TypeError(f"unsupported dtype {data.dtype}: use float32, float64, an integer type or bool")
        self.data = data
        self.device = target
        self.grad: Tensor | None = None
        self._ctx = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)
        memory.track(data, "other")  # memory: counted as "other" until a Parameter, grad or node retags it

    # ------------------------------------------------------------------ basics
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        extra = ", requires_grad=True" if self.requires_grad else ""
        where = f", device='{self.device}'" if self.device.name != "cpu" else ""
        return f"tensor({to_host(self.data)!r}{where}{extra})"

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        """Set requires_grad in place (only floating tensors can require a gradient)."""
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.data.dtype}")
        if not flag and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a non-leaf tensor: use .detach() instead")
        self.requires_grad = bool(flag)
        return self

    def numpy(self):
        """The data as a NumPy array on the host (a copy if it lives on a GPU). Fails if it requires grad."""
        if self.requires_grad:
            raise RuntimeError("numpy() on a tensor that requires grad: call .detach().numpy()")
        return to_host(self.data)

    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return to_host(self.data).reshape(()).item()

    def tolist(self):
        return to_host(self.data).tolist()

    def detach(self) -> "Tensor":
        """A new leaf tensor sharing this data, cut off from the graph."""
        return Tensor(self.data, device=self.device)

    def backward(self, grad=None) -> None:
        """Backpropagate dL/d(self) = `grad` (1 if omitted, for a single-element tensor) into every leaf's
        `.grad`; see `tinylora/engine/autograd.py`. Frees the graph as it goes."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (was it made under no_grad?)")
        xp = self.device.xp
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {self.shape} needs an explicit upstream gradient "
                    "of the same shape (only a single-element tensor gets the implicit gradient 1)"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): gradient shape {grad.shape} does not match tensor shape {self.shape}")
            grad = grad.astype(self.dtype, copy=True)  # our own buffer: the caller may reuse theirs
        autograd.backward(self, grad)

    def zero_grad(self) -> None:
        self.grad = None

    def to(self, device=None, dtype=None) -> "Tensor":
        """This tensor on another device and/or with another float dtype (differentiable)."""
        return F.to(self, device=device, dtype=dtype)

    def float(self) -> "Tensor":
        return self.to(dtype=float32)

    def double(self) -> "Tensor":
        return self.to(dtype=float64)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    # --------------------------------------------------------- arithmetic ops
    def _lift(self, other) -> "Tensor":
        """Turn a Python or NumPy number into a constant tensor of this tensor's dtype and device."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (numbers.Number, host.generic)):
            dtype = self.dtype if self.dtype.kind == "f" else None
            if dtype is None and isinstance(other, (float, host.floating)):
                dtype = float32
            return Tensor(self.device.xp.asarray(other, dtype=dtype), device=self.device)
        raise TypeError(f"cannot combine a Tensor with {type(other).__name__}: wrap arrays in tinylora.tensor()")

    def _operands(self, other, reverse: bool = False):
        """(left, right) for a binary op; an integer tensor meeting a float one takes its dtype (as in PyTorch)."""
        other = self._lift(other)
        a, b = (other, self) if reverse else (self, other)
        if a.dtype.kind in "iub" and b.dtype.kind == "f":
            a = Tensor(a.data.astype(b.dtype), device=a.device)
        elif b.dtype.kind in "iub" and a.dtype.kind == "f":
            b = Tensor(b.data.astype(a.dtype), device=b.device)
        return a, b

    def __add__(self, other):
        return F.add(*self._operands(other))

    def __radd__(self, other):
        return F.add(*self._operands(other, reverse=True))

    def __sub__(self, other):
        return F.sub(*self._operands(other))

    def __rsub__(self, other):
        return F.sub(*self._operands(other, reverse=True))

    def __mul__(self, other):
        return F.mul(*self._operands(other))

    def __rmul__(self, other):
        return F.mul(*self._operands(other, reverse=True))

    def __truediv__(self, other):
        a, b = self._operands(other)
        if a.dtype.kind != "f":  # true division of integers gives floats, as in PyTorch
            a, b = Tensor(a.data.astype(float32), device=a.device), Tensor(b.data.astype(float32), device=b.device)
        return F.div(a, b)

    def __rtruediv__(self, other):
        a, b = self._operands(other, reverse=True)
        if a.dtype.kind != "f":
            a, b = Tensor(a.data.astype(float32), device=a.device), Tensor(b.data.astype(float32), device=b.device)
        return F.div(a, b)

    def __neg__(self):
        return F.neg(self)

    def __pow__(self, exponent):
        return F.pow(self, exponent)

    def __matmul__(self, other):
        return F.matmul(self, other)

    def __getitem__(self, index):
        return F.getitem(self, index)

    # comparisons give bool tensors that carry no gradient (useful as masks)
    def __gt__(self, other):
        return Tensor(self.data > self._lift(other).data, device=self.device)

    def __lt__(self, other):
        return Tensor(self.data < self._lift(other).data, device=self.device)

    def __ge__(self, other):
        return Tensor(self.data >= self._lift(other).data, device=self.device)

    def __le__(self, other):
        return Tensor(self.data <= self._lift(other).data, device=self.device)

    __hash__ = object.__hash__

    # ------------------------------------------------------------ method ops
    def exp(self):
        return F.exp(self)

    def log(self):
        return F.log(self)

    def sqrt(self):
        return F.sqrt(self)

    def tanh(self):
        return F.tanh(self)

    def relu(self):
        return F.relu(self)

    def sum(self, axis=None, keepdims=False, *, dim=None):
        return F.sum(self, axis=axis, keepdims=keepdims, dim=dim)

    def mean(self, axis=None, keepdims=False, *, dim=None):
        return F.mean(self, axis=axis, keepdims=keepdims, dim=dim)

    def max(self, axis=None, keepdims=False, *, dim=None):
        return F.max(self, axis=axis, keepdims=keepdims, dim=dim)

    def var(self, axis=None, keepdims=False, ddof=0, *, dim=None):
        return F.var(self, axis=axis, keepdims=keepdims, ddof=ddof, dim=dim)

    def reshape(self, *shape):
        return F.reshape(self, *shape)

    def view(self, *shape):
        return F.reshape(self, *shape)

    def transpose(self, dim0=-2, dim1=-1):
        return F.transpose(self, dim0, dim1)

    def permute(self, *axes):
        return F.permute(self, *axes)

    @property
    def T(self):
        return F.permute(self, *reversed(range(self.ndim)))

    def split(self, split_size_or_sections, axis=None, *, dim=None):
        return F.split(self, split_size_or_sections, axis=axis, dim=dim)

    def masked_fill(self, mask, value):
        return F.masked_fill(self, mask, value)

    def softmax(self, axis=None, *, dim=None):
        return F.softmax(self, axis=axis, dim=dim)

    def log_softmax(self, axis=None, *, dim=None):
        return F.log_softmax(self, axis=axis, dim=dim)


def check_same_device_and_dtype(op_name: str, inputs) -> tuple:
    """Refuse inputs on different devices or with different float dtypes; return (device, float dtype)."""
    device, float_dtype = None, None
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"{op_name}: expected Tensor inputs, got {type(t).__name__}")
        if device is None:
            device = t.device
        elif t.device != device:
            raise RuntimeError(f"{op_name}: inputs are on different devices ({device} and {t.device}); move them with .to()")
        if t.dtype.kind == "f":
            if float_dtype is None:
                float_dtype = t.dtype
            elif t.dtype != float_dtype:
                raise TypeError(
                    f"{op_name}: inputs have different dtypes ({float_dtype} and {t.dtype}); "
                    "tinylora never promotes silently: convert one with .float() or .double()"
                )
    return device, float_dtype


def check_output_dtype(op_name: str, float_dtype, out) -> None:
    """Refuse an op output whose float dtype differs from its float inputs' (a silent promotion)."""
    if float_dtype is not None and out.dtype.kind == "f" and out.dtype != float_dtype:
        raise RuntimeError(
            f"{op_name} turned {float_dtype} inputs into {out.dtype}: an op must keep the dtype "
            "(look for a NumPy float64 scalar such as np.sqrt(2.0) mixed into float32 math)"
        )


# ------------------------------------------------------------- constructors
def tensor(data, requires_grad: bool = False, device=None, dtype=None) -> Tensor:
    """Make a tensor from nested lists, a number or an array (floats default to float32)."""
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "copy") and hasattr(data, "dtype"):
        data = data.copy()  # like torch.tensor: later changes to the caller's array do not leak in
    return Tensor(data, requires_grad=requires_grad, device=device, dtype=dtype)


def _fill(fill, shape, device, dtype, requires_grad):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dev = get_device(device)
    data = fill(dev.xp, tuple(shape), _as_dtype(dtype) or float32)
    return Tensor(data, device=dev, requires_grad=requires_grad)


def zeros(*shape, device=None, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of zeros (float32 unless dtype says otherwise)."""
    return _fill(lambda xp, s, d: xp.zeros(s, dtype=d), shape, device, dtype, requires_grad)


def ones(*shape, device=None, dtype=None, requires_grad=False) -> Tensor:
    """A tensor of ones (float32 unless dtype says otherwise)."""
    return _fill(lambda xp, s, d: xp.ones(s, dtype=d), shape, device, dtype, requires_grad)


def randn(*shape, device=None, dtype=None, requires_grad=False) -> Tensor:
    """Standard normal samples from tinylora's seeded generator (see `tinylora.manual_seed`)."""
    from tinylora.engine.random import host_rng

    return _fill(lambda xp, s, d: host_rng().standard_normal(s).astype(d), shape, device, dtype, requires_grad)


def arange(*args, device=None, dtype=None) -> Tensor:
    """Like host.arange; integers give int64."""
    dev = get_device(device)
    data = host.arange(*args)
    if dtype is not None:
        data = data.astype(_as_dtype(dtype))
    elif data.dtype.kind == "i":
        data = data.astype(int64)
    else:
        data = data.astype(float32)
    return Tensor(data, device=dev)


from tinylora.engine import ops as F  # noqa: E402  (the ops need Tensor defined first; F as in tinylora.functional)
