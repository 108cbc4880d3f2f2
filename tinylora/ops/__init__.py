"""Every differentiable op, one small Function subclass each, with a lowercase function to call it."""

from .attention import causal_softmax, causal_softmax_reference
from .dropout import dropout
from .elementwise import add, div, exp, log, mul, neg, pow, relu, sqrt, sub, tanh
from .gelu import gelu
from .layer_norm import layer_norm
from .loss import cross_entropy
from .matmul import linear, matmul
from .reduce import max, mean, sum, var
from .select import embedding, masked_fill, where
from .shape import cat, concatenate, getitem, permute, reshape, split, stack, to, transpose
from .softmax import log_softmax, softmax

__all__ = [
    "add", "cat", "causal_softmax", "causal_softmax_reference", "concatenate", "cross_entropy", "div", "dropout", "embedding", "exp", "gelu", "getitem",
    "layer_norm", "linear", "log", "log_softmax", "masked_fill", "matmul", "max", "mean", "mul", "neg",
    "permute", "pow", "relu", "reshape", "softmax", "split", "sqrt", "stack", "sub", "sum", "tanh", "to",
    "transpose", "var", "where",
]
