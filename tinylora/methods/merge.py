"""Fold whatever method a model carries into its weights: the plain GPT `tinylora merge` writes.

    LoRA, rsLoRA, LoRA+, LoRA-FA, DoRA, PiSSA, OLoRA, AdaLoRA   W = W0 + ΔW (merge_and_unload)
    QLoRA                                                      W = dequant(W0^NF4) + ΔW (merge_qlora: a float model)
    GLoRA                                                      W = W0 + W0 ⊙ A + B, b = ... (merge_and_unload_glora)
    FT^Top2, BitFit                                            the trained weights already are the model's

Prefix tuning and bottleneck adapters add computation that no weight can absorb: refused (the reason is
their row's `merge` in tinylora/methods/table.py).
"""

from __future__ import annotations

from tinylora.lora.apply import merge_and_unload
from tinylora.methods.glora import merge_and_unload_glora
from tinylora.methods.qlora import merge_qlora
from tinylora.methods.table import method_row


def merge_method(model, method: str):
    """(plain GPT, note): `model` with `method` folded into its weights; note says what happened beyond that."""
    row = method_row(method)
    if row.merge is not None:
        raise ValueError(f"{method} cannot be merged: {row.merge}; use it unmerged (generate --adapter)")
    note = ""
    if getattr(model, "quantization", None) is not None:
        model = merge_qlora(model)
        note = " (the NF4 base was dequantized: the merged model is float, W = dequant(W0) + ΔW)"
    model = merge_and_unload(model)  # safe: refuses a non-finite ΔW, naming the layer, before W0 changes
    model = merge_and_unload_glora(model)
    if getattr(model, "finetune_method", None) is not None:
        del model.finetune_method  # FT^Top2 / BitFit: the trained weights are the model's now
    return model, note
