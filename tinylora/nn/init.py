"""Weight initialisation, in place, from tinylora's seeded host generator.

Values are drawn with NumPy on the host and copied to the parameter's device,
so the same seed gives the same model on CPU and GPU.
"""

from __future__ import annotations

import math

from tinylora.engine.backend import move
from tinylora.engine.random import host_rng


def _fill(param, values):
    param.data[...] = move(values.astype(param.dtype), param.device)
    return param


def normal_(param, mean: float = 0.0, std: float = 1.0):
    """Fill with samples of N(mean, std^2)."""
    return _fill(param, host_rng().normal(mean, std, size=param.shape))


def uniform_(param, low: float, high: float):
    """Fill with samples of U(low, high)."""
    return _fill(param, host_rng().uniform(low, high, size=param.shape))


def zeros_(param):
    param.data[...] = 0
    return param


def ones_(param):
    param.data[...] = 1
    return param


def kaiming_uniform_(param, a: float = math.sqrt(5)):
    """U(-bound, bound) with bound = sqrt(6 / ((1 + a^2) * fan_in)), fan_in = shape[1].

    With a = sqrt(5) (PyTorch's nn.Linear default, and what loralib and PEFT use
    for LoRA's A) the bound is 1 / sqrt(fan_in).
    """
    fan_in = param.shape[1] if param.ndim > 1 else param.shape[0]
    bound = math.sqrt(6.0 / ((1.0 + a * a) * fan_in))
    return uniform_(param, -bound, bound)
