"""Putting LoRA into a GPT and managing it: which Linears to adapt, what trains, merging, counting.

    model = apply_lora(GPT(config), r=4, targets=("q", "v"))   # the paper's GPT-2 setting
    parameter_report(model)["text"]                            # how few parameters train
    merge_lora(model)                                          # W = W0 + (α/r) B A: no extra latency

Targets name the Linear modules of each block (the paper's W_q, W_k, W_v, W_o and the MLP):

    "q", "k", "v", "o"   blocks.{i}.attn.{name}     Linear(C, C)
    "fc"                 blocks.{i}.mlp.fc          Linear(C, 4C)
    "proj"               blocks.{i}.mlp.proj        Linear(4C, C)

Every rule here is decided by module type (LoRALinear, nn.Linear, nn.LayerNorm),
never by matching substrings of parameter names.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

from tinylora import nn
from tinylora.lora.layer import LoRALinear

TARGETS = {"q": "attn", "k": "attn", "v": "attn", "o": "attn", "fc": "mlp", "proj": "mlp"}  # name -> parent module
# not Linear layers of tinylora's GPT: the embeddings are lookups, and the LM head (Hugging Face's `lm_head`,
# often called `head`) is no module at all: logits = x @ wte.weight.T. Named here for a clearer error.
_NOT_TARGETS = ("wte", "wpe", "lm_head", "head")
BIAS_MODES = ("none", "all", "lora_only")


def lora_layers(model):
    """Yield (name, LoRALinear) for every LoRA layer in `model`."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def _check_targets(targets) -> tuple:
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    if not targets:
        raise ValueError(f"apply_lora: targets is empty; choose from {tuple(TARGETS)}")
    for t in targets:
        if t in _NOT_TARGETS:
            raise ValueError(
                f"apply_lora: '{t}' cannot be a LoRA target: the embeddings (wte, wpe) are lookups, not "
                f"Linear layers, and the LM head is tied to wte; choose from {tuple(TARGETS)}"
            )
        if t not in TARGETS:
            raise ValueError(f"apply_lora: unknown target '{t}'; choose from {tuple(TARGETS)}")
    return tuple(dict.fromkeys(targets))  # drop repeats, keep order


def _check_layers(layers, n_layer: int) -> list:
    if layers is None:
        return list(range(n_layer))
    layers = [layers] if isinstance(layers, int) else list(layers)
    for i in layers:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_layer:
            raise ValueError(f"apply_lora: layer index {i!r} is not a block of this model (0..{n_layer - 1})")
    return sorted(set(layers))


def apply_lora(model, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
               dropout: float = 0.0, init: str = "kaiming"):
    """Replace the chosen Linear modules of `model` by LoRALinear, then train only LoRA. Returns `model`.

    Args:
        model:   a GPT (anything with `blocks`, each with `attn` and `mlp` holding the targets).
        r:       rank of every update ΔW = (α/r) B A.
        alpha:   α; None means α = r (scaling 1), see LoRALinear.
        targets: any of "q", "k", "v", "o", "fc", "proj" (default the paper's ("q", "v")).
        layers:  block indices to adapt, or None for all blocks.
        dropout, init: passed to every LoRALinear.

    Afterwards only lora_A and lora_B require grad (`mark_only_lora_as_trainable(model, "none")`);
    call that function again for another bias mode. The model is changed in place.
    """
    targets = _check_targets(targets)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"apply_lora: expected a GPT with .blocks, got {type(model).__name__}")
    for i in _check_layers(layers, len(blocks)):
        for t in targets:
            parent = getattr(blocks[i], TARGETS[t])
            linear = getattr(parent, t)
            if isinstance(linear, LoRALinear):
                raise ValueError(f"apply_lora: blocks.{i}.{TARGETS[t]}.{t} already has LoRA; LoRA is not stacked")
            setattr(parent, t, LoRALinear(linear, r, alpha=alpha, dropout=dropout, init=init))
    mark_only_lora_as_trainable(model, bias="none")
    return model


def _bias_params(model, bias: str) -> list:
    """The biases that train in bias mode `bias` (see mark_only_lora_as_trainable)."""
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")
    if bias == "none":
        return []
    if bias == "lora_only":
        modules = [layer.base for _, layer in lora_layers(model)]
    else:
        modules = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))]
    return [m.bias for m in modules if m.bias is not None]


