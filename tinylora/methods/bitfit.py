"""BitFit: train only the bias vectors (Ben Zaken et al. 2021; the LoRA paper's "Bias-only" baseline, §5.1).

    h = W0 x + b        W0 frozen, b trainable, for every Linear (W_q, W_k, W_v, W_o, W_fc, W_proj)
    LN(x) = γ ⊙ x̂ + β    γ frozen, β trainable, for ln_1, ln_2 of every block and the final ln_f

|Θ| = the number of bias scalars. For a GPT-2-style model with L blocks of width d:

    |Θ| = L · (3d + d + 4d + d + 2d) + d = L · 11d + d
          q,k,v  o   fc   proj ln_1,ln_2    ln_f

GPT-2 small (L = 12, d = 768): 12 · 8,448 + 768 = 102,144 (a test checks it on the built model).
Nothing is added, so inference costs what the base costs; the trained biases replace the base's.
The paper's GPT-3 learning rate for BitFit is 1.6e-3 (Table 12), far above FT's 5e-6.
"""

from __future__ import annotations

from tinylora import nn
from tinylora.methods.trainable import check_plain, train_only


def bias_parameters(model) -> list:
    """Every bias of every nn.Linear and nn.LayerNorm of `model`, found by module type (not by name)."""
    modules = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))]
    return [m.bias for m in modules if m.bias is not None]


def apply_bitfit(model):
    """Train only the biases (Linear and LayerNorm, ln_f included); freeze everything else. Returns `model`."""
    check_plain(model, "bitfit")
    return train_only(model, bias_parameters(model), "bitfit", {})  # LayerNorms always have β
