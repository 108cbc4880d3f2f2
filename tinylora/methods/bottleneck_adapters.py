"""Adapter layers: a small bottleneck MLP inserted into every block (the LoRA paper's Adapter^H and Adapter^L).

One adapter, for a branch output h (B, T, d), with bottleneck r:

    Adapter(h) = h + W_up f(W_down z) + b_up,    z = h (Adapter^H)  or  z = LN(h) (Adapter^L)
                 W_down ∈ R^{r×d}, b_down ∈ R^r    Linear(d, r)  `down`, default Linear init
                 W_up   ∈ R^{d×r}, b_up   ∈ R^d    Linear(r, d)  `up`, zero at init, so Adapter(h) = h
                 f = GELU (the model's own nonlinearity)

Where they sit (tinylora/model/gpt.py's Block slots, after the branch's dropout, before its residual add):

    Adapter^H (Houlsby et al. 2019): x = x + Adapter(attn(ln_1(x)));  x = x + Adapter(mlp(ln_2(x)))
    Adapter^L (Lin et al. 2020):     x = x + attn(ln_1(x));           x = x + Adapter_LN(mlp(ln_2(x)))

|Θ| (the LoRA paper, §5.1), with L̂_Adpt adapters and L̂_LN trainable LayerNorms (weight and bias):

    |Θ| = L̂_Adpt · (2 d r + r + d) + 2 · L̂_LN · d
    Adapter^H: L̂_Adpt = 2L, L̂_LN = 0        Adapter^L: L̂_Adpt = L, L̂_LN = L

e.g. GPT-3 (L = 96, d = 12288) Adapter^H r = 8: 192 · (196,608 + 8 + 12,288) = 40,109,568 ("40.1M", Table 4).

The cost the paper points at (§3, Table 1): an adapter is two extra matmuls *in sequence* after each
branch, and unlike LoRA's ΔW it cannot be folded into W0 (there is a nonlinearity between W_down and
W_up), so every token pays for it at inference; with batch 1 and short sequences the extra kernels
and their serial dependence show as +20-30% latency on a GPU.

Reference: the Adapter module of microsoft/LoRA examples/NLU (Linear(d, r), activation, Linear(r, d), + residual;
swish for Houlsby, ReLU for Pfeiffer/Lin). We use GELU for both: smooth like swish, and unlike ReLU it
cannot start dead (a branch output h is small at init, so W_down h + b_down ≈ b_down, and a unit whose
bias starts negative would never get a gradient under ReLU). `tinylora.methods.trainable` freezes
everything else.

    apply_adapter_h(model, r=8)      two adapters per block
    apply_adapter_l(model, r=8)      one adapter with its own LayerNorm after the MLP
"""

from __future__ import annotations

from tinylora import functional as F
from tinylora import nn
from tinylora.methods.trainable import check_int, check_layers, check_plain, train_only


class Adapter(nn.Module):
    """h -> h + up(gelu(down(z))), z = ln(h) if `layer_norm` else h;  (..., d) -> (..., d). Identity at init."""

    def __init__(self, d: int, r: int, layer_norm: bool = False, device=None, dtype=None):
        super().__init__()
        self.ln = nn.LayerNorm(d, device=device, dtype=dtype) if layer_norm else None
        self.down = nn.Linear(d, r, device=device, dtype=dtype)  # W_down (r, d), b_down (r,)
        self.up = nn.Linear(r, d, device=device, dtype=dtype)  # W_up (d, r), b_up (d,)
        nn.init.zeros_(self.up.weight)  # the adapted model starts as the base model
        nn.init.zeros_(self.up.bias)

    def forward(self, h):
        z = self.ln(h) if self.ln is not None else h  # (..., d)
        return h + self.up(F.gelu(self.down(z)))  # (..., d) -> (..., r) -> (..., d)


def _apply(model, r: int, layers, method: str, slots: tuple, layer_norm: bool):
    check_plain(model, method)
    d = model.config.n_embd
    check_int(r, "the adapter bottleneck r", 1, d, method)
    layers = check_layers(layers, len(model.blocks), method)
    weight = model.wte.weight
    trainable = []
    for i in layers:
        for slot in slots:
            adapter = Adapter(d, r, layer_norm=layer_norm, device=weight.device, dtype=weight.dtype)
            adapter.train(model.training)
            setattr(model.blocks[i], slot, adapter)
            trainable += adapter.parameters()
    all_blocks = layers == list(range(len(model.blocks)))
    return train_only(model, trainable, method, {"r": r, "layers": None if all_blocks else layers})


def apply_adapter_h(model, r: int = 8, layers=None):
    """Adapter^H: an adapter after attention and one after the MLP in each block of `layers` (None: all)."""
    return _apply(model, r, layers, "adapter-h", ("after_attn", "after_mlp"), layer_norm=False)


def apply_adapter_l(model, r: int = 8, layers=None):
    """Adapter^L: one adapter with a trainable LayerNorm after the MLP in each block of `layers` (None: all)."""
    return _apply(model, r, layers, "adapter-l", ("after_mlp",), layer_norm=True)


def adapter_count(n_adapters: int, n_layer_norms: int, d: int, r: int) -> int:
    """The paper's |Θ| = L̂_Adpt · (2 d r + r + d) + 2 · L̂_LN · d, as plain arithmetic."""
    return n_adapters * (2 * d * r + r + d) + 2 * n_layer_norms * d
