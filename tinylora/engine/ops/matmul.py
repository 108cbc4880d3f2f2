"""Matrix products: `matmul` (batched, broadcast) and `linear` (x @ W.T + b, the layer LoRA adapts).

The memory rule that makes LoRA cheap lives here. For y = x @ W.T:

    dx = dy @ W        needs W (a parameter: alive anyway, costs nothing extra)
    dW = dy.T @ x      needs x (an activation: the expensive thing to keep)

So when W is frozen, the node saves W but not x.

Every product below is `a @ b` (`_product`). With the fast paths on, NumPy products go through
engine/kernels/matmul.py, which picks their thread count: the same product, whose last bits can depend
on the thread count BLAS runs it on. TINYLORA_KERNELS=0 runs the plain `a @ b`.
"""

from __future__ import annotations

from tinylora.engine.autograd import Function
from tinylora.engine.kernels import matmul as fast
from tinylora.engine.ops._util import broadcast_shapes, unbroadcast


def _product(a, b):
    """a @ b (on NumPy arrays with the fast paths on: engine/kernels/matmul.py, the thread count chosen)."""
    return fast.product(a, b) if fast.takes(a, b) else a @ b


def _swap_last(a):
    return a.swapaxes(-1, -2)


class MatMul(Function):
    """y = a @ b,  a: (..., n, k), b: (..., k, m), y: (..., n, m); the leading axes broadcast.

    da = dy @ b^T,  db = a^T @ dy (each summed over broadcast axes). da needs b and db needs a,
    so the node keeps b only if a needs a gradient, and a only if b does.
    """

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        self.save_for_backward(b if self.needs_input_grad[0] else None, a if self.needs_input_grad[1] else None)
        return _product(a, b)

    def backward(self, grad):
        b, a = self.saved
        da = unbroadcast(_product(grad, _swap_last(b)), self.shapes[0]) if self.needs_input_grad[0] else None
        db = None
        if self.needs_input_grad[1]:
            if len(self.shapes[1]) == 2 and a.ndim > 2:  # a (..., n, k) @ b (k, m): one big product, not a batch to sum
                k = a.shape[-1]
                db = _product(a.reshape(-1, k).T, grad.reshape(-1, grad.shape[-1]))
            else:
                db = unbroadcast(_product(_swap_last(a), grad), self.shapes[1])
        return da, db


class Linear(Function):
    """y = x @ W^T + b,  x: (..., k), W: (d, k) = (out, in), b: (d,), y: (..., d).

    dx = dy @ W,  dW = dy^T @ x (over all positions),  db = sum of dy over every axis but the last.
    dx needs W (a parameter, alive anyway); dW needs x (an activation). So with W frozen
    the node keeps W but not x: LoRA's frozen W0 costs no saved activation.
    """

    def forward(self, x, weight, bias=None):
        self.x_shape = x.shape
        x2 = x.reshape(-1, x.shape[-1])  # (N, in): one matrix product for all positions
        self.save_for_backward(
            weight if self.needs_input_grad[0] else None,
            x2 if self.needs_input_grad[1] else None,  # only a trainable W needs the input
        )
        y = _product(x2, weight.T)  # (N, out)
        if bias is not None:
            y += bias
        return y.reshape(*x.shape[:-1], weight.shape[0])

    def backward(self, grad):
        weight, x2 = self.saved
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, out)
        dx = _product(g2, weight).reshape(self.x_shape) if self.needs_input_grad[0] else None
        dw = _product(g2.T, x2) if self.needs_input_grad[1] else None
        db = g2.sum(axis=0) if len(self.needs_input_grad) > 2 and self.needs_input_grad[2] else None
        return dx, dw, db


def matmul(a, b):
    """a @ b with NumPy's rules: batched over leading axes, which broadcast. 1-D inputs are vectors."""
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: scalars cannot be multiplied as matrices (shapes {a.shape} and {b.shape})")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not align "
            f"({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})"
        )
    if a.ndim == 1 and b.ndim == 1:  # a dot product: (k,) @ (k,) -> ()
        return matmul(a.reshape(1, -1), b.reshape(-1, 1)).reshape(())
    if a.ndim == 1:
        return matmul(a.reshape(1, -1), b).reshape(*b.shape[:-2], b.shape[-1])
    if b.ndim == 1:
        return matmul(a, b.reshape(-1, 1)).reshape(*a.shape[:-1])
    try:
        broadcast_shapes("matmul", a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: the batch axes of shapes {a.shape} and {b.shape} do not broadcast") from None
    return MatMul.apply(a, b)


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias, with weight stored (out_features, in_features) as in PyTorch and the paper."""
    if weight.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"linear: input shape {x.shape} does not match weight shape {weight.shape} "
            f"(last input axis must be in_features = {weight.shape[1]})"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias shape {bias.shape} does not match out_features = {weight.shape[0]}")
    return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)
