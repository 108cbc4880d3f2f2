"""The one place where tinylora meets NumPy and CuPy.

Tensor code asks a tensor for `t.device.xp` (the array module) instead of
importing numpy; see `device.py`. Memory accounting lives in `memory.py`; the host allocator setting in `allocator.py`.
"""

from tinylora.engine.backend import allocator, memory
from tinylora.engine.backend.device import (
    Device,
    default_device_name,
    device_of,
    get_device,
    host,
    is_array,
    move,
    scatter_add,
    set_default_device,
    synchronize,
    to_host,
)

allocator.configure_from_env()  # glibc keeps freed memory for reuse unless TINYLORA_ALLOCATOR=system

__all__ = [
    "allocator",
    "Device",
    "default_device_name",
    "device_of",
    "get_device",
    "host",
    "is_array",
    "memory",
    "move",
    "scatter_add",
    "set_default_device",
    "synchronize",
    "to_host",
]
