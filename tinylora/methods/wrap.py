"""The one piece every `apply_<method>` shares: put a LoRA-like layer around each chosen Linear of a GPT.

    wrap_linears(model, lambda linear: DoRALinear(linear, r=8), targets=("q", "v"), layers=None, who="apply_dora")

Targets and layers mean what they mean for `tinylora.lora.apply_lora` (the same checks are used), and
afterwards only each layer's `adapter_parameters()` train (`mark_only_lora_as_trainable(model, "none")`).
"""

from __future__ import annotations

from tinylora.lora.apply import TARGETS, _check_layers, _check_targets, mark_only_lora_as_trainable
from tinylora.lora.layer import LoRALinear


def wrap_linears(model, make, targets=("q", "v"), layers=None, who: str = "wrap_linears"):
    """Replace blocks.{i}.{attn|mlp}.{target} by `make(linear)` for every chosen block and target. Returns `model`."""
    targets = _check_targets(targets)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"{who}: expected a GPT with .blocks, got {type(model).__name__}")
    for i in _check_layers(layers, len(blocks)):
        for t in targets:
            parent = getattr(blocks[i], TARGETS[t])
            linear = getattr(parent, t)
            if isinstance(linear, LoRALinear):
                raise ValueError(f"{who}: blocks.{i}.{TARGETS[t]}.{t} already has an adapter "
                                 f"({type(linear).__name__}); adapters are not stacked")
            setattr(parent, t, make(linear))
    return mark_only_lora_as_trainable(model, bias="none")
