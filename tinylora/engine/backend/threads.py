"""How many threads a matrix product (or an elementwise kernel) gets: one for a small one, the free
cores for a large one. Only the fast paths ask (engine/kernels/matmul.py, engine/kernels/blocks.py);
the readable ops multiply with a plain `a @ b`.

Nothing here runs at import. Until `tinylora.engine.backend.tune_for_training()` switches the choice
on (`train()`, the `tinylora` command and the benchmarks call it), products leave the BLAS library's
thread count alone (unless the user set a limit, below) and nothing reads /proc.

Why this exists. OpenBLAS starts its threads for almost every product and, by default, as many as
the machine has cores. On a quiet machine that is right for large products. On a busy one (a shared
JupyterHub server, a laptop compiling something) another process holds one of the cores: the
product's second thread waits for a time slice while the first spins waiting for it, and a product
that takes 0.03 ms alone can take 20 ms. Small products gain little from a second thread even on a
quiet machine. So, once switched on, tinylora decides per product:

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

A training run's plan. The thread count can change a product's last bits (BLAS splits the work
another way), so counts that followed the load product by product would make a run's weights depend
on the load. `fix_plan()` (called by `train()`) measures the free cores once and fixes the counts for
the run: every product of at least SMALL_FLOPS gets that count, every smaller one gets 1, whatever
the load does later. The plan is a small dict that a checkpoint keeps and a resumed run fixes again,
so the resumed run multiplies with the counts of the run it continues. (The ranks of an MPI job
measure nothing: each takes the limit, so all of them, and their resumes, use one plan.)

The elementwise kernels (engine/kernels/) share their blocks among threads by the same rule, with
SMALL_ELEMENTS numbers in place of SMALL_FLOPS (`workers_for`); how blocks are shared never changes a
value, so they follow the load during a run too.

The user decides the limit (the most threads tinylora ever uses):

    TINYLORA_THREADS=N               environment variable, read at import
    tinylora.set_num_threads(N)      at run time (None: back to the default)

The default limit is the BLAS library's own thread count when tinylora first asks for it (so the usual
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
# and each call starts and joins its threads. Quiet, on the 2-core development machine, two
# threads were faster from about 1 MFLOP up (512 x 128 @ 128 x 8, 1.05 MFLOP: 27 -> 19 us; 2048 x 128 @ 128 x 8,
# LoRA's A at base-mini, 4.2 MFLOP: 87 -> 52 us) but not for attention's stacks of 128 x 32 @ 32 x 128
# (1.05 MFLOP each) at base-mini. (It was 300 MFLOP for the whole product: base-mini ran on one thread.)
SMALL_FLOPS = 2e6
SMALL_ELEMENTS = 1 << 18  # an elementwise kernel over fewer numbers (1 MiB of float32) runs on one thread
INTERVAL = 0.2  # seconds: how often the free cores are measured again
BUSY_SHARE = 0.25  # a core others kept busy for more than this share of the interval is not free

_limit: int | None = None  # the user's limit (TINYLORA_THREADS or set_num_threads), None: the BLAS default
_tuned = False  # switch_on() was called (by tune_for_training): until then products leave BLAS alone
_adaptive = os.environ.get("TINYLORA_ADAPTIVE_THREADS", "1").strip() != "0"
_plan: dict | None = None  # a run's fixed counts (fix_plan), None: no plan in force
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


def switch_on() -> None:
    """Let tinylora choose each product's thread count from now on (tune_for_training calls this)."""
    global _tuned
    _tuned = True


def threads_for(flops: float) -> int | None:
    """The thread count for a product of `flops` floating-point operations (None: leave BLAS as it is)."""
    if _plan is not None:
        return 1 if flops < _plan["small_flops"] else _plan["large_product_threads"]
    if not _tuned:
        return _limit  # the user's own limit if they set one, else nothing to change
    return _threads(small=flops < SMALL_FLOPS)


def workers_for(elements: int) -> int:
    """How many threads share an elementwise kernel over `elements` numbers (engine/kernels/blocks.py).

    The same rule as for products, with SMALL_ELEMENTS for SMALL_FLOPS: below it, starting a thread
    costs more than it saves. Before switch_on() no load is measured: a large kernel gets the limit.
    """
    small = elements < SMALL_ELEMENTS
    if not _tuned:
        return 1 if small else get_num_threads()
    return _threads(small=small)


def _threads(small: bool) -> int:
    """One thread for small work, else the free cores up to the limit (every thread if adaptive is off)."""
    limit = get_num_threads()
    if not _adaptive:
        return limit
    if small or limit == 1:
        return 1
    return min(limit, free_cores())


def use_threads(n: int | None) -> None:
    """Make the BLAS library use `n` threads from now on (nothing if that is already the count, or n is None)."""
    global _current
    if n is not None and n != _current and _controller():
        _blas.limit(limits=n)
        _current = n


# ------------------------------------------------------------------ a training run's plan
def fix_plan(plan: dict | None = None, measure: bool = True) -> dict:
    """Fix every product's thread count until `release_plan()`; returns the plan now in force.

    A plan is {"large_product_threads": n, "small_flops": f}: a product of fewer than f FLOPs gets
    one thread, every other n. plan: the plan an earlier part of the run saved (a checkpoint's), used
    as it is. None: made now, n = min(limit, free cores) and f = SMALL_FLOPS (with adaptive threads
    off: n = the limit for every product, f = 0); the first measurement of a process waits INTERVAL
    seconds, to have an interval to measure the load over. measure=False: n = the limit, measuring
    nothing (the ranks of an MPI job then make the same plan from the same environment).
    """
    global _plan
    if plan is None:
        if measure and _adaptive and _sample is None and get_num_threads() > 1:
            free_cores()  # the first sample, then an interval to measure over
            time.sleep(INTERVAL)
        count = _threads(small=False) if measure else get_num_threads()
        plan = {"large_product_threads": count, "small_flops": SMALL_FLOPS if _adaptive else 0}
    _plan = check_plan(plan)
    return dict(_plan)


def check_plan(plan, where: str = "") -> dict:
    """`plan` if it is a valid plan (see fix_plan), else a ValueError naming `where` (a file) and what is wrong."""
    count, small = (plan.get("large_product_threads"), plan.get("small_flops")) if isinstance(plan, dict) else (0, 0)
    if (not isinstance(count, int) or isinstance(count, bool) or count < 1
            or not isinstance(small, (int, float)) or isinstance(small, bool) or not 0 <= small < math.inf):
        raise ValueError(f"{where + ': ' if where else ''}thread plan {plan!r}: expected "
                         "{'large_product_threads': a positive int, 'small_flops': a number >= 0}")
    return {"large_product_threads": count, "small_flops": small}


def current_plan() -> dict | None:
    """The plan in force (see fix_plan), or None."""
    return None if _plan is None else dict(_plan)


def release_plan() -> None:
    """Products follow the load again (the end of a run)."""
    global _plan
    _plan = None


_read_env()
