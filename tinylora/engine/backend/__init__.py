"""The one place where tinylora meets NumPy and CuPy.

Tensor code asks a tensor for `t.device.xp` (the array module) instead of
importing numpy; see `device.py`. Memory accounting lives in `memory.py`. Importing it changes nothing
outside tinylora: the allocator setting (`allocator.py`) and the thread choice (`threads.py`) are
switched on by `tune_for_training()` (`tuning.py`), which training and the benchmarks call.
"""

from tinylora.engine.backend import allocator, memory, threads
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
from tinylora.engine.backend.tuning import tune_for_training, tuned

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
    "threads",
    "to_host",
    "tune_for_training",
    "tuned",
]
