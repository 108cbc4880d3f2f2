"""What every baseline does after it has built its parameters: train those, freeze the rest, say so.

    check_plain(model, "bitfit")            a GPT with no other fine-tuning method on it, or an error
    train_only(model, params, "bitfit", {}) requires_grad on `params` alone; records the method

A model carries at most one method. `train_only` records it as
`model.finetune_method = {"method": name, **settings}`, which is what
`save_method` writes and what the next `apply_*` checks: two methods on one model
would freeze each other's parameters (BitFit after an adapter would stop the
adapter training), so the second is refused before anything changes.
"""

from __future__ import annotations

from tinylora.lora.adapter_io import remember_base
from tinylora.lora.apply import lora_layers


def current_method(model) -> str | None:
    """The name of the fine-tuning method on `model` ("lora" for LoRA layers), or None for a plain GPT."""
    recorded = getattr(model, "finetune_method", None)
    if recorded is not None:
        return recorded["method"]
    if any(True for _ in lora_layers(model)):
        return "lora"
    return None


def check_plain(model, method: str) -> None:
    """Raise unless `model` is a GPT without any fine-tuning method applied yet."""
    if not hasattr(model, "blocks") or not hasattr(model, "config"):
        raise TypeError(f"apply {method}: expected a GPT (with .blocks and .config), got {type(model).__name__}")
    other = current_method(model)
    if other is not None:
        raise ValueError(f"apply {method}: the model already has {other}; one method per model "
                         f"(start again from the base model)")
    remember_base(model)  # the base's name and weights' hash, before training replaces some of them


def check_layers(layers, n_layer: int, method: str) -> list:
    """Block indices to use: None means every block; each index must be a block of the model."""
    if layers is None:
        return list(range(n_layer))
    layers = [layers] if isinstance(layers, int) else list(layers)
    if not layers:
        raise ValueError(f"apply {method}: layers is empty; give block indices 0..{n_layer - 1} or None for all")
    for i in layers:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_layer:
            raise ValueError(f"apply {method}: layer index {i!r} is not a block of this model (0..{n_layer - 1})")
    return sorted(set(layers))


def check_int(value, name: str, low: int, high: int, method: str) -> int:
    """`value` as an int in [low, high], or a one-line error naming `name` and the range."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"apply {method}: {name} must be an int in [{low}, {high}], got {value!r}")
    return value


def train_only(model, params, method: str, settings: dict):
    """Make exactly `params` trainable (every other parameter frozen, its .grad dropped); return `model`."""
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
        if id(p) not in chosen:
            p.grad = None
    model.finetune_method = {"method": method, **settings}
    return model
