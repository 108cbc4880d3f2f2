"""Properties a LoRA layer and an autograd engine must have, as checks that run the code under test.

The lab (lab_common_mistakes.ipynb) runs each check on tinylora's own code, which passes, and on a
plausible wrong version, which fails. A check takes the code to test and returns (passed, what it saw):

    layer checks:   check(make) with make(base: nn.Linear, r, alpha) -> a LoRA layer (LoRALinear or a subclass)
    engine check:   check(Value) with Value a scalar class: Value(x), a * b, a + b, L.backward(), a.grad

Each check builds its own small float64 example with α/r ≠ 1 and a nonzero B where that matters, so a
mistake cannot hide behind a scaling of 1 or a B that is still zero.
"""

from __future__ import annotations

import numpy as np

import tinylora
from tinylora import nn
from tinylora.engine.backend import memory


def _layer(make, d=6, k=5, r=2, alpha=6.0, seed=0, trained=True, dtype="float64"):
    """make(...) on a Linear with a bias; `trained`: B set to random values, as after some training."""
    tinylora.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base = nn.Linear(k, d, dtype=dtype)
    base.bias.data[...] = rng.normal(size=d)
    layer = make(base, r, alpha)
    if trained:
        layer.lora_B.data[...] = rng.normal(size=(d, r))
    return layer


def _host(tensor):
    return tensor.detach().numpy().copy()


def starts_as_the_base(make):
    """At init (before any training) the wrapped layer computes exactly what the base layer did: ΔW = BA = 0."""
    layer = _layer(make, trained=False)
    x = tinylora.tensor(np.random.default_rng(1).normal(size=(3, 5)))
    with tinylora.no_grad():
        h, h_base = layer(x).numpy(), layer.base(x).numpy()
    if np.array_equal(h, h_base):
        return True, "h = W0 x + b at init, bit for bit"
    return False, f"at init the layer already differs from the base by up to {np.abs(h - h_base).max():.3g}"


def scales_by_alpha_over_r(make):
    """The update is (α/r) B A x: with α = 6, r = 2 the low-rank path is multiplied by 3, not by 6 or 1."""
    layer = _layer(make, r=2, alpha=6.0)
    x = np.random.default_rng(2).normal(size=(3, 5))
    with tinylora.no_grad():
        update = layer(tinylora.tensor(x)).numpy() - layer.base(tinylora.tensor(x)).numpy()
    low_rank = (x @ _host(layer.lora_A).T) @ _host(layer.lora_B).T  # B A x for rows x
    factor = float(np.sum(update * low_rank) / np.sum(low_rank * low_rank))  # the best c in update = c B A x
    if np.allclose(update, 3.0 * low_rank):
        return True, "h - (W0 x + b) = (α/r) B A x with α/r = 3"
    return False, f"the low-rank path is scaled by {factor:.3g}, not α/r = 3"


def never_forms_BA(make):
    """The forward pass computes B (A x) and never holds the d x k product BA (r(d + k) work, not d k r)."""
    d = k = 512
    layer = _layer(make, d=d, k=k, r=2, alpha=2.0, dtype="float32")
    x = tinylora.randn(1, k)  # one row: anything of size d x k is the product, not an activation
    with tinylora.no_grad():
        memory.reset_peak()
        before = memory.total()
        layer(x)
        extra = memory.stats()["peak"] - before
    limit = d * k * 4  # bytes of one float32 d x k array
    if extra < limit:
        return True, f"the forward pass held {extra:,} bytes at most, less than one d x k array ({limit:,})"
    return False, f"the forward pass held {extra:,} bytes: at least one d x k array ({limit:,}), i.e. B A itself"


def freezes_W0(make):
    """W0 is frozen: after backward it has no gradient, and it is not among the parameters that train."""
    layer = _layer(make)
    x = tinylora.tensor(np.random.default_rng(3).normal(size=(3, 5)))
    layer(x).sum().backward()
    trains = [name for name, p in layer.named_parameters() if p.requires_grad]
    if layer.base.weight.grad is None and "base.weight" not in trains:
        return True, f"trains {trains}; W0 gets no gradient"
    return False, f"W0 trains (requires_grad={layer.base.weight.requires_grad}) and gets a gradient: " \
                  "memory and optimizer state for d x k numbers, and W0 drifts"


def merge_changes_nothing_but_cost(make):
    """After merge(), forward gives what it gave before (to float64 rounding), and unmerge() gives W0 back."""
    layer = _layer(make)
    x = tinylora.tensor(np.random.default_rng(4).normal(size=(3, 5)))
    W0 = _host(layer.base.weight)
    with tinylora.no_grad():
        before = layer(x).numpy()
        layer.merge()
        after = layer(x).numpy()
        layer.unmerge()
    if not np.allclose(after, before, rtol=0, atol=1e-12):
        return False, f"merged and unmerged outputs differ by up to {np.abs(after - before).max():.3g}"
    if not np.allclose(_host(layer.base.weight), W0, rtol=0, atol=1e-12):
        return False, "unmerge() did not give W0 back"
    return True, "merged output = unmerged output, and unmerge() restores W0"


LAYER_CHECKS = (starts_as_the_base, scales_by_alpha_over_r, never_forms_BA, freezes_W0, merge_changes_nothing_but_cost)


def sums_the_gradients_of_a_value_used_twice(Value):
    """d(x·x)/dx = 2x and d(x·y + x)/dx = y + 1: a value used twice gets the sum of both paths' gradients."""
    x = Value(3.0)
    square = x * x
    square.backward()
    x2, y = Value(3.0), Value(-2.0)
    other = x2 * y + x2
    other.backward()
    if abs(x.grad - 6.0) < 1e-12 and abs(x2.grad - (-1.0)) < 1e-12:
        return True, "d(x·x)/dx = 6 and d(x·y + x)/dx = -1 at x = 3, y = -2"
    return False, f"d(x·x)/dx came out {x.grad:g} (should be 6) and d(x·y + x)/dx {x2.grad:g} (should be -1)"


def run(check, code, name: str) -> bool:
    """Run `check` on `code`, print one line with the verdict, and return whether it passed."""
    passed, saw = check(code)
    print(f"{name:<22} {'passes' if passed else 'FAILS '} {check.__name__}: {saw}")
    return passed
