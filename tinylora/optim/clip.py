"""Gradient clipping by the global L2 norm (as torch.nn.utils.clip_grad_norm_).

All gradients are treated as one long vector g = (g_1, ..., g_n):

    ‖g‖ = √(Σ_i Σ_j g_ij²)                 over every parameter i with a gradient
    c   = max_norm / (‖g‖ + ε)
    g_i ← c · g_i   for every i, when c < 1

Scaling every gradient by the same c keeps the update's direction and only
shortens it, unlike clipping each element or each parameter separately.
"""

from __future__ import annotations

import math

from tinylora.engine.tensor import Tensor


def clip_grad_norm_(parameters, max_norm: float, eps: float = 1e-6) -> float:
    """Scale the gradients of `parameters` in place so their global L2 norm is at most `max_norm`.

    `parameters` is a tensor or an iterable of tensors; those without a
    gradient are skipped. Returns the norm before clipping, as a Python float.
    If it is not finite (inf or nan) the gradients are left untouched, so the
    caller can see it and skip the step.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []  # (array module, gradient array) per parameter with a gradient
    for p in parameters:
        if not isinstance(p, Tensor):
            raise TypeError(f"clip_grad_norm_: expected tensors, got {type(p).__name__}")
        if p.grad is not None:
            grads.append((p.device.xp, p.grad.data))
    squared = 0.0
    for xp, g in grads:
        flat = g.reshape(-1)  # a view for a contiguous gradient
        squared += xp.vdot(flat, flat).item()  # Σ_j g_ij², summed over parameters in a Python float
    total = math.sqrt(squared)
    if not math.isfinite(total):
        return total
    coef = max_norm / (total + eps)
    if coef < 1.0:
        for _, g in grads:
            g *= coef  # in place: p.grad now holds the clipped gradient
    return total
