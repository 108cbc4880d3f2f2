"""LoRA+: a larger learning rate for B than for A (Hayou, Ghosh, Yu 2024, arXiv 2402.12354).

    η_B = λ · η_A,   λ = 16 by default (the paper's rule of thumb 2⁴; PEFT's docs use 16)

The model is unchanged (LoRA's h = W0 x + s B A x, |Θ| = r(d + k)); only the optimizer differs. The
paper's argument: at large width, A and B with one learning rate cannot both learn efficiently; B, the
zero-initialised output-side factor, needs the larger step. Done here with optimizer parameter groups:

    group "A":         every trainable matrix that is not a B, and AdaLoRA's Λ   lr = η,    weight_decay = wd
    group "B":         every LoRA layer's B, and 1-D tensors that decay          lr = λ η,  weight_decay = wd
    group "B_no_decay": biases and LayerNorm weights                             lr = λ η,  weight_decay = 0

Following PEFT's `create_loraplus_optimizer`, every other trainable 1-D tensor goes with B (biases, LayerNorm
weights, DoRA's magnitude m): PEFT sends `"lora_B" in name or param.ndim == 1` to the B groups. AdaLoRA's
Λ is 1-D here but (r, 1) in PEFT, so PEFT gives it A's group: so does this. Here B and Λ are found by
identity (each layer's `lora_B`, `lora_E`), never by matching names. Weight decay is `weight_decay`
(PEFT's `loraplus_weight_decay`, default 0.0), applied to every tensor of a decaying group, 1-D ones
included (`decay_1d=True`, as torch's AdamW under PEFT: tinylora's AdamW otherwise skips vectors).
Because the groups are plain optimizer groups, LoRA+ composes with any LoRA-like method (DoRA, rsLoRA,
PiSSA, OLoRA, AdaLoRA, LoRA + BitFit) and with LRScheduler, which keeps the groups' ratio. The official code has no default λ (its README uses 20;
its GPT-2 scripts 10); 16 follows the paper's text and PEFT's docs.
"""

from __future__ import annotations

from tinylora import nn
from tinylora.lora.apply import lora_layers
from tinylora.optim import AdamW

DEFAULT_RATIO = 16.0


def loraplus_param_groups(model, lr: float, ratio: float = DEFAULT_RATIO, weight_decay: float = 0.0) -> list:
    """The three parameter groups above, as [{"params": [(name, p), ...], "lr", "weight_decay", "decay_1d"}, ...].

    Empty groups are left out. Raises if the model has no LoRA layer or λ is not positive.
    """
    if not ratio > 0:
        raise ValueError(f"LoRA+: the learning-rate ratio λ must be positive, got {ratio!r}")
    b_ids = {id(layer.lora_B) for _, layer in lora_layers(model)}
    lambda_ids = {id(layer.lora_E) for _, layer in lora_layers(model) if hasattr(layer, "lora_E")}  # AdaLoRA's Λ
    if not b_ids:
        raise ValueError("LoRA+: the model has no LoRA-like layer, so there is no B to give a larger learning rate")
    no_decay = {id(m.bias) for m in model.modules() if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None}
    no_decay |= {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    groups = {"A": [], "B": [], "B_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in lambda_ids:
            groups["A"].append((name, p))
        elif id(p) in b_ids or (p.ndim == 1 and id(p) not in no_decay):
            groups["B"].append((name, p))
        elif p.ndim == 1:
            groups["B_no_decay"].append((name, p))
        else:
            groups["A"].append((name, p))
    settings = {"A": (lr, weight_decay), "B": (lr * ratio, weight_decay), "B_no_decay": (lr * ratio, 0.0)}
    return [{"params": params, "lr": settings[key][0], "weight_decay": settings[key][1], "decay_1d": True}
            for key, params in groups.items() if params]


def loraplus_optimizer(model, lr: float, ratio: float = DEFAULT_RATIO, weight_decay: float = 0.0,
                       optimizer_class=AdamW, **kwargs):
    """`optimizer_class` (AdamW by default) over `loraplus_param_groups(model, lr, ratio, weight_decay)`."""
    return optimizer_class(loraplus_param_groups(model, lr, ratio, weight_decay), lr=lr, **kwargs)
