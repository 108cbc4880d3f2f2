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
from tinylora.quant.nf4 import NF4Tensor

TARGETS = {"q": "attn", "k": "attn", "v": "attn", "o": "attn", "fc": "mlp", "proj": "mlp"}  # name -> parent module
_NOT_LINEAR = ("wte", "wpe", "lm_head", "head")  # names users try: embeddings, and the LM head (tied to wte)
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
        if t in _NOT_LINEAR:
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
               dropout: float = 0.0, init: str = "kaiming", rslora: bool = False):
    """Replace the chosen Linear modules of `model` by LoRALinear, then train only LoRA. Returns `model`.

    Args:
        model:   a GPT (anything with `blocks`, each with `attn` and `mlp` holding the targets).
        r:       rank of every update ΔW = (α/r) B A.
        alpha:   α; None means α = r (scaling 1), see LoRALinear.
        targets: any of "q", "k", "v", "o", "fc", "proj" (default the paper's ("q", "v")).
        layers:  block indices to adapt, or None for all blocks.
        dropout, init, rslora: passed to every LoRALinear (rslora: s = α/√r, tinylora/methods/rslora.py).

    Afterwards only lora_A and lora_B require grad (`mark_only_lora_as_trainable(model, "none")`);
    call that function again for another bias mode. The model is changed in place, all or
    nothing: if any layer is refused (a rank too large for it, a layer that has LoRA already),
    the model is left exactly as it was.
    """
    targets = _check_targets(targets)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"apply_lora: expected a GPT with .blocks, got {type(model).__name__}")
    other = getattr(model, "finetune_method", None)  # a baseline (tinylora/methods/trainable.py) would stop training
    if other is not None:
        raise ValueError(f"apply_lora: the model already has {other['method']}; one method per model "
                         "(start again from the base model)")
    places = [(i, t) for i in _check_layers(layers, len(blocks)) for t in targets]
    for i, t in places:
        if isinstance(getattr(getattr(blocks[i], TARGETS[t]), t), LoRALinear):
            raise ValueError(f"apply_lora: blocks.{i}.{TARGETS[t]}.{t} already has LoRA; LoRA is not stacked")
    with all_or_nothing(model):
        for i, t in places:
            parent = getattr(blocks[i], TARGETS[t])
            setattr(parent, t, LoRALinear(getattr(parent, t), r, alpha=alpha, dropout=dropout, init=init,
                                              rslora=rslora))
        mark_only_lora_as_trainable(model, bias="none")
    return model


@contextlib.contextmanager
def all_or_nothing(model, overwritten=()):
    """`with all_or_nothing(model, params):` if the body raises, undo what it did to `model`, then re-raise.

    Undone: every change to the module tree (layers the body wrapped or replaced, attributes it set, such
    as a method's record), every parameter's array (rebound, not copied: code that changes a frozen
    weight, as PiSSA's W_res = W0 - s B A, must assign a new array), requires_grad and .grad, and the
    values of the Parameters in `overwritten` (copied before the body runs: pass only those it writes in
    place).
    """
    modules = [(m, dict(m.__dict__), dict(m._parameters), dict(m._modules)) for m in model.modules()]
    params = [(p, p.data, p.requires_grad, p.grad) for p in model.parameters()]
    saved = [(p, p.data.copy()) for p in overwritten]
    try:
        yield model
    except BaseException:
        for module, attributes, own_params, children in modules:
            module.__dict__.clear()
            module.__dict__.update(attributes)
            module._parameters.clear()  # the dicts themselves were in `attributes`: refill them
            module._parameters.update(own_params)
            module._modules.clear()
            module._modules.update(children)
        for p, data, requires_grad, grad in params:
            p.data = data
            p.requires_grad_(requires_grad)
            p.grad = grad
        for p, data in saved:
            p.data[...] = data
        raise


def _replace(model, name: str, module) -> None:
    """Put `module` at dotted path `name` of `model`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def base_named_parameters(model):
    """Yield (name, Parameter) of the base model inside `model`: every parameter except LoRA's own.

    Names are those the model has without LoRA ("blocks.0.attn.q.weight", not
    "blocks.0.attn.q.base.weight"): a LoRALinear is asked for its `base` by type,
    and the parameters a LoRA layer owns itself (A, B, and whatever a variant adds)
    are skipped. With merged layers, a base weight holds W0 + ΔW.
    """
    lora_at = {id(layer.base): name for name, layer in lora_layers(model)}  # base Linear -> the LoRA layer's name
    seen = set()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            continue  # its own parameters are LoRA's; its base is visited as a child
        name = lora_at.get(id(module), name)
        for key, p in module._parameters.items():
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{name}.{key}" if name else key), p


def lora_parameter_count(config, r: int, targets=("q", "v"), layers=None) -> int:
    """|Θ| = Σ r (d + k) over the adapted Linears of a GPT with `config`, without building it."""
    c = config.n_embd
    sizes = {"q": (c, c), "k": (c, c), "v": (c, c), "o": (c, c), "fc": (4 * c, c), "proj": (c, 4 * c)}  # (d, k)
    n_blocks = len(_check_layers(layers, config.n_layer))
    return n_blocks * sum(r * sum(sizes[t]) for t in _check_targets(targets))


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

    "A and B" means each layer's `adapter_parameters()`: a method in tinylora.methods may add its own
    (DoRA's magnitude m, AdaLoRA's Λ), and those train too.

    bias="none":      only A and B train (the paper's setting);
    bias="all":       also every bias of every nn.Linear and nn.LayerNorm in the model;
    bias="lora_only": also the biases of the Linears that LoRA wraps.
    Note: a trained bias changes the base model, so it must be saved with the adapter.
    """
    train = [p for _, layer in lora_layers(model) for p in layer.adapter_parameters()]
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
    keep = {id(p) for _, layer in lora_layers(model) for p in layer.adapter_parameters()}
    keep |= {id(p) for p in _bias_params(model, bias)}
    return OrderedDict((name, p.data) for name, p in model.named_parameters() if id(p) in keep)


