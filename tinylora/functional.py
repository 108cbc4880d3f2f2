"""Every differentiable op, by name: THE op namespace of tinylora (like torch.nn.functional).

    import tinylora.functional as F
    F.softmax(x, axis=-1), F.cross_entropy(logits, targets), F.linear(x, W, b), F.sum(x, axis=0)

Each op is a lowercase function that checks its arguments and calls one small
`Function` subclass in `tinylora/engine/ops/` (whose `__init__.py` gathers them for
the engine; this module re-exports them), whose docstring gives its forward,
its gradients and the shapes (`from tinylora.engine.ops.elementwise import Mul;
help(Mul)`). Tensor methods and operators (`x + y`, `x.sum()`) call these same functions.

`from tinylora.functional import *` is safe in a notebook: it imports every op
except `sum`, `max` and `pow`, which would shadow Python's builtins of the same
name; use `F.sum`, `F.max`, `F.pow` (or `x.sum()`, `x.max()`, `x ** p`).
"""

from tinylora.engine.ops import (  # noqa: F401 (max, pow, sum: see SHADOWS_A_BUILTIN)
    add, cat, causal_softmax, causal_softmax_reference, concatenate, cross_entropy, div, dropout, embedding, exp, gelu,
    getitem, layer_norm, linear, log, log_softmax, masked_fill, matmul, max, mean, mul, neg, permute, pow, relu,
    reshape, softmax, split, sqrt, stack, sub, sum, tanh, to, transpose, var, where,
)

SHADOWS_A_BUILTIN = ("max", "pow", "sum")  # reachable as F.max, F.pow, F.sum; never star-exported

__all__ = [  # everything above except SHADOWS_A_BUILTIN
    "add", "cat", "causal_softmax", "causal_softmax_reference", "concatenate", "cross_entropy", "div", "dropout",
    "embedding", "exp", "gelu", "getitem", "layer_norm", "linear", "log", "log_softmax", "masked_fill", "matmul",
    "mean", "mul", "neg", "permute", "relu", "reshape", "softmax", "split", "sqrt", "stack", "sub", "tanh", "to",
    "transpose", "var", "where",
]
