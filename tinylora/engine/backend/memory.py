"""Memory accounting: how many bytes of tensor data are alive, and what they are for.

LoRA's memory saving is a claim about *which* arrays a training step keeps alive:
with W0 frozen there is no gradient and no optimizer state for it, and fewer
activations are saved for backward. To show that, tinylora tags every array it
hands out with one category:

    parameters   weights and biases (frozen or trainable)
    optimizer    optimizer state (momentum, Adam's m and v)
    gradients    `.grad` of trainable leaves
    saved        arrays an op node keeps for its backward pass
    other        everything else that a Tensor holds (activations, inputs, outputs)

An array is counted once, by its underlying buffer: a view (a transpose, a
reshape) of a counted array adds nothing. When one buffer gets two tags, the
first in the list above wins (a weight saved for backward is still a parameter).
An activation counts as 'saved' only while some op node holds it for backward.
A buffer stops counting the moment it is freed (a weakref callback fires).

What is *not* counted: temporaries that live only inside one op's forward or
backward. So these numbers are a lower bound on what the process uses; the
benchmarks read the operating system's (or CuPy's) own counters beside them.

On CuPy, `cuda_peak_bytes()` additionally reports every byte CuPy allocated,
temporaries included, through a memory hook (the pool itself only reports
used/total bytes, not a high-water mark).

Usage:

    from tinylora.engine.backend import memory
    memory.reset_peak()
    ... one training step ...
    memory.stats()["peak"]        # bytes, and the per-category split at the peak
"""

from __future__ import annotations

import weakref

CATEGORIES = ("parameters", "optimizer", "gradients", "saved", "other")
_RANK = {name: i for i, name in enumerate(CATEGORIES)}  # lower rank wins a tie


