"""FT and FT^Top2: fine-tune every weight, or only the top blocks (the LoRA paper's first baselines, §5.1).

    FT:        every parameter Φ0 of the model trains.                     |Θ| = |Φ0|
    FT^Top-n:  only the last n transformer blocks train (Li & Liang 2021's "FT-top2" for GPT-2, n = 2);
               the embeddings, the lower blocks and the final LayerNorm ln_f stay frozen.
               |Θ| = n · (12 d² + 13 d)     per block: W_q, W_k, W_v, W_o (4d² + 4d), W_fc (4d² + 4d),
                                            W_proj (4d² + d), ln_1 and ln_2 (4d), with biases (GPT-2)

Nothing is added to the model, so inference costs exactly what the base model costs,
and the trained weights simply replace the base's (`tinylora merge` writes them as a plain model).
FT^Top-n stores n/L of the blocks per task instead of the whole model.

    apply_full_ft(model)           everything trains
    apply_top_layers(model, n=2)   FT^Top2
"""

from __future__ import annotations

from tinylora.methods.trainable import check_int, check_plain, train_only


def apply_full_ft(model):
    """FT: every parameter of `model` trains (the tied wte/LM head once). Returns `model`."""
    check_plain(model, "full")
    return train_only(model, model.parameters(), "full", {})


def apply_top_layers(model, n: int = 2):
    """FT^Top-n: only the parameters of the last `n` blocks train (1 <= n <= n_layer). Returns `model`."""
    check_plain(model, "top")
    check_int(n, "n (the number of top blocks)", 1, len(model.blocks), "top")
    top = [p for block in list(model.blocks)[-n:] for p in block.parameters()]
    return train_only(model, top, "top", {"n": n})
