"""The kernels as fused CUDA kernels (CuPy only): one kernel launch where the readable op makes one
per arithmetic step, and no temporaries in GPU memory.

Each kernel body is a few lines of CUDA C, compiled by CuPy the first time it is used
(`cupy.ElementwiseKernel`); `T` is the array's float type. On the fake device (backend/fake.py)
`kernel()` returns `emulate`, which runs the same body statement by statement on the fake device's
arrays, so the suite on the fake device runs these formulas on a CPU, and tests/test_kernels.py
checks each of them against its op's readable lines.
"""

from __future__ import annotations

# name: (inputs, outputs, body). Every statement is one assignment, so `emulate` can run it on NumPy.
BODIES = {
    # GELU with u = C x (1 + K x^2), C = sqrt(2/pi), K = 0.044715 (passed in from engine/ops/gelu.py)
    "gelu_forward": ("T x, T C, T K", "T y", """
        T u = C * x * (1 + K * x * x);
        y = 0.5 * (1 + tanh(u)) * x;
    """),
    "gelu_backward": ("T x, T g, T C, T K", "T dx", """
        T t = tanh(C * x * (1 + K * x * x));
        dx = g * (0.5 * (1 + t) + 0.5 * C * x * (1 + 3 * K * x * x) * (1 - t) * (1 + t));
    """),
    # causal softmax backward: ds = scale y (dy - sum(dy y)), the sum (one per row) given
    "softmax_backward": ("T y, T dy, T row, T scale", "T ds", """
        ds = scale * y * (dy - row);
    """),
    # layer norm: xhat = (x - mean) rstd, y = xhat w + b  (mean, rstd: one per row, broadcast)
    "layer_norm_forward": ("T x, T mean, T rstd, T w, T b", "T xhat, T y", """
        xhat = (x - mean) * rstd;
        y = xhat * w + b;
    """),
    # dx = rstd (g - mean(g) - xhat mean(g xhat)),  g = dy w  (the two means: one per row, given)
    "layer_norm_backward": ("T dy, T w, T xhat, T rstd, T mean_g, T mean_gx", "T dx", """
        dx = rstd * (dy * w - mean_g - xhat * mean_gx);
    """),
    # one Adam step, in place: m, v, p are read and written (AdamW's decay is applied to p before)
    "adam_update": ("T g, T beta1, T beta2, T eps, T step_size, T sqrt_c2", "T p, T m, T v", """
        m = beta1 * m + (1 - beta1) * g;
        v = beta2 * v + (1 - beta2) * (g * g);
        p = p - m / (sqrt(v) / sqrt_c2 + eps) * step_size;
    """),
}

_compiled = {}


def kernel(name: str, like):
    """The compiled CuPy kernel `name` (compiled once), or its emulation for a fake-device array `like`."""
    if type(like).__name__ == "FakeArray":
        from tinylora.engine.backend import get_device

        xp = get_device("fake").xp
        return lambda *args: _one_or_tuple(emulate(xp, name, *args))
    if name not in _compiled:
        from tinylora.engine.backend import get_device

        cupy = get_device("cuda").xp
        inputs, outputs, body = BODIES[name]
        _compiled[name] = cupy.ElementwiseKernel(inputs, outputs, body, f"tinylora_{name}")
    return _compiled[name]


def gelu_forward(x, C, K):
    return kernel("gelu_forward", x)(x, x.dtype.type(C), x.dtype.type(K))


def gelu_backward(x, grad, C, K):
    return kernel("gelu_backward", x)(x, grad, x.dtype.type(C), x.dtype.type(K))


def adam_update(p, g, m, v, beta1, beta2, eps, step_size, sqrt_c2):
    """p, m, v updated in place (see optim/adam.py for the math)."""
    scalar = p.dtype.type
    kernel("adam_update", p)(g, scalar(beta1), scalar(beta2), scalar(eps), scalar(step_size), scalar(sqrt_c2), p, m, v)


def _one_or_tuple(outputs):
    return outputs[0] if len(outputs) == 1 else outputs


def emulate(xp, name: str, *args):
    """Run kernel `name`'s body on NumPy arrays, statement by statement (for the tests: no GPU needed).

    `T u = ...;` becomes a new variable, `y = ...;` an output; tanh, sqrt, exp come from `xp`.
    Outputs passed as arguments (Adam's p, m, v) are written in place, as CuPy does. Returns the outputs.
    """
    inputs, outputs, body = BODIES[name]
    in_names = [part.split()[-1] for part in inputs.split(",")]
    out_names = [part.split()[-1] for part in outputs.split(",")]
    env = {"tanh": xp.tanh, "sqrt": xp.sqrt, "exp": xp.exp}
    env.update(zip(in_names, args))
    env.update(zip(out_names, args[len(in_names):]))  # in-out arguments (Adam's p, m, v)
    for statement in filter(None, (s.strip() for s in body.split(";"))):
        target, expression = (side.strip() for side in statement.split("=", 1))
        env[target.split()[-1]] = eval(expression, {"__builtins__": {}}, env)  # noqa: S307 (our own bodies)
    given = args[len(in_names):]
    for out, name in zip(given, out_names):
        out[...] = env[name]
    return tuple(given) if given else tuple(env[name] for name in out_names)
