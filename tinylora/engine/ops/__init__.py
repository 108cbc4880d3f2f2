"""One small Function subclass per op, with its math in the class docstring, and a lowercase function to call it.

This package gathers every op's lowercase function: Tensor's methods and operators call them from here,
and `tinylora.functional` (import tinylora.functional as F), the namespace users call them through,
re-exports them. The files, roughly in reading order:

    elementwise.py  add, sub, mul, div, neg, pow, exp, log, sqrt, tanh, relu (with broadcasting)
    reduce.py       sum, mean, max, var
    matmul.py       matmul, linear (where LoRA's memory saving lives)
    shape.py        reshape, permute, transpose, getitem, cat, stack, split, to
    select.py       where, masked_fill, embedding
    softmax.py      softmax, log_softmax
    loss.py         cross_entropy
    layer_norm.py   layer_norm (fused)
    gelu.py         gelu (the tanh approximation, fused)
    dropout.py      dropout
    attention.py    causal_softmax (fused scale + mask + softmax)
    _util.py        helpers: axis arguments, broadcast shapes, unbroadcast

Where a file and its op share a name, the name here is the op: `tinylora.engine.ops.gelu` is the
function; a file's classes come from the file (`from tinylora.engine.ops.gelu import GELU`).
"""

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

__all__ = (  # every op's function, by name (tinylora.functional re-exports them)
    "add", "cat", "causal_softmax", "causal_softmax_reference", "concatenate", "cross_entropy", "div", "dropout",
    "embedding", "exp", "gelu", "getitem", "layer_norm", "linear", "log", "log_softmax", "masked_fill", "matmul",
    "max", "mean", "mul", "neg", "permute", "pow", "relu", "reshape", "softmax", "split", "sqrt", "stack", "sub",
    "sum", "tanh", "to", "transpose", "var", "where",
)
