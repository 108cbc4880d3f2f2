"""Keep freed host memory for reuse (Linux/glibc only, opt-in).

NumPy gets memory for large arrays from the C allocator, and glibc returns
every block above a threshold (mmap'd blocks) to the operating system as soon
as it is freed. The next step asks for the same sizes again, and the kernel
has to hand out fresh zeroed pages: on a small machine touching fresh memory
costs about a second per GiB, more than many of the matrix products.

`keep_freed_memory()` tells glibc to serve every allocation from its heap and
never give freed heap memory back, so step 2 reuses step 1's pages. The peak
resident memory stays the same (it is the peak either way); what changes is
that the process keeps it between steps. PyTorch users get the same effect
from its caching allocator on GPUs, or from these glibc settings on CPUs.

Call it once, before the first large allocation. Nothing in tinylora calls it
today: the benchmarks get the same effect for every contender alike by setting
the environment variables glibc reads, MALLOC_MMAP_MAX_=0 and
MALLOC_TRIM_THRESHOLD_ (`python benchmarks/run_all.py --allocator keep`).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1  # constants from glibc's malloc.h
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse. Returns False where this is not glibc (nothing changes)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok_mmap = mallopt(_M_MMAP_MAX, 0)  # no mmap'd blocks: everything comes from the reusable heap
    ok_trim = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # never trim the heap back to the OS
    return bool(ok_mmap and ok_trim)
