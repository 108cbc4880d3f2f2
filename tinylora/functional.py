"""Every differentiable op, by name: THE op namespace of tinylora (like torch.nn.functional).

    import tinylora.functional as F
    F.softmax(x, axis=-1), F.cross_entropy(logits, targets), F.linear(x, W, b), F.sum(x, axis=0)

Each op is a lowercase function that checks its arguments and calls one small
`Function` subclass in `tinylora/engine/ops/`, whose docstring gives its forward,
its gradients and the shapes (`from tinylora.engine.ops.elementwise import Mul;
help(Mul)`). Tensor methods and operators (`x + y`, `x.sum()`) call these same functions.

`from tinylora.functional import *` is safe in a notebook: it imports every op
except `sum`, `max` and `pow`, which would shadow Python's builtins of the same
name; use `F.sum`, `F.max`, `F.pow` (or `x.sum()`, `x.max()`, `x ** p`).
"""

from tinylora.engine.ops.attention import causal_softmax, causal_softmax_reference
from tinylora.engine.ops.dropout import dropout
from tinylora.engine.ops.elementwise import add, div, exp, log, mul, neg, pow, relu, sqrt, sub, tanh  # noqa: F401 (pow)
from tinylora.engine.ops.gelu import gelu
from tinylora.engine.ops.layer_norm import layer_norm
from tinylora.engine.ops.loss import cross_entropy
from tinylora.engine.ops.matmul import linear, matmul
from tinylora.engine.ops.reduce import max, mean, sum, var  # noqa: F401 (max, sum: see SHADOWS_A_BUILTIN)
from tinylora.engine.ops.select import embedding, masked_fill, where
from tinylora.engine.ops.shape import cat, concatenate, getitem, permute, reshape, split, stack, to, transpose
from tinylora.engine.ops.softmax import log_softmax, softmax

SHADOWS_A_BUILTIN = ("max", "pow", "sum")  # reachable as F.max, F.pow, F.sum; never star-exported

__all__ = [  # everything above except SHADOWS_A_BUILTIN
    "add", "cat", "causal_softmax", "causal_softmax_reference", "concatenate", "cross_entropy", "div", "dropout",
    "embedding", "exp", "gelu", "getitem", "layer_norm", "linear", "log", "log_softmax", "masked_fill", "matmul",
    "mean", "mul", "neg", "permute", "relu", "reshape", "softmax", "split", "sqrt", "stack", "sub", "tanh", "to",
    "transpose", "var", "where",
]
