"""tinylora: LoRA (Hu et al. 2021) from scratch, on a small autograd engine over NumPy or CuPy.

The names a student needs first:

    tinylora.tensor, tinylora.Tensor     arrays that record ops for backward
    tinylora.no_grad(), manual_seed()    switch off graph building; seed everything
    tinylora.set_num_threads(n)          at most n threads per matrix product (engine/backend/threads.py)
    tinylora.nn, tinylora.optim          layers (Module, Linear, ...) and optimizers
    tinylora.functional                  F.softmax, F.cross_entropy, F.layer_norm, ...
    tinylora.GPT, tinylora.GPTConfig     the GPT-2-style model (tinylora/model/gpt.py)
    tinylora.lora                        LoRALinear, apply_lora, merge_lora, ...
"""

from tinylora import functional, lora, nn, optim
from tinylora.engine import backend
from tinylora.engine.autograd import is_grad_enabled, no_grad
from tinylora.engine.backend import get_device as device
from tinylora.engine.backend import set_default_device
from tinylora.engine.backend.threads import get_num_threads, set_num_threads
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.engine.random import manual_seed
from tinylora.engine.tensor import Tensor, arange, float32, float64, int64, ones, randn, tensor, zeros
from tinylora.version import __version__

__all__ = [
    "GPT", "GPTConfig", "Tensor", "arange", "backend", "device", "float32", "float64", "functional", "get_num_threads", "int64",
    "is_grad_enabled", "lora", "manual_seed", "nn", "no_grad", "ones", "optim", "randn", "set_default_device", "set_num_threads", "tensor", "zeros",
]
