"""Adapter files: save the few trained numbers of a LoRA model, load them onto a fresh copy of the base.

A LoRA fine-tune changes only A and B (r(d + k) numbers per adapted d×k
weight, and the biases if `mark_only_lora_as_trainable(bias=...)` let them
train), so that is all an adapter directory holds:

    adapter.safetensors     blocks.{i}.attn.q.lora_A      (r, k)   every LoRA layer's A and B,
                            blocks.{i}.attn.q.lora_B      (d, r)   named as in model.named_parameters(),
                            blocks.{i}.attn.q.base.bias   (d,)     plus every bias that trains
    adapter_config.json     {"r", "alpha", "targets", "layers", "dropout", "init", "bias",
                             "modules": {name: {"r", "alpha", "dropout", "init"}},
                             "base_model": {GPTConfig fields}, "tinylora_version", "format"}

`modules` lists every LoRA layer with its own settings, so a model whose layers
differ (say q and v with r = 8, fc with r = 4) round-trips exactly; the
top-level r, alpha, dropout and init summarise them (null where layers differ),
and targets / layers say where LoRA sits (layers null: every block).

    save_adapter(model, "run/adapter")
    model = load_adapter(GPT.from_pretrained("gpt2"), "run/adapter")
"""

from __future__ import annotations

import dataclasses
import os
import re

from tinylora.engine.backend import move
from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora.apply import _bias_params, apply_lora, lora_layers

FORMAT = "tinylora-lora-adapter"
CONFIG_FILE, TENSOR_FILE = "adapter_config.json", "adapter.safetensors"
_LORA_NAME = re.compile(r"blocks\.(\d+)\.(?:attn|mlp)\.(\w+)")  # blocks.{i}.attn.q -> (i, "q")
_SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")


def _module_settings(layer) -> dict:
    return {"r": layer.r, "alpha": layer.alpha, "dropout": layer.lora_dropout.p, "init": layer.init}


def _common(modules: dict, key: str):
    """The value every module shares for `key`, or None where they differ."""
    values = {m[key] for m in modules.values()}
    return values.pop() if len(values) == 1 else None


def _bias_mode(model, trainable: set) -> str:
    """Name the set of trainable biases as a `mark_only_lora_as_trainable` bias mode ("custom" if none fits)."""
    for mode in ("none", "lora_only", "all"):
        if {id(p) for p in _bias_params(model, mode)} == trainable:
            return mode
    return "custom"


