"""Every differentiable op, one small Function subclass each, with a lowercase function to call it."""

from tinylora.engine.ops.attention import causal_softmax, causal_softmax_reference
from tinylora.engine.ops.dropout import dropout
from tinylora.engine.ops.elementwise import add, div, exp, log, mul, neg, pow, relu, sqrt, sub, tanh
from tinylora.engine.ops.gelu import gelu
from tinylora.engine.ops.layer_norm import layer_norm
from tinylora.engine.ops.loss import cross_entropy
from tinylora.engine.ops.matmul import linear, matmul
from tinylora.engine.ops.reduce import max, mean, sum, var
from tinylora.engine.ops.select import embedding, masked_fill, where
from tinylora.engine.ops.shape import cat, concatenate, getitem, permute, reshape, split, stack, to, transpose
from tinylora.engine.ops.softmax import log_softmax, softmax

__all__ = [
    "add", "cat", "causal_softmax", "causal_softmax_reference", "concatenate", "cross_entropy", "div", "dropout", "embedding", "exp", "gelu", "getitem",
    "layer_norm", "linear", "log", "log_softmax", "masked_fill", "matmul", "max", "mean", "mul", "neg",
    "permute", "pow", "relu", "reshape", "softmax", "split", "sqrt", "stack", "sub", "sum", "tanh", "to",
    "transpose", "var", "where",
]
