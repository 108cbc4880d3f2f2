"""Keep freed host memory for reuse (Linux/glibc), on by default.

NumPy gets memory for large arrays from the C allocator, and glibc returns
every block above a threshold (mmap'd blocks) to the operating system as soon
as it is freed. The next training step asks for the same sizes again, and the
kernel has to hand out fresh zeroed pages: on a small machine touching fresh
memory costs about a second per GiB, more than many of the matrix products.

`keep_freed_memory()` tells glibc (through `mallopt`, called with ctypes) to
serve every allocation from its heap and never give freed heap memory back,
so step 2 reuses step 1's pages. The peak resident memory stays the same (it
is the peak either way); what changes is that the process keeps it between
steps, as PyTorch's caching allocator does on a GPU.

When it happens: never at import. `tune_for_training()` (tuning.py: called by
`train()`, the `tinylora` command and the benchmarks) calls `configure_from_env()`
once. Turn it off with the environment variable

    TINYLORA_ALLOCATOR=system      glibc's own defaults (freed blocks go back to the OS)
    TINYLORA_ALLOCATOR=keep        the default: keep freed memory

or by setting glibc's own variables (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_, ...),
which tinylora then leaves alone. `use_system_allocator()` undoes it at run time.
Why not a buffer pool inside the engine: the same reuse, for every array
NumPy allocates (temporaries inside an op included), with no code in the ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_TRIM_THRESHOLD = -1  # constants from glibc's malloc.h
_M_MMAP_MAX = -4
_GLIBC_DEFAULT_MMAP_MAX = 65536  # glibc's DEFAULT_MMAP_MAX
_GLIBC_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's DEFAULT_TRIM_THRESHOLD

ENV = "TINYLORA_ALLOCATOR"
CHOICES = ("keep", "system")

setting = "system"  # what this process runs with now: "keep", "system" or "environment" (MALLOC_*)


def _mallopt():
    """glibc's mallopt(param, value) -> 1 on success, or None where this is not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse. Returns False where this is not glibc (nothing changes)."""
    global setting
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok_mmap = mallopt(_M_MMAP_MAX, 0)  # no mmap'd blocks: everything comes from the reusable heap
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # never trim the heap back to the OS
    if ok_mmap and ok_trim:
        setting = "keep"
    return bool(ok_mmap and ok_trim)


def use_system_allocator() -> bool:
    """Give glibc its defaults back (large blocks are mmap'd and returned to the OS when freed)."""
    global setting
    mallopt = _mallopt()
    if mallopt is None:
        return False
    ok = mallopt(_M_MMAP_MAX, _GLIBC_DEFAULT_MMAP_MAX) and mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_TRIM_THRESHOLD)
    if ok:
        setting = "system"
    return bool(ok)


def configure_from_env() -> str:
    """Apply TINYLORA_ALLOCATOR (default 'keep'); returns the setting in force."""
    choice = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: choose one of {', '.join(CHOICES)}")
    user_tuned_glibc = any(name.startswith("MALLOC_") for name in os.environ)
    global setting
    if user_tuned_glibc:
        setting = "environment"  # glibc read the user's MALLOC_* variables itself
    elif choice == "keep":
        keep_freed_memory()
    return setting
