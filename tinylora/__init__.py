"""tinylora: LoRA (Hu et al. 2021) from scratch, on a small autograd engine over NumPy or CuPy.

The names a student needs first:

    tinylora.tensor, tinylora.Tensor     arrays that record ops for backward
    tinylora.no_grad(), manual_seed()    switch off graph building; seed everything
    tinylora.nn, tinylora.optim          layers (Module, Linear, ...) and optimizers
    tinylora.functional                  F.softmax, F.cross_entropy, F.layer_norm, ...
    tinylora.GPT, tinylora.GPTConfig     the GPT-2-style model (tinylora/model/gpt.py)
    tinylora.lora                        LoRALinear, apply_lora, merge_lora, ...
"""

from tinylora import _moved, functional, lora, nn, optim
from tinylora.engine import backend
from tinylora.engine.autograd import is_grad_enabled, no_grad
from tinylora.engine.backend import get_device as device
from tinylora.engine.backend import set_default_device
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.engine.random import manual_seed
from tinylora.engine.tensor import Tensor, arange, float32, float64, int64, ones, randn, tensor, zeros

__version__ = "0.2.0"

_moved.install()  # the 0.1 module paths (listed in _moved.py) still import, with a warning

__all__ = [
    "GPT", "GPTConfig", "Tensor", "arange", "backend", "device", "float32", "float64", "functional", "int64",
    "is_grad_enabled", "lora", "manual_seed", "nn", "no_grad", "ones", "optim", "randn", "set_default_device", "tensor", "zeros",
]
