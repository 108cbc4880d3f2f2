"""How many threads a matrix product (or an elementwise kernel) gets: one for a small one, the free
cores for a large one.

Why this exists. OpenBLAS starts its threads for almost every product and, by default, as many as
the machine has cores. On a quiet machine that is right for large products. On a busy one (a shared
JupyterHub server, a laptop compiling something) another process holds one of the cores: the
product's second thread waits for a time slice while the first spins waiting for it, and a product
that takes 0.03 ms alone can take 20 ms. Small products gain little from a second thread even on a
quiet machine. So tinylora decides per product:

    threads = 1                          if one matrix product has fewer than SMALL_FLOPS = 2 n k m FLOPs
    threads = min(limit, free cores)     otherwise

"free cores" is measured, not guessed: over the last interval (at least INTERVAL seconds), the CPU
time every process spent (from /proc/stat) minus the CPU time this process spent (its own threads),
divided by the wall time, is the number of cores others keep busy, `others`; a core counts as free
only if others left it idle for all but BUSY_SHARE of the interval:

    free cores = floor(cores - others + BUSY_SHARE), at least 1

A second thread on a core someone else uses even part of the time costs far more than it gains (the
collapse above), and while tinylora's two threads fight a competitor for the cores, the competitor
gets less than a whole core: rounding `cores - others` to the nearest whole number kept choosing two
threads there.
Where /proc/stat does not exist (not Linux), every core counts as free.

The elementwise kernels (engine/kernels/) share their blocks among threads by the same rule, with
SMALL_ELEMENTS numbers in place of SMALL_FLOPS (`workers_for`).

The user decides the limit (the most threads tinylora ever uses):

    TINYLORA_THREADS=N               environment variable, read at import
    tinylora.set_num_threads(N)      at run time (None: back to the default)

The default limit is the BLAS library's own thread count when tinylora starts (so the usual
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS still cap it). TINYLORA_ADAPTIVE_THREADS=0 switches both
rules off: every product gets the limit, as plain NumPy would (the busy-machine benchmark's "before").

The thread count is set through threadpoolctl, the library scikit-learn uses for the same job;
without it installed, products run with whatever the BLAS library chose (nothing breaks).
"""

from __future__ import annotations

import math
import os
import time

# Below this a product runs on one thread. It counts one matrix: NumPy calls BLAS once per matrix of a stack,
# and each call starts and joins its threads. Quiet, on the 2-core development machine (issue 16), two
# threads were faster from about 1 MFLOP up (512 x 128 @ 128 x 8, 1.05 MFLOP: 27 -> 19 us; 2048 x 128 @ 128 x 8,
# LoRA's A at base-mini, 4.2 MFLOP: 87 -> 52 us) but not for attention's stacks of 128 x 32 @ 32 x 128
# (1.05 MFLOP each) at base-mini. (It was 300 MFLOP for the whole product: base-mini ran on one thread.)
SMALL_FLOPS = 2e6
SMALL_ELEMENTS = 1 << 18  # an elementwise kernel over fewer numbers (1 MiB of float32) runs on one thread
INTERVAL = 0.2  # seconds: how often the free cores are measured again
BUSY_SHARE = 0.25  # a core others kept busy for more than this share of the interval is not free

_limit: int | None = None  # the user's limit (TINYLORA_THREADS or set_num_threads), None: the BLAS default
_adaptive = os.environ.get("TINYLORA_ADAPTIVE_THREADS", "1").strip() != "0"
_blas = None  # threadpoolctl's controller of the loaded BLAS libraries (made on first use)
_blas_default = None  # the BLAS thread count at start-up
_current = None  # the thread count set last (set again only when it changes)
_sample = None  # (wall time, CPU time of every process, CPU time of this process) at the last measurement
_free = None  # free cores measured last


def set_num_threads(n: int | None) -> None:
    """Use at most `n` threads for tinylora's products (None: the BLAS library's default)."""
    global _limit
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: the thread count must be a positive integer or None, got {n!r}")
    _limit = n