def adapter_config(model) -> dict:
    """The adapter_config.json content describing `model`'s LoRA layers."""
    from tinylora import __version__  # here, not at the top: tinylora/__init__.py imports this package

    modules = {name: _module_settings(layer) for name, layer in lora_layers(model)}
    if not modules:
        raise ValueError("save_adapter: the model has no LoRA layers (call apply_lora first)")
    places = []
    for name in modules:
        match = _LORA_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"save_adapter: LoRA layer '{name}' is not at blocks.{{i}}.attn/mlp.{{target}}")
        places.append((int(match.group(1)), match.group(2)))
    layers = sorted({i for i, _ in places})
    trainable_biases = {id(p) for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")}
    return {
        "format": FORMAT,
        "tinylora_version": __version__,
        "r": _common(modules, "r"),
        "alpha": _common(modules, "alpha"),
        "targets": list(dict.fromkeys(t for _, t in places)),
        "layers": None if layers == list(range(len(model.blocks))) else layers,
        "dropout": _common(modules, "dropout"),
        "init": _common(modules, "init"),
        "bias": _bias_mode(model, trainable_biases),
        "modules": modules,
        "base_model": dataclasses.asdict(model.config),
    }


def save_adapter(model, path) -> None:
    """Write `path`/adapter.safetensors (A, B and trainable biases) and `path`/adapter_config.json.

    Refuses a model in which some other parameter trains (a LayerNorm weight,
    the embedding): an adapter file cannot hold it, and dropping it silently
    would lose part of the fine-tune.
    """
    config = adapter_config(model)
    tensors = {}
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")) or (p.requires_grad and name.endswith("bias")):
            tensors[name] = p.data
        elif p.requires_grad:
            raise ValueError(f"save_adapter: '{name}' is trainable but is neither LoRA's A, B nor a bias; an "
                             "adapter cannot hold it (freeze it, or save a full checkpoint instead)")
    path = os.fspath(path)
    save_tensors(os.path.join(path, TENSOR_FILE), tensors, metadata={"format": FORMAT})
    write_json_atomic(os.path.join(path, CONFIG_FILE), config)


# ------------------------------------------------------------------ loading
def _check_base(model, config: dict, source: str) -> None:
    if config.get("format") != FORMAT:
        hint = " (a PEFT adapter? use import_peft)" if "peft_type" in config else ""
        raise ValueError(f"{source} is not a tinylora adapter config: format is {config.get('format')!r}{hint}")
    saved, own = config.get("base_model") or {}, dataclasses.asdict(model.config)
    differ = {k: (saved.get(k), own[k]) for k in _SHAPE_FIELDS if saved.get(k) != own[k]}
    if differ:
        detail = ", ".join(f"{k}: adapter {a} vs model {b}" for k, (a, b) in differ.items())
        raise ValueError(f"{source}: the adapter was trained on a different base model ({detail})")


def _attach(model, modules: dict, source: str) -> None:
    """Give the model the file's LoRA layers, or check that the ones it has match them."""
    existing = {name: layer for name, layer in lora_layers(model)}
    if not existing:
        for name, s in modules.items():
            i, target = _LORA_NAME.fullmatch(name).groups()
            apply_lora(model, r=s["r"], alpha=s["alpha"], targets=(target,), layers=[int(i)],
                       dropout=s["dropout"], init=s["init"])
        return
    if set(existing) != set(modules):
        raise ValueError(f"{source}: the model already has LoRA on {sorted(existing)}, but the adapter "
                         f"is for {sorted(modules)}; load it into a model without LoRA")
    for name, layer in existing.items():
        if (layer.r, layer.alpha) != (modules[name]["r"], modules[name]["alpha"]):
            raise ValueError(f"{source}: '{name}' has r={layer.r}, alpha={layer.alpha} in the model but "
                             f"r={modules[name]['r']}, alpha={modules[name]['alpha']} in the adapter")
        if layer.merged:
            raise ValueError(f"{source}: '{name}' is merged; call unmerge_lora(model) before loading new A and B")


def _check_tensors(model, modules: dict, tensors: dict, source: str) -> None:
    """Check every tensor of the file against the model *before* changing it: names and shapes."""
    own = dict(model.named_modules())
    expected = {}
    for name, s in modules.items():
        layer = own.get(name)
        linear = getattr(layer, "base", layer)  # a LoRALinear's frozen Linear, or the Linear itself
        if not hasattr(linear, "in_features"):
            raise ValueError(f"{source}: the adapter adapts '{name}', which is not a Linear layer of this model")
        expected[f"{name}.lora_A"] = (s["r"], linear.in_features)  # A (r, k)
        expected[f"{name}.lora_B"] = (linear.out_features, s["r"])  # B (d, r)
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise KeyError(f"{source} lacks {missing[:4]} (the config lists {len(modules)} LoRA layers)")
    biases = {n.replace(".base.", "."): p.shape for n, p in model.named_parameters() if n.endswith("bias")}
    for key, value in tensors.items():
        shape = expected.get(key) or biases.get(key.replace(".base.", "."))
        if shape is None:
            raise KeyError(f"{source} holds '{key}', which is neither a LoRA tensor of the config "
                           "nor a bias of the model")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"{source}: '{key}' has shape {tuple(value.shape)} in the file "
                             f"but the model needs {tuple(shape)}")


def load_adapter(model, path):
    """Load an adapter saved by `save_adapter` into `model` (a GPT of the same base config). Returns `model`.

    If the model has no LoRA yet, LoRA is applied first, with the saved
    settings of every layer, and the biases saved with the adapter are made
    trainable again (as they were). If it has LoRA, its layers must be the
    adapter's. Everything is checked before the model is changed; errors
    name what differs (base config, a missing tensor, a shape).
    """
    path = os.fspath(path)
    config_path, tensor_path = os.path.join(path, CONFIG_FILE), os.path.join(path, TENSOR_FILE)
    config = read_json(config_path)
    _check_base(model, config, config_path)
    tensors = load_tensors(tensor_path)
    _check_tensors(model, config["modules"], tensors, tensor_path)
    fresh = not any(True for _ in lora_layers(model))
    _attach(model, config["modules"], config_path)
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        p = params[name]
        p.data[...] = move(value.astype(p.dtype, copy=False), p.device)
        if fresh and name.endswith("bias"):
            p.requires_grad_(True)  # it trained with the adapter: let it go on training
    return model
