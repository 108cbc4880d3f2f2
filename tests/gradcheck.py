"""Gradient checking: does an op's backward agree with finite differences of its forward?

For a function y = f(x1, x2, ...) and a fixed random upstream gradient u of y's
shape, take the scalar

    L(x1, x2, ...) = sum(f(x1, x2, ...) * u)

Backward computes dL/dxi by the chain rule: `y.backward(u)` puts the
vector-Jacobian product u^T (dy/dxi) into xi.grad. Central differences estimate
the same numbers one element at a time:

    dL/dxi[j] ~= (L(xi[j] + eps) - L(xi[j] - eps)) / (2 eps)

with an error of order eps^2, tiny in float64 (and useless in float32, so the
checker refuses float32 inputs).

Why a *random* u and not u = 1 (that is, a bare `f(x).sum().backward()`)?
With u = 1 every output element is weighted the same, so a backward that sends
the right gradients to the wrong places (forgets to transpose, reverses an
axis, mixes up two broadcast axes) still adds up to the right answer. A random
u tells every output element apart.

    from gradcheck import gradcheck, random_array

    a = tinylora.tensor(random_array((2, 3)), dtype="float64", requires_grad=True)
    gradcheck(lambda a: F.tanh(a), [a])

`fn` must be deterministic (reseed inside it for dropout) and may return one
tensor or a list of tensors (each gets its own upstream gradient).
"""

from __future__ import annotations

import numpy as np

import tinylora
from tinylora.engine.backend import to_host


def random_array(shape, seed=0, kind="normal"):
    """A float64 NumPy array of `shape` whose values keep away from an op's kinks.

    kind:
      "normal"    standard normal values
      "positive"  values in [0.5, 3): safe for log, sqrt, fractional powers
      "nonzero"   |values| >= 0.3: safe for relu (kink at 0) and as a divisor
      "distinct"  a shuffled grid 0.3 apart: no two equal (max has no ties)
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "positive":
        return rng.uniform(0.5, 3.0, size=shape)
    if kind == "nonzero":
        sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        return sign * rng.uniform(0.3, 2.0, size=shape)
    if kind == "distinct":
        n = int(np.prod(shape))
        return (rng.permutation(n) * 0.3 - 0.15 * n).reshape(shape)
    raise ValueError(f"random_array: unknown kind {kind!r}")


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _loss(outputs, upstreams) -> float:
    """L = sum over outputs of sum(output * upstream), computed on the raw arrays (no graph)."""
    return float(sum(to_host(y.data * u).sum() for y, u in zip(outputs, upstreams)))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, seed=0):
    """Check the backward of `fn` against central differences, for every input that requires grad.

    fn:     takes the tensors in `inputs` and returns a tensor (or a list of tensors)
    inputs: tinylora tensors; those with requires_grad=True must be float64
    eps:    the finite-difference step; atol, rtol: the tolerance of the comparison

    Raises AssertionError naming the input and the largest difference on failure;
    returns the largest absolute difference seen (useful for printing).
    """
    checked = [i for i, t in enumerate(inputs) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; finite differences need float64")

    # one random upstream gradient u per output, the same for both sides of the comparison
    rng = np.random.default_rng(seed)
    upstreams = [y.device.xp.asarray(rng.standard_normal(y.shape), dtype=y.dtype) for y in _as_list(fn(*inputs))]

    worst = 0.0
    backward_grads = _backward_grads(fn, inputs, checked, upstreams)
    for i in checked:
        numeric = _numeric_grad(fn, inputs, i, upstreams, eps)
        diff = float(np.max(np.abs(backward_grads[i] - numeric))) if numeric.size else 0.0
        worst = max(worst, diff)
        if not np.allclose(backward_grads[i], numeric, rtol=rtol, atol=atol):
            raise AssertionError(
                f"gradcheck: input {i} (shape {inputs[i].shape}): backward and central differences disagree, "
                f"max |diff| = {diff:.3e} (atol={atol}, rtol={rtol})\n"
                f"backward:\n{backward_grads[i]}\nnumeric:\n{numeric}"
            )
    return worst


def _backward_grads(fn, inputs, checked, upstreams):
    """dL/dx for each checked input, from backward: y.backward(u) for every output y."""
    for i in checked:
        inputs[i].grad = None
    for k, u in enumerate(upstreams):
        y = _as_list(fn(*inputs))[k]  # a fresh forward for each output: backward frees the graph it walks
        if y.requires_grad:  # else y does not depend on any checked input: its gradient is zero
            y.backward(u)  # the leaves' .grad add up over the outputs
    grads = {}
    for i in checked:
        x, g = inputs[i], inputs[i].grad
        if g is None:  # backward never reached this input: it claims the gradient is zero
            grads[i] = np.zeros(x.shape)
        elif g.shape != x.shape or g.dtype != x.dtype:
            raise AssertionError(f"gradcheck: input {i} is {x.dtype} {x.shape} but its gradient is {g.dtype} {g.shape}")
        else:
            grads[i] = to_host(g.data)
    return grads


def _numeric_grad(fn, inputs, i, upstreams, eps):
    """dL/dx for input i by central differences: nudge one element at a time, in place, then put it back."""
    x = inputs[i].data
    numeric = np.zeros(x.shape)
    with tinylora.no_grad():
        for j in np.ndindex(x.shape):
            original = x[j].item()  # a host number, explicitly (x may live on a device)
            x[j] = original + eps
            plus = _loss(_as_list(fn(*inputs)), upstreams)
            x[j] = original - eps
            minus = _loss(_as_list(fn(*inputs)), upstreams)
            x[j] = original
            numeric[j] = (plus - minus) / (2 * eps)
    return numeric
