"""tinylora: LoRA (Hu et al. 2021) from scratch, on a small autograd engine over NumPy or CuPy.

The names a student needs first:

    tinylora.tensor, tinylora.Tensor     arrays that record ops for backward
    tinylora.no_grad(), manual_seed()    switch off graph building; seed everything
    tinylora.nn, tinylora.optim          layers (Module, Linear, ...) and optimizers
    tinylora.functional                  F.softmax, F.cross_entropy, F.layer_norm, ...
    tinylora.GPT, tinylora.GPTConfig     the GPT-2-style model (tinylora/gpt.py)
    tinylora.lora                        LoRALinear, apply_lora, merge_lora, ...
"""

from . import backend, functional, lora, nn, optim
from .autograd import is_grad_enabled, no_grad
from .backend import get_device as device
from .backend import set_default_device
from .gpt import GPT, GPTConfig
from .random import manual_seed
from .tensor import Tensor, arange, float32, float64, int64, ones, randn, tensor, zeros

__version__ = "0.1.0"

__all__ = [
    "GPT", "GPTConfig", "Tensor", "arange", "backend", "device", "float32", "float64", "functional", "int64",
    "is_grad_enabled", "lora", "manual_seed", "nn", "no_grad", "ones", "optim", "randn", "set_default_device", "tensor", "zeros",
]
