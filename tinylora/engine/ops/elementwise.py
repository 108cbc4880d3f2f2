"""Elementwise ops with NumPy broadcasting.

Each op saves only what its backward needs, and only for the inputs that need
a gradient. Broadcasting is undone in backward by `unbroadcast`, which sums the
gradient over the axes an input was stretched along.
"""

from __future__ import annotations

import numbers

from tinylora.engine.autograd import Function
from tinylora.engine.ops._util import broadcast_shapes, unbroadcast


class Add(Function):
    """y = a + b (a, b broadcast to y's shape).

    da = dy, db = dy, each summed over the axes its input was broadcast along (`unbroadcast`).
    """

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, grad):
        da = unbroadcast(grad, self.shapes[0]) if self.needs_input_grad[0] else None
        db = unbroadcast(grad, self.shapes[1]) if self.needs_input_grad[1] else None
        return da, db


class Sub(Function):
    """y = a - b (broadcast).   da = dy, db = -dy (each unbroadcast to its input's shape)."""

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, grad):
        db = unbroadcast(-grad, self.shapes[1]) if self.needs_input_grad[1] else None
        return unbroadcast(grad, self.shapes[0]), db


class Mul(Function):
    """y = a * b (elementwise, broadcast).   da = dy * b, db = dy * a (each unbroadcast).

    da needs b and db needs a, so the node keeps b only if a needs a gradient, and a only if b does.
    """

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        self.save_for_backward(b if self.needs_input_grad[0] else None, a if self.needs_input_grad[1] else None)
        return a * b

    def backward(self, grad):
        b, a = self.saved
        da = unbroadcast(grad * b, self.shapes[0]) if self.needs_input_grad[0] else None
        db = unbroadcast(grad * a, self.shapes[1]) if self.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """y = a / b (broadcast).   da = dy / b, db = -dy * a / b^2 (each unbroadcast). Keeps b, and a if db is needed."""

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        self.save_for_backward(a if self.needs_input_grad[1] else None, b)
        return a / b

    def backward(self, grad):
        a, b = self.saved
        da = unbroadcast(grad / b, self.shapes[0]) if self.needs_input_grad[0] else None
        db = unbroadcast(-grad * a / (b * b), self.shapes[1]) if self.needs_input_grad[1] else None
        return da, db


class Neg(Function):
    """y = -x.   dx = -dy."""

    def forward(self, x):
        return -x

    def backward(self, grad):
        return -grad


class Pow(Function):
    """y = x^p for a constant Python number p.   dx = dy * p * x^(p-1). Keeps x."""

    def forward(self, x, exponent):
        self.exponent = exponent
        self.save_for_backward(x)
        return x**exponent

    def backward(self, grad):
        (x,) = self.saved
        return grad * (self.exponent * x ** (self.exponent - 1))


class Exp(Function):
    """y = e^x.   dx = dy * y, so the node keeps the output y, not x."""

    def forward(self, x):
        y = self.xp.exp(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        return grad * y


class Log(Function):
    """y = ln x.   dx = dy / x. Keeps x."""

    def forward(self, x):
        self.save_for_backward(x)
        return self.xp.log(x)

    def backward(self, grad):
        (x,) = self.saved
        return grad / x


class Sqrt(Function):
    """y = sqrt(x).   dx = dy / (2 y). Keeps y."""

    def forward(self, x):
        y = self.xp.sqrt(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        return grad / (2 * y)


class Tanh(Function):
    """y = tanh x.   dx = dy * (1 - y^2). Keeps y."""

    def forward(self, x):
        y = self.xp.tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, grad):
        (y,) = self.saved
        return grad * (1 - y * y)


class ReLU(Function):
    """y = max(x, 0).   dx = dy where x > 0, else 0 (the gradient at 0 is taken to be 0, as in PyTorch).

    Keeps the bool mask x > 0: one byte per element instead of four.
    """

    def forward(self, x):
        positive = x > 0
        self.save_for_backward(positive)  # a bool mask: 1 byte per element instead of 4
        return x * positive

    def backward(self, grad):
        (positive,) = self.saved
        return grad * positive


def add(a, b):
    """a + b with broadcasting."""
    broadcast_shapes("add", a.shape, b.shape)
    return Add.apply(a, b)


def sub(a, b):
    """a - b with broadcasting."""
    broadcast_shapes("sub", a.shape, b.shape)
    return Sub.apply(a, b)


def mul(a, b):
    """a * b with broadcasting."""
    broadcast_shapes("mul", a.shape, b.shape)
    return Mul.apply(a, b)


def div(a, b):
    """a / b with broadcasting."""
    broadcast_shapes("div", a.shape, b.shape)
    return Div.apply(a, b)


def neg(x):
    """-x."""
    return Neg.apply(x)


def pow(x, exponent):
    """x ** exponent, for a constant Python number `exponent`."""
    if not isinstance(exponent, numbers.Real):
        raise TypeError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    return Pow.apply(x, exponent=float(exponent) if not float(exponent).is_integer() else int(exponent))


def exp(x):
    """e ** x."""
    return Exp.apply(x)


def log(x):
    """Natural logarithm."""
    return Log.apply(x)


def sqrt(x):
    """Square root."""
    return Sqrt.apply(x)


def tanh(x):
    """Hyperbolic tangent."""
    return Tanh.apply(x)


def relu(x):
    """max(x, 0); the gradient at exactly 0 is taken to be 0 (as in PyTorch)."""
    return ReLU.apply(x)
