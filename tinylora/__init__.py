"""tinylora: LoRA (Hu et al. 2021) from scratch, on a small autograd engine over NumPy or CuPy.

The names a student needs first:

    tinylora.tensor, tinylora.Tensor     arrays that record ops for backward
    tinylora.no_grad(), manual_seed()    switch off graph building; seed everything
    tinylora.nn, tinylora.optim          layers (Module, Linear, ...) and optimizers
    tinylora.functional                  F.softmax, F.cross_entropy, F.layer_norm, ...
"""

from . import backend, functional, nn, optim
from .autograd import is_grad_enabled, no_grad
from .backend import get_device as device
from .backend import set_default_device
from .random import manual_seed
from .tensor import Tensor, arange, float32, float64, int64, ones, randn, tensor, zeros

__version__ = "0.1.0"

__all__ = [
    "Tensor", "arange", "backend", "device", "float32", "float64", "functional", "int64", "is_grad_enabled",
    "manual_seed", "nn", "no_grad", "ones", "optim", "randn", "set_default_device", "tensor", "zeros",
]
