"""The one place where tinylora meets NumPy and CuPy.

Tensor code asks a tensor for `t.device.xp` (the array module) instead of
importing numpy; see `device.py`. Memory accounting lives in `memory.py`.
"""

from tinylora.engine.backend import memory
from tinylora.engine.backend.device import (
    Device,
    default_device_name,
    device_of,
    get_device,
    host,
    move,
    scatter_add,
    set_default_device,
    synchronize,
    to_host,
)

__all__ = [
    "Device",
    "default_device_name",
    "device_of",
    "get_device",
    "host",
    "memory",
    "move",
    "scatter_add",
    "set_default_device",
    "synchronize",
    "to_host",
]