class MemoryTracker:
    """Counts bytes of live tracked arrays per category, now and at the peak since `reset_peak()`."""

    def __init__(self):
        self.enabled = True
        # id(buffer) -> [nbytes, own category, number of op nodes holding it for backward, weakref to the buffer]
        self._entries: dict[int, list] = {}
        self.current = {name: 0 for name in CATEGORIES}
        self._total = 0  # sum(self.current.values()), kept as the counts change
        self.peak_total = 0
        self.peak_split = dict(self.current)  # the split at the moment of the total's peak
        self.category_peak = dict(self.current)  # each category's own highest value

    @staticmethod
    def _effective(entry) -> str:
        """An array held by a node counts as 'saved' unless its own category ranks higher (parameters...)."""
        if entry[2] > 0 and _RANK["saved"] < _RANK[entry[1]]:
            return "saved"
        return entry[1]

    def _add(self, category: str, nbytes: int) -> None:
        """current[category] += nbytes (negative: -=); a rise may set a new peak."""
        value = self.current[category] = self.current[category] + nbytes
        self._total += nbytes
        if nbytes > 0:
            if value > self.category_peak[category]:
                self.category_peak[category] = value
            if self._total > self.peak_total:
                self.peak_total = self._total
                self.peak_split = dict(self.current)

    def _entry(self, array, category):
        buffer = _base_buffer(array)
        key = id(buffer)
        entry = self._entries.get(key)
        if entry is None:
            try:  # when the buffer is freed, the callback stops counting it (the entry keeps the weakref alive)
                ref = weakref.ref(buffer, lambda _, key=key: self._release(key))
            except TypeError:  # not weak-referenceable (should not happen for ndarrays)
                return None
            entry = self._entries[key] = [int(buffer.nbytes), category, 0, ref]
            self._add(category, entry[0])
        return entry

    def _set(self, entry, index: int, value) -> None:
        """entry[index] = value (its category, or how many nodes hold it), moving its bytes if that retags it."""
        before = self._effective(entry)
        entry[index] = value
        after = self._effective(entry)
        if after != before:
            self._add(before, -entry[0])
            self._add(after, entry[0])

    def track(self, array, category: str = "other"):
        """Count `array`'s buffer under `category` until it is freed. Returns the array."""
        if not self.enabled or not hasattr(array, "nbytes"):
            return array
        entry = self._entry(array, category)
        if entry is not None and _RANK[category] < _RANK[entry[1]]:  # e.g. other -> gradients
            self._set(entry, 1, category)
        return array

    def hold_for_backward(self, arrays) -> None:
        """An op node keeps `arrays` (None entries skipped) for its backward pass: count each as 'saved' while held."""
        if not self.enabled:
            return
        for array in arrays:
            if hasattr(array, "nbytes"):
                entry = self._entry(array, "other")
                if entry is not None:
                    self._set(entry, 2, entry[2] + 1)

    def drop_for_backward(self, arrays) -> None:
        """The node let go of `arrays` (backward passed it, or the graph was dropped): stop counting them as 'saved'."""
        for array in arrays:
            entry = self._entries.get(id(_base_buffer(array))) if array is not None else None
            if entry is not None and entry[2] > 0:
                self._set(entry, 2, entry[2] - 1)

    def _release(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._add(self._effective(entry), -entry[0])

    def total(self) -> int:
        """Bytes held by live tracked arrays right now."""
        return self._total

    def reset_peak(self) -> None:
        """Start a new measurement window: the peak becomes what is alive now."""
        self.peak_total = self.total()
        self.peak_split = dict(self.current)
        self.category_peak = dict(self.current)

    def stats(self) -> dict:
        """Bytes now and since `reset_peak()`.

        current: {category: bytes} now;  total: their sum;  peak: the highest total;
        peak_split: {category: bytes} at that moment;  category_peak: each category's own highest value.
        """
        return {
            "current": dict(self.current),
            "total": self.total(),
            "peak": self.peak_total,
            "peak_split": dict(self.peak_split),
            "category_peak": dict(self.category_peak),
        }


def _base_buffer(array):
    """The array that owns the memory a view looks at (follows `.base` while it is an array)."""
    base = getattr(array, "base", None)
    while base is not None and hasattr(base, "nbytes") and hasattr(base, "shape"):
        array, base = base, getattr(base, "base", None)
    return array


tracker = MemoryTracker()
track = tracker.track
hold_for_backward = tracker.hold_for_backward
drop_for_backward = tracker.drop_for_backward
stats = tracker.stats
reset_peak = tracker.reset_peak
total = tracker.total


# ---------------------------------------------------------------- CuPy hook
class _CudaPeakHook:
    """Counts bytes CuPy hands out from its pool (allocated, like torch.cuda.max_memory_allocated)."""

    def __init__(self):
        self.in_use = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
        self._sizes[mem_ptr] = mem_size
        self.in_use += mem_size
        self.peak = max(self.peak, self.in_use)

    def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
        self.in_use -= self._sizes.pop(mem_ptr, mem_size)


_cuda_hook = None


def install_cuda_hook(cupy) -> None:
    """Register the allocation hook once, when the 'cuda' device is first used."""
    global _cuda_hook
    if _cuda_hook is not None:
        return

    class Hook(cupy.cuda.MemoryHook):
        name = "tinylora_peak"

        def __init__(self):
            super().__init__()
            self.counter = _CudaPeakHook()

        def malloc_postprocess(self, **kw):
            self.counter.malloc_postprocess(**kw)

        def free_postprocess(self, **kw):
            self.counter.free_postprocess(**kw)

    _cuda_hook = Hook()
    _cuda_hook.__enter__()  # hooks are context managers; we keep this one entered for good


def cuda_reset_peak() -> None:
    """Make the CuPy peak equal to the bytes allocated right now."""
    if _cuda_hook is not None:
        _cuda_hook.counter.peak = _cuda_hook.counter.in_use


def cuda_allocated_bytes() -> int:
    """Bytes currently handed out by CuPy's pool (0 if 'cuda' was never used)."""
    return _cuda_hook.counter.in_use if _cuda_hook is not None else 0


def cuda_peak_bytes() -> int:
    """Highest `cuda_allocated_bytes()` since the last `cuda_reset_peak()`."""
    return _cuda_hook.counter.peak if _cuda_hook is not None else 0
