"""The matrix product's fast path: a @ b on NumPy arrays, with a thread count fit for its size.

The math is MatMul's and Linear's docstrings in engine/ops/matmul.py; the op's readable lines are a
plain `a @ b`. Here the same product gets two things that only change its speed:

    the thread count   engine/backend/threads.py: one thread for a small product, the free cores (or
                       a training run's fixed plan) for a large one
    row-major stacks   a stack of transposed matrices b (attention's k^T in q k^T, (B, nh, hs, T) with
                       unit stride down its columns) is copied to row-major first: BLAS runs each of
                       the stack's small products much faster that way (base-mini's q k^T: 1.46 ->
                       0.97 ms with the copy, GPT-2 small's 7.8 -> 4.7 ms, quiet, 2 threads)

CuPy products go straight to the GPU (the op's plain lines); so do the fake device's.
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.backend import threads

copy_transposed_stacks = True  # False: no copy (for measuring what the copy gains)


def takes(a, b) -> bool:
    """Does this fast path suit the arrays: the fast paths on, and both NumPy arrays."""
    return kernels.enabled() and type(a).__module__ == "numpy" and type(b).__module__ == "numpy"


def product(a, b):
    """a @ b (NumPy), a: (..., n, k), b: (..., k, m), with the thread count for one n x k x m matrix."""
    n, k = (a.shape[-2], a.shape[-1]) if a.ndim > 1 else (1, a.shape[-1])
    m = b.shape[-1] if b.ndim > 1 else 1
    threads.use_threads(threads.threads_for(2.0 * n * k * m))  # per matrix: NumPy calls BLAS once per matrix of a stack
    if copy_transposed_stacks and b.ndim > 2 and b.strides[-2] == b.itemsize and m > 1:
        b = b.copy()  # row-major matrices
    return a @ b
