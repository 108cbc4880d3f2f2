"""The one piece every `apply_<method>` shares: put a LoRA-like layer around each chosen Linear of a GPT.

    wrap_linears(model, lambda linear: DoRALinear(linear, r=8), targets=("q", "v"), layers=None, who="apply_dora")

Targets and layers mean what they mean for `tinylora.lora.apply_lora` (the same checks are used), and
afterwards only each layer's `adapter_parameters()` train (`mark_only_lora_as_trainable(model, "none")`).
All or nothing, as apply_lora: if one layer is refused (a zero row for DoRA, a rank too large), the
model is left exactly as it was, the layers already wrapped and PiSSA's residuals included.
"""

from __future__ import annotations

from tinylora.lora.adapter_io import remember_base
from tinylora.lora.apply import TARGETS, _check_layers, _check_targets, all_or_nothing
from tinylora.lora.apply import mark_only_lora_as_trainable
from tinylora.lora.layer import LoRALinear


def wrap_linears(model, make, targets=("q", "v"), layers=None, who: str = "wrap_linears"):
    """Replace blocks.{i}.{attn|mlp}.{target} by `make(linear)` for every chosen block and target. Returns `model`."""
    targets = _check_targets(targets)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"{who}: expected a GPT with .blocks, got {type(model).__name__}")
    places = [(i, t) for i in _check_layers(layers, len(blocks)) for t in targets]
    for i, t in places:
        linear = getattr(getattr(blocks[i], TARGETS[t]), t)
        if isinstance(linear, LoRALinear) or hasattr(linear, "base"):  # a LoRA-like or a GLoRA layer
            raise ValueError(f"{who}: blocks.{i}.{TARGETS[t]}.{t} already has an adapter "
                             f"({type(linear).__name__}); adapters are not stacked")
    with all_or_nothing(model):
        remember_base(model)  # PiSSA replaces W0 by a residual: record the base's identity first
        for i, t in places:
            parent = getattr(blocks[i], TARGETS[t])
            setattr(parent, t, make(getattr(parent, t)))
        mark_only_lora_as_trainable(model, bias="none")
    return model