def get_num_threads() -> int:
    """The most threads a product may get now (the user's limit, or the BLAS default)."""
    _controller()
    return _limit if _limit is not None else (_blas_default or 1)


def _read_env() -> None:
    value = os.environ.get("TINYLORA_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"TINYLORA_THREADS={value!r}: give a positive whole number of threads")
        set_num_threads(int(value))


def _controller():
    """threadpoolctl's BLAS controller, or False where threadpoolctl is not installed."""
    global _blas, _blas_default
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas = False
            return _blas
        _blas = ThreadpoolController().select(user_api="blas")
        counts = [info["num_threads"] for info in _blas.info()]
        _blas_default = max(counts) if counts else 1
    return _blas


def _cpu_seconds_of_all_processes() -> float | None:
    """Busy CPU seconds of the whole machine since boot (/proc/stat), None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]  # cpu user nice system idle iowait irq softirq steal ...
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_cores() -> int:
    """Cores no other process kept busy over the last interval (re-measured at most every INTERVAL s)."""
    global _sample, _free
    now = time.perf_counter()
    if _sample is not None and now - _sample[0] < INTERVAL:
        return _free
    machine, own = _cpu_seconds_of_all_processes(), time.process_time()
    cores = usable_cores()
    if machine is None:
        _sample, _free = (now, 0.0, own), cores
        return _free
    if _sample is None:
        _free = cores  # no interval yet: assume a quiet machine
    else:
        wall = now - _sample[0]
        others = (machine - _sample[1]) - (own - _sample[2])  # CPU seconds other processes used
        _free = max(1, min(cores, math.floor(cores - others / wall + BUSY_SHARE)))
    _sample = (now, machine, own)
    return _free


def threads_for(flops: float) -> int:
    """The thread count for a product of `flops` floating-point operations."""
    return _threads(small=flops < SMALL_FLOPS)


def workers_for(elements: int) -> int:
    """How many threads share an elementwise kernel over `elements` numbers (engine/kernels/blocks.py).

    The same rule as for products, with SMALL_ELEMENTS for SMALL_FLOPS: below it, starting a thread
    costs more than it saves.
    """
    return _threads(small=elements < SMALL_ELEMENTS)


def _threads(small: bool) -> int:
    """One thread for small work, else the free cores up to the limit (every thread if adaptive is off)."""
    limit = get_num_threads()
    if not _adaptive:
        return limit
    if small or limit == 1:
        return 1
    return min(limit, free_cores())


def use_threads(n: int) -> None:
    """Make the BLAS library use `n` threads from now on (a no-op if that is already the count)."""
    global _current
    if n != _current and _controller():
        _blas.limit(limits=n)
        _current = n


def matmul(a, b):
    """a @ b, with the thread count for its size (NumPy only; CuPy products go straight to the GPU).

    A stack of transposed matrices b (attention's k^T in q k^T, (B, nh, hs, T) with unit stride down
    its columns) is copied to row-major first: BLAS runs each of the stack's small products much faster
    that way (base-mini's q k^T: 1.46 -> 0.97 ms with the copy, GPT-2 small's 7.8 -> 4.7 ms, quiet, 2 threads)."""
    if type(a).__module__ != "numpy":
        return a @ b
    n, k = (a.shape[-2], a.shape[-1]) if a.ndim > 1 else (1, a.shape[-1])
    m = b.shape[-1] if b.ndim > 1 else 1
    use_threads(threads_for(2.0 * n * k * m))  # per matrix: NumPy calls BLAS once for each matrix of a stack
    if _copy_transposed_stacks and b.ndim > 2 and b.strides[-2] == b.itemsize and m > 1:
        b = b.copy()  # row-major matrices
    return a @ b


_copy_transposed_stacks = True  # False: plain a @ b (for measuring what the copy gains)


_read_env()
