"""Fast paths for the hottest ops, kept apart from the ops a student reads.

Every op in engine/ops/ is written as its math: that is the readable reference. Outside the matrix
products, a training step's time goes to a handful of them: GELU, the attention softmax, the
cross-entropy softmax and layer norm (`python -m benchmarks.speed --profile 1` shows it). For those,
this package computes the very same numbers faster, and the op hands its arrays over when `use(x)`
says so:

    GELU forward and backward                 gelu.py
    causal (attention) softmax, both ways     softmax.py
    the softmax inside cross-entropy          softmax.py
    layer norm forward and backward           layer_norm.py
    the Adam / AdamW update of one parameter  adam.py
    matrix products: the thread count         matmul.py (the op's readable lines are a plain a @ b)
    most of the above as fused CUDA kernels   cuda.py   (CuPy; emulated on the fake device)

Why they are faster on a CPU (all three are about memory, not arithmetic):

    1. One block at a time. The readable GELU makes about ten passes over a 12 MB array, each a fresh
       temporary that does not fit in any cache. A kernel runs all the steps on one block of about
       128K numbers (512 KiB of float32: it stays in the core's cache), in place, then moves on.
    2. The blocks are shared among the free cores (NumPy lets go of Python's lock inside its loops),
       as many as engine/backend/threads.py allows: one thread on a busy machine.
    3. One output buffer, reused for every step: no temporaries to allocate and fault in.

On a GPU there is no cache to fit and no thread to share: the same code runs over the whole array
at once, and GELU, layer norm's elementwise parts, the causal softmax's backward and the Adam update
are one fused CUDA kernel each (cuda.py) instead of one kernel launch per arithmetic step. The fake device (backend/fake.py) takes
the GPU path too, with the CUDA kernels emulated line by line in NumPy, so a CPU-only machine runs
the code a GPU runs.

The switch: TINYLORA_KERNELS=0 in the environment (or `set_enabled(False)`) makes every op run its
readable lines; CI runs the fast test suite that way too, and tests/test_kernels.py checks every
kernel against its op's readable lines.
"""

from __future__ import annotations

import os


def _from_env() -> bool:
    value = os.environ.get("TINYLORA_KERNELS", "1").strip() or "1"
    if value not in ("0", "1"):
        raise ValueError(f"TINYLORA_KERNELS={value!r}: give 1 (the fast paths, the default) or 0 (the readable ops)")
    return value == "1"


_enabled = _from_env()


def set_enabled(on: bool) -> None:
    """Turn the fast paths on (the default) or off (every op runs its readable lines)."""
    global _enabled
    _enabled = bool(on)


def enabled() -> bool:
    return _enabled


def use(*arrays) -> str | None:
    """Which kernels suit these arrays: 'cpu' (NumPy), 'gpu' (CuPy, or the fake device), or None.

    None means "run the op's readable lines": kernels switched off, or arrays the kernels do not take
    (not floating point, or NumPy arrays that are not C-contiguous: the CPU kernels cut flat blocks).
    """
    if not _enabled or not all(a.dtype.kind == "f" for a in arrays):
        return None
    if all(on_gpu(a) for a in arrays):
        return "gpu"
    if all(type(a).__module__ == "numpy" and a.flags.c_contiguous for a in arrays):
        return "cpu"
    return None


def on_gpu(a) -> bool:
    """True for a CuPy array or a fake-device array (which stands in for one)."""
    return type(a).__module__.split(".")[0] == "cupy" or type(a).__name__ == "FakeArray"
