"""The one switch for process-wide speed settings: `tune_for_training()`.

`import tinylora` changes nothing outside tinylora: no allocator setting, no thread count, no read
of /proc. The places that train or time training steps (`train()`, the `tinylora` command, the
benchmarks) call `tune_for_training()`, which switches on, once per process:

    the allocator   glibc keeps freed memory for reuse (allocator.py; TINYLORA_ALLOCATOR=system or
                    the user's own MALLOC_* variables leave glibc as it is)
    the threads     each matrix product and elementwise kernel gets the thread count fit for its size
                    and the machine's load (threads.py; TINYLORA_ADAPTIVE_THREADS=0: the limit for all)

Calling it again does nothing. A notebook that trains with its own loop may call it too.
"""

from __future__ import annotations

from tinylora.engine.backend import allocator, threads

_done = False


def tune_for_training() -> None:
    """Switch on the allocator and thread settings for training (once per process; later calls do nothing)."""
    global _done
    if _done:
        return
    allocator.configure_from_env()
    threads.switch_on()
    _done = True


def tuned() -> bool:
    """Has tune_for_training() run in this process?"""
    return _done
