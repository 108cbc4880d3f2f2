"""Where a tinylora training step spends its time, per op class: a profiling context for the benchmarks.

    with OpProfiler(device) as prof:
        contender.train_step(idx, targets)
    prof.table()     # seconds per op class, forward and backward, grouped into categories

It replaces, while the context is open, the `forward` and `backward` of every `tinylora.engine.autograd.Function`
subclass by a timed wrapper (monkeypatching, acceptable here and nowhere in the engine), and restores them
on exit. On a GPU each timed call synchronises first, so the numbers are exact but the step is slower;
run the profile separately from the timing runs. What is not inside an op (building nodes, the backward
walk, Python glue) is reported as the difference between the step time and the op total.
"""

from __future__ import annotations

import time
from collections import defaultdict

CATEGORIES = {
    "matmul": ("MatMul", "Linear"),
    "elementwise": ("Add", "Sub", "Mul", "Div", "Neg", "Pow", "Exp", "Log", "Sqrt", "Tanh", "ReLU", "GELU",
                    "Dropout", "Where", "MaskedFill"),
    "layernorm": ("LayerNorm",),
    "softmax & cross-entropy": ("Softmax", "LogSoftmax", "CrossEntropy"),
    "reductions": ("Sum", "Mean", "Max", "Var"),
    "data movement": ("Reshape", "Permute", "GetItem", "Concatenate", "Stack", "To", "Embedding"),
}
_CATEGORY_OF = {name: cat for cat, names in CATEGORIES.items() for name in names}


def category(op_name: str) -> str:
    """The category of an op class ('other' for ops this table does not know)."""
    return _CATEGORY_OF.get(op_name, "other")


def _all_subclasses(cls):
    seen, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                stack.append(sub)
    return seen


class OpProfiler:
    """Accumulates wall time per (op class, 'forward' | 'backward') while open; also times optimizer steps."""

    def __init__(self, device=None):
        self.device = device
        self.seconds = defaultdict(float)  # (op name, phase) -> seconds
        self.calls = defaultdict(int)
        self._patched = []

    def _sync(self):
        if self.device is not None and self.device.name == "cuda":
            from tinylora.engine.backend import synchronize

            synchronize(self.device)

    def _wrap(self, cls, phase: str):
        original = cls.__dict__[phase]
        key = (cls.__name__, phase)

        def timed(node, *args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = original(node, *args, **kwargs)
            self._sync()
            self.seconds[key] += time.perf_counter() - start
            self.calls[key] += 1
            return out

        setattr(cls, phase, timed)
        self._patched.append((cls, phase, original))

    def time_optimizer(self, optimizer):
        """Time `optimizer.step()` calls as the pseudo-op 'AdamW step' (category optimizer)."""
        original = optimizer.step

        def timed_step(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = original(*args, **kwargs)
            self._sync()
            self.seconds[("optimizer step", "step")] += time.perf_counter() - start
            self.calls[("optimizer step", "step")] += 1
            return out

        optimizer.step = timed_step
        self._patched.append((optimizer, "step", None))
        return self

    def __enter__(self):
        from tinylora.engine.autograd import Function

        for cls in _all_subclasses(Function):
            for phase in ("forward", "backward"):
                if phase in cls.__dict__:
                    self._wrap(cls, phase)
        return self

    def __exit__(self, *exc):
        for target, phase, original in reversed(self._patched):
            if original is None:
                del target.step  # the instance attribute; the class's step shows through again
            else:
                setattr(target, phase, original)
        self._patched.clear()
        return False

    def breakdown(self, steps: int = 1) -> dict:
        """Seconds per step: per op class and phase, and per category (the optimizer is its own category)."""
        ops = {f"{name}.{phase}": t / steps for (name, phase), t in sorted(self.seconds.items(), key=lambda kv: -kv[1])}
        categories = defaultdict(float)
        for (name, _phase), t in self.seconds.items():
            categories["optimizer" if name == "optimizer step" else category(name)] += t / steps
        calls = {f"{name}.{phase}": n // steps for (name, phase), n in self.calls.items()}
        return {"ops": ops, "categories": dict(sorted(categories.items(), key=lambda kv: -kv[1])),
                "calls_per_step": calls, "total": sum(self.seconds.values()) / steps}
