"""The layers a GPT needs: Linear, Embedding, LayerNorm, Dropout."""

from __future__ import annotations

import math

import tinylora.functional as F
from tinylora.engine.tensor import zeros
from tinylora.nn import init
from tinylora.nn.module import Module
from tinylora.nn.parameter import Parameter


def _check_sizes(layer: str, **sizes) -> None:
    """Refuse a size that is not a positive int, naming it (Linear(0, 4) would divide by zero in its init)."""
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{layer}: {name} must be a positive integer, got {value!r}")


class Linear(Module):
    """y = x @ W.T + b with W of shape (out_features, in_features), as in PyTorch and the LoRA paper.

    In the paper's notation W (here `weight`) is W0 ∈ R^{d×k}: d = out_features, k = in_features.
    Default init: U(-1/sqrt(in), 1/sqrt(in)) for W and b (PyTorch's nn.Linear).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        _check_sizes("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(zeros(out_features, in_features, device=device, dtype=dtype))
        init.kaiming_uniform_(self.weight)
        self.bias = None
        if bias:
            self.bias = Parameter(zeros(out_features, device=device, dtype=dtype))
            bound = 1.0 / math.sqrt(in_features)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of `weight` (num_embeddings, dim) is the vector of token i. Init N(0, 1)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        _check_sizes("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(zeros(num_embeddings, embedding_dim, device=device, dtype=dtype))
        init.normal_(self.weight)

    def forward(self, indices):
        return F.embedding(indices, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalise the last axis, then scale (weight, init 1) and shift (bias, init 0)."""

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        _check_sizes("LayerNorm", dim=dim)
        self.dim, self.eps = dim, eps
        self.weight = Parameter(zeros(dim, device=device, dtype=dtype))
        init.ones_(self.weight)
        self.bias = Parameter(zeros(dim, device=device, dtype=dtype))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Zero elements with probability p in training mode; identity in eval mode."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
