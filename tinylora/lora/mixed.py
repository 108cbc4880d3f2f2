"""Mixed-adapter batches: every example of one batch runs with its own adapter.

The paper admits (§4.2) that with merged weights "it is not straightforward to
batch inputs to different tasks with different A and B in a single forward
pass". Unmerged, it is: W0 is shared, so only the small LoRA branch differs.
For example b with adapter a(b), in every adapted layer:

    h_b = W0 x_b  +  s_{a(b)} B_{a(b)} A_{a(b)} x_b          x_b (T, k), s = α/r
          ───────    ───────────────────────────────
          one matmul over the whole batch (B, T, k) @ (k, d): the expensive part, shared
                     the LoRA branch, per example: two thin matmuls through r dimensions

    model(idx, adapter_ids=["sql", "e2e", "base", "sql"])   # one name per example; "base": no adapter
    generate(model, idx, 20, adapter_ids=[...])             # the same through a KV cache

Two ways to run the LoRA branch (`strategy=`), with the same result:

  "gather" (default; Punica's idea): gather each example's A and B into stacks
      A_g (B, r_max, k), B_g (B, d, r_max), ranks zero-padded to the largest
      (zero rows add exact zeros; "base" rows are all zeros), then two batched
      matmuls  (B, T, k) @ (B, k, r_max) -> (B, T, r_max) @ (B, r_max, d).
      Cost: one copy of B·r_max·(k + d) numbers per layer per generation (the
      gather is done once, on entering the context, and reused by every KV-cache
      step), then a fixed two matmuls however many adapters the batch mixes.
      Waste: padding, when ranks differ a lot.
  "group" (PEFT's mixed-batch forward): for each distinct adapter, take its rows,
      run x[rows] @ A.T @ B.T, write the result back into those rows.
      Cost: no copy of A and B, but one pair of matmuls per distinct adapter, so
      the overhead grows with how many adapters a batch mixes (Python and
      per-call cost for many small matmuls, plus the row gather/scatter of x).

Inference only: the per-example branch is computed on raw arrays, so no
gradient reaches A or B through it; the model must be in eval mode, and no layer
may be merged (W0 would already hold one adapter's ΔW) or disabled.
"""

from __future__ import annotations

import contextlib

from tinylora.engine.tensor import Tensor
from tinylora.errors import MissingNameError
from tinylora.lora.adapters import BASE, _layers, adapter_state, list_adapters
from tinylora.lora.apply import lora_layers

STRATEGIES = ("gather", "group")


class GatheredLoRA:
    """One layer's LoRA branch for a batch that mixes adapters, by gathering each row's (A, B).

    Built from the adapters of each example (None for "base"); called with x (B, T, k),
    it returns the per-example update (B, T, d) as a Tensor.
    """

    def __init__(self, states: list, layer):
        xp = layer.lora_A.device.xp
        d, k = layer.out_features, layer.in_features
        r_max = max([s.r for s in states if s is not None] + [1])
        a_t = xp.zeros((len(states), k, r_max), dtype=layer.lora_A.dtype)  # (B, k, r_max): each row's A.T, padded
        b_t = xp.zeros((len(states), r_max, d), dtype=layer.lora_A.dtype)  # (B, r_max, d): each row's B.T, padded
        scale = xp.zeros((len(states), 1, 1), dtype=layer.lora_A.dtype)  # (B, 1, 1): each row's α/r (0 for base)
        for row, s in enumerate(states):
            if s is not None:
                a_t[row, :, : s.r] = s.lora_A.data.T
                b_t[row, : s.r, :] = s.lora_B.data.T
                scale[row] = s.scaling
        self.a_t, self.b_t, self.scale, self.batch = a_t, b_t, scale, len(states)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, self.batch)
        z = (x.data @ self.a_t) * self.scale  # (B, T, k) @ (B, k, r_max) -> (B, T, r_max), scaled by α/r per row
        return Tensor(z @ self.b_t, device=x.device)  # (B, T, r_max) @ (B, r_max, d) -> (B, T, d)


class GroupedLoRA:
    """One layer's LoRA branch for a batch that mixes adapters, by grouping the rows of each adapter."""

    def __init__(self, states: list, layer):
        groups = {}  # id(state) -> (state, rows)
        for row, s in enumerate(states):
            if s is not None:
                groups.setdefault(id(s.lora_A), (s, []))[1].append(row)
        self.groups, self.batch, self.d = list(groups.values()), len(states), layer.out_features

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x, self.batch)
        xp = x.device.xp
        out = xp.zeros((*x.shape[:-1], self.d), dtype=x.dtype)  # (B, T, d); "base" rows stay 0
        for s, rows in self.groups:
            z = (x.data[rows] @ s.lora_A.data.T) * s.scaling  # (n, T, k) @ (k, r) -> (n, T, r)
            out[rows] = z @ s.lora_B.data.T  # (n, T, r) @ (r, d) -> (n, T, d)
        return Tensor(out, device=x.device)


def _check_batch(x, batch: int) -> None:
    if x.shape[0] != batch:
        raise ValueError(f"mixed adapters: adapter_ids names {batch} examples, but the batch holds {x.shape[0]}")


def _check_ids(model, adapter_ids) -> list:
    if isinstance(adapter_ids, str):
        raise TypeError("adapter_ids: give one adapter name per example (a list), not one str for all "
                        "(for that, use set_adapter)")
    names = list(adapter_ids)
    if not names:
        raise ValueError("adapter_ids is empty; give one adapter name per example")
    known = list_adapters(model)
    unknown = sorted({n for n in names if n != BASE and n not in known}, key=str)
    if unknown:
        raise MissingNameError(f"adapter_ids: no adapter named {unknown}; the model holds {known} (and '{BASE}' means none)")
    return names


@contextlib.contextmanager
def mixed_adapters(model, adapter_ids, strategy: str = "gather"):
    """`with mixed_adapters(model, ["a", "base", "b"]):` each example of every forward uses its own adapter.

    Inside, model(idx) (and model(idx, kv_cache=...)) must get a batch of len(adapter_ids)
    examples. The (A, B) of each example are gathered once here, on entry.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"mixed_adapters: strategy must be one of {STRATEGIES}, got {strategy!r}")
    layers = _layers(model, "mixed_adapters")
    names = _check_ids(model, adapter_ids)
    if model.training:
        raise RuntimeError("mixed_adapters: inference only (no gradient flows through the per-example branch); "
                           "call model.eval() first")
    for name, layer in lora_layers(model):
        if layer.merged or not layer.enabled:
            raise RuntimeError(f"mixed_adapters: {name} is {'merged' if layer.merged else 'disabled'}; each example "
                               "needs W0 alone plus its own ΔW (unmerge_lora / enable_lora first)")
        if layer.per_example is not None:
            raise RuntimeError("mixed_adapters: already inside a mixed-adapter batch")
    build = GatheredLoRA if strategy == "gather" else GroupedLoRA
    for layer in layers:
        layer.per_example = build([None if n == BASE else adapter_state(layer, n) for n in names], layer)
    try:
        yield model
    finally:
        for layer in layers:
            layer.per_example = None
