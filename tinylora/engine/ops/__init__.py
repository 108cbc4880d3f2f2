"""One small Function subclass per op, with its math in the class docstring, and a lowercase function to call it.

Call the ops through `tinylora.functional` (import tinylora.functional as F): that is the one
namespace that lists them all. The files, roughly in reading order:

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
"""
