"""Combining adapters: one adapter whose update is (close to) a weighted sum of others.

Adapters i = 1..n of one layer, ΔW_i = s_i B_i A_i (s_i = α_i / r_i), weights w_i.
The target is

    ΔW* = Σ_i w_i ΔW_i          (d, k)

Three ways to write a new (A', B') with scaling 1 (α' = r'), so that ΔW' = B' A':

  concat  A' = [w_1 s_1 A_1; ...; w_n s_n A_n]  (Σr_i, k)   rows stacked
          B' = [B_1, ..., B_n]                  (d, Σr_i)   columns side by side
          B' A' = Σ_i B_i (w_i s_i A_i) = ΔW*  EXACTLY (up to float rounding).
          The price: rank r' = Σ r_i, so cost grows with every adapter added.

  svd     U S Vᵀ = ΔW* (computed in full), B' = U_k S_k, A' = V_kᵀ, rank k of your choice.
          By Eckart–Young this is the BEST rank-k approximation of ΔW* in the Frobenius
          norm (error² = Σ_{p>k} σ_p²), and exact when k >= rank(ΔW*).

  linear  A' = Σ_i sign(w_i s_i) sqrt|w_i s_i| A_i,  B' = Σ_i sqrt|w_i s_i| B_i   (all r_i equal)
          PEFT's "linear". B' A' = Σ_i w_i s_i B_i A_i + Σ_{i≠j} (cross terms B_i A_j ...):
          it is NOT the weighted sum of the ΔW_i unless n = 1. `relative_error` measures
          how far off it is (for two random adapters, weights 0.7 / 0.3, about 0.8).

    combine_adapters(model, {"sql": 0.7, "e2e": 0.3}, "both", method="svd", rank=8)
    set_adapter(model, "both")

Arrays in and out are the backend's (NumPy or CuPy); A (r, k), B (d, r), as in LoRALinear.
"""

from __future__ import annotations

import math

from tinylora.engine.backend import device_of
from tinylora.errors import MissingNameError
from tinylora.lora.adapters import _layers, adapter_state, list_adapters, store_adapter
from tinylora.lora.apply import lora_layers

METHODS = ("concat", "svd", "linear")


def weighted_delta(parts) -> object:
    """ΔW* = Σ w_i s_i B_i A_i (d, k) for parts [(w_i, A_i, B_i, s_i), ...]."""
    return sum(w * s * (b @ a) for w, a, b, s in parts)


def concat_update(parts) -> tuple:
    """(A' (Σr, k), B' (d, Σr)) with B' A' = Σ w_i s_i B_i A_i exactly."""
    xp = device_of(parts[0][1]).xp
    a = xp.concatenate([w * s * a for w, a, _, s in parts], axis=0)  # (Σr, k)
    b = xp.concatenate([b for _, _, b, _ in parts], axis=1)  # (d, Σr)
    return a, b


def svd_update(parts, rank: int) -> tuple:
    """(A' (rank, k), B' (d, rank)): the best rank-`rank` approximation of Σ w_i s_i B_i A_i."""
    delta = weighted_delta(parts)  # (d, k)
    if not 1 <= rank <= min(delta.shape):
        raise ValueError(f"combine svd: rank must be in 1..min(d, k) = {min(delta.shape)}, got {rank}")
    xp = device_of(delta).xp
    u, s, vt = xp.linalg.svd(delta, full_matrices=False)  # (d, m), (m,), (m, k)
    return vt[:rank], u[:, :rank] * s[:rank]  # A' = V_kᵀ (rank, k), B' = U_k S_k (d, rank)


def linear_update(parts) -> tuple:
    """PEFT's "linear" combination (A' (r, k), B' (d, r)); not Σ w_i ΔW_i (see the module docstring)."""
    ranks = {a.shape[0] for _, a, _, _ in parts}
    if len(ranks) != 1:
        raise ValueError(f"combine linear: every adapter must have the same rank, got ranks {sorted(ranks)}")
    a = sum(math.copysign(math.sqrt(abs(w * s)), w * s) * a for w, a, _, s in parts)  # (r, k)
    b = sum(math.sqrt(abs(w * s)) * b for w, _, b, s in parts)  # (d, r)
    return a, b


def relative_error(a, b, parts) -> float:
    """||B' A' - Σ w_i ΔW_i||_F / ||Σ w_i ΔW_i||_F for a combined (A', B') with scaling 1."""
    target = weighted_delta(parts)
    xp = device_of(target).xp
    return (xp.linalg.norm(b @ a - target) / xp.linalg.norm(target)).item()  # a host float


def combine_adapters(model, weights: dict, name: str, method: str = "svd", rank: int | None = None):
    """Store a new adapter `name` combining the model's adapters `weights` = {adapter: w_i}. Returns `model`.

    method: "concat" (exact, rank Σ r_i), "svd" (best rank-`rank`; default rank max r_i),
    or "linear" (PEFT's; equal ranks; not the weighted sum). The new adapter has
    α' = r' (scaling 1) and is stored, not activated: set_adapter(model, name).
    """
    if method not in METHODS:
        raise ValueError(f"combine_adapters: method must be one of {METHODS}, got {method!r}")
    if not weights:
        raise ValueError("combine_adapters: weights is empty; give {adapter name: weight}")
    _layers(model, "combine_adapters")
    unknown = [adapter for adapter in weights if adapter not in list_adapters(model)]
    if unknown:
        raise MissingNameError(f"combine_adapters: no adapter named {unknown}; the model holds {list_adapters(model)}")
    if method != "svd" and rank is not None:
        raise ValueError(f"combine_adapters: rank applies to method='svd' only ({method} sets its own rank)")
    parts_of = {}
    for module, layer in lora_layers(model):
        states = [(w, adapter_state(layer, adapter)) for adapter, w in weights.items()]
        parts = [(float(w), s.lora_A.data, s.lora_B.data, s.scaling) for w, s in states]
        if method == "concat":
            a, b = concat_update(parts)
        elif method == "svd":
            a, b = svd_update(parts, rank if rank is not None else max(s.r for _, s in states))
        else:
            a, b = linear_update(parts)
        parts_of[module] = (a, b, a.shape[0])  # α' = r': scaling 1
    return store_adapter(model, name, parts_of)