def mark_only_lora_as_trainable(model, bias: str = "none"):
    """Freeze everything except every LoRALinear's A and B (and biases, per `bias`). Returns `model`.

    bias="none":      only A and B train (the paper's setting);
    bias="all":       also every bias of every nn.Linear and nn.LayerNorm in the model;
    bias="lora_only": also the biases of the Linears that LoRA wraps.
    Note: a trained bias changes the base model, so it must be saved with the adapter.
    """
    train = [p for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]
    if not train:
        raise ValueError("mark_only_lora_as_trainable: the model has no LoRA layers (call apply_lora first)")
    train += _bias_params(model, bias)
    chosen = {id(p) for p in train}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
        if id(p) not in chosen:
            p.grad = None
    return model


def lora_state_dict(model, bias: str = "none") -> "OrderedDict[str, object]":
    """name -> array of every lora_A and lora_B (plus the biases of `bias` mode): what an adapter file holds."""
    keep = {id(p) for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)}
    keep |= {id(p) for p in _bias_params(model, bias)}
    return OrderedDict((name, p.data) for name, p in model.named_parameters() if id(p) in keep)


def merge_lora(model):
    """Merge every LoRA layer: W0 <- W0 + (α/r) B A (idempotent). Returns `model`."""
    for _, layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model):
    """Undo merge_lora on every LoRA layer (idempotent). Returns `model`."""
    for _, layer in lora_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model):
    """Merge every LoRA layer and put its plain base Linear back in its place: W = W0 + (α/r) B A.

    The result is an ordinary GPT (no lora_A / lora_B), what deployment needs:
    inference then costs exactly what the base model costs. Changes `model` in
    place and returns it; merged weights stay frozen as they were.
    """
    for name, layer in list(lora_layers(model)):
        layer.enable()
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.base)
    return model


def disable_lora(model):
    """Make every LoRA layer compute W0 x alone (merged layers are unmerged first). Returns `model`."""
    for _, layer in lora_layers(model):
        layer.disable()
    return model


def enable_lora(model):
    """Bring every LoRA layer's ΔW back. Returns `model`."""
    for _, layer in lora_layers(model):
        layer.enable()
    return model


@contextlib.contextmanager
def lora_disabled(model):
    """`with lora_disabled(model):` runs the base model; afterwards each layer is as before (re-merged if it was)."""
    before = [(layer, layer.enabled, layer.merged) for _, layer in lora_layers(model)]
    disable_lora(model)
    try:
        yield model
    finally:
        for layer, enabled, merged in before:
            layer.enabled = enabled
            if merged:
                layer.merge()


def parameter_report(model) -> dict:
    """Count parameters on the built model: how many in total, how many train, and where.

    Returns a dict:
        total              every parameter (the tied wte counted once, LoRA's A and B included)
        trainable          those with requires_grad
        lora               those in lora_A / lora_B
        percent_trainable  100 * trainable / total
        rows               per module that owns parameters: {"name", "type", "params", "trainable"}
        text               the same as a printable table
    """
    rows = []
    seen = set()
    for name, module in model.named_modules():
        own = [p for p in module._parameters.values() if id(p) not in seen]
        seen.update(id(p) for p in own)
        if own:
            rows.append({
                "name": name or "(root)",
                "type": type(module).__name__,
                "params": sum(p.size for p in own),
                "trainable": sum(p.size for p in own if p.requires_grad),
            })
    total = sum(row["params"] for row in rows)
    trainable = sum(row["trainable"] for row in rows)
    lora = sum(layer.lora_A.size + layer.lora_B.size for _, layer in lora_layers(model))
    percent = 100.0 * trainable / total if total else 0.0
    width = max([len(row["name"]) for row in rows] + [6])
    lines = [f"{'module':<{width}}  {'type':<12}  {'params':>13}  {'trainable':>13}"]
    lines += [f"{row['name']:<{width}}  {row['type']:<12}  {row['params']:>13,}  {row['trainable']:>13,}" for row in rows]
    lines.append(f"trainable: {trainable:,} of {total:,} parameters ({percent:.4f}%), {lora:,} of them in LoRA's A and B")
    return {"total": total, "trainable": trainable, "lora": lora, "percent_trainable": percent,
            "rows": rows, "text": "\n".join(lines)}