def _check_mergeable(model) -> list:
    """Every LoRA layer, after checking that each ΔW is finite (naming the first that is not)."""
    layers = list(lora_layers(model))
    for name, layer in layers:
        if not layer.merged:
            delta = layer.delta_weight()
            if not layer.base.weight.device.xp.isfinite(delta).all().item():
                raise ValueError(f"merge: LoRA layer '{name}' has a non-finite ΔW = (α/r) B A (NaN or inf in "
                                 "lora_A or lora_B); nothing was merged and every W0 is unchanged")
    return layers


def _merge(name: str, layer) -> None:
    try:
        layer.merge()  # safe: W0 + ΔW is computed aside and checked before W0 changes
    except ValueError as err:
        raise ValueError(f"merge: LoRA layer '{name}': {err}") from None


def merge_lora(model):
    """Merge every LoRA layer: W0 <- W0 + (α/r) B A (idempotent). Returns `model`.

    Safe, as PEFT's `safe_merge`: every ΔW is checked for NaN and inf before
    any W0 changes, and a refused merge names the layer.
    """
    for name, layer in _check_mergeable(model):
        _merge(name, layer)
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
    place and returns it; merged weights stay frozen as they were. Safe as
    `merge_lora`: a non-finite ΔW is refused, naming the layer, before anything changes.
    """
    for name, layer in _check_mergeable(model):
        layer.enable()
        _merge(name, layer)
        _replace(model, name, layer.base)
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

    A weight stored in 4 bits (an NF4Tensor, as QLoRA's NF4Linear keeps W0) is not a Parameter, so
    `model.parameters()` does not yield it; it is counted here all the same: it is part of the model.

    Returns a dict:
        total              every parameter (the tied wte counted once, LoRA's A and B and 4-bit weights included)
        trainable          those with requires_grad
        lora               those in lora_A / lora_B
        quantized          those stored in 4 bits (NF4), frozen
        percent_trainable  100 * trainable / total
        rows               per module that owns parameters: {"name", "type", "params", "trainable", "quantized"}
        text               the same as a printable table
    """
    rows = []
    seen = set()
    for name, module in model.named_modules():
        own = [p for p in module._parameters.values() if id(p) not in seen]
        seen.update(id(p) for p in own)
        quantized = [q for q in vars(module).values() if isinstance(q, NF4Tensor) and id(q) not in seen]
        seen.update(id(q) for q in quantized)
        if own or quantized:
            n_quantized = sum(q.numel for q in quantized)
            rows.append({
                "name": name or "(root)",
                "type": type(module).__name__,
                "params": sum(p.size for p in own) + n_quantized,
                "trainable": sum(p.size for p in own if p.requires_grad),
                "quantized": n_quantized,
            })
    total = sum(row["params"] for row in rows)
    trainable = sum(row["trainable"] for row in rows)
    quantized = sum(row["quantized"] for row in rows)
    lora = sum(layer.lora_A.size + layer.lora_B.size for _, layer in lora_layers(model))
    lora_frozen = sum(p.size for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B) if not p.requires_grad)
    percent = 100.0 * trainable / total if total else 0.0
    width = max([len(row["name"]) for row in rows] + [6])
    lines = [f"{'module':<{width}}  {'type':<12}  {'params':>13}  {'trainable':>13}"]
    lines += [f"{row['name']:<{width}}  {row['type']:<12}  {row['params']:>13,}  {row['trainable']:>13,}" for row in rows]
    lines.append(count_line(trainable, total, lora, quantized, lora_frozen))
    return {"total": total, "trainable": trainable, "lora": lora, "quantized": quantized, "percent_trainable": percent,
            "rows": rows, "text": "\n".join(lines)}


def count_line(trainable: int, total: int, lora: int, quantized: int = 0, lora_frozen: int = 0) -> str:
    """The one-line summary of `parameter_report` (also what `tinylora info` and `finetune` print)."""
    percent = 100.0 * trainable / total if total else 0.0
    line = f"trainable: {trainable:,} of {total:,} parameters ({percent:.4f}%); LoRA's A and B hold {lora:,}"
    if lora_frozen:  # LoRA-FA: A is frozen
        line += f" ({lora_frozen:,} of them frozen)"
    return line + (f"; of the {total:,}, {quantized:,} are stored in 4 bits (NF4)" if quantized else "")
