"""How many threads a matrix product (or an elementwise kernel) gets: one for a small one, the free
cores for a large one.

Why this exists. OpenBLAS starts its threads for almost every product and, by default, as many as
the machine has cores. On a quiet machine that is right for large products. On a busy one (a shared
JupyterHub server, a laptop compiling something) another process holds one of the cores: the
product's second thread waits for a time slice while the first spins waiting for it, and a product
that takes 0.03 ms alone can take 20 ms. Small products gain little from a second thread even on a
quiet machine. So tinylora decides per product:

    threads = 1                          if the product has fewer than SMALL_FLOPS = 2 n k m FLOPs
    threads = min(limit, free cores)     otherwise

"free cores" is measured, not guessed: over the last interval (at least INTERVAL seconds), the CPU
time every process spent (from /proc/stat) minus the CPU time this process spent (its own threads),
divided by the wall time, is the number of cores others keep busy; the rest are free (at least 1).
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

import os
import time

# Below this a product runs on one thread. base-mini's largest product (2048 x 128 @ 128 x 512, 268 MFLOP) is
# under it: on the 2-core development machine its whole LoRA step ran faster on one thread than on two
# (0.230 s against 0.258 s, quiet; issue 16). GPT-2 small's products (0.4 - 4.8 GFLOP at 4 x 256) are above it.
SMALL_FLOPS = 300e6
SMALL_ELEMENTS = 1 << 18  # an elementwise kernel over fewer numbers (1 MiB of float32) runs on one thread
INTERVAL = 0.2  # seconds: how often the free cores are measured again

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
        _free = max(1, min(cores, round(cores - others / wall)))
    _sample = (now, machine, own)
    return _free


def threads_for(flops: float) -> int:
    """The thread count for a product of `flops` floating-point operations."""
    limit = get_num_threads()
    if not _adaptive:
        return limit
    if flops < SMALL_FLOPS or limit == 1:
        return 1
    return min(limit, free_cores())


def workers_for(elements: int) -> int:
    """How many threads share an elementwise kernel over `elements` numbers (engine/kernels/blocks.py).

    The same rule as for products: one thread below SMALL_ELEMENTS (starting a thread costs more than
    it saves), else the free cores up to the limit.
    """
    limit = get_num_threads()
    if not _adaptive:
        return limit
    if elements < SMALL_ELEMENTS or limit == 1:
        return 1
    return min(limit, free_cores())


def use_threads(n: int) -> None:
    """Make the BLAS library use `n` threads from now on (a no-op if that is already the count)."""
    global _current
    if n != _current and _controller():
        _blas.limit(limits=n)
        _current = n


def matmul(a, b):
    """a @ b, with the thread count for its size (NumPy only; CuPy products go straight to the GPU)."""
    if type(a).__module__ == "numpy":
        n, k = (a.shape[-2], a.shape[-1]) if a.ndim > 1 else (1, a.shape[-1])
        m = b.shape[-1] if b.ndim > 1 else 1
        batch = max(a.size // max(n * k, 1), b.size // max(k * m, 1))
        use_threads(threads_for(2.0 * batch * n * k * m))
    return a @ b


_read_env()
