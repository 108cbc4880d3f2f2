"""From a method's name to a model that trains with it, and adapter files for every method.

The one place that maps a name to the method's code, written out as plain `if`s so it reads in order
(used by `tinylora finetune --method`, benchmarks/lora_family.py and the tutorial):

    model = apply_method(model, "dora", {"r": 4, "targets": ["q", "v"]})
    hooks = training_hooks(model, "dora", settings, lr=2e-3, total_steps=200)   # -> train(..., **hooks)
    save_method_adapter(model, "run/adapter", "dora", settings)
    model = load_method_adapter(fresh_base, "run/adapter")

An adapter directory holds adapter.safetensors (every tensor the method trains, named as in
model.named_parameters(), plus trained biases) and adapter_config.json
({"format": "tinylora-method-adapter", "method", "settings", "base_model", "tinylora_version"}).
Loading applies the method again with the saved settings, then copies the tensors in. For PiSSA and
OLoRA this re-derives W_res from the base (the decomposition is deterministic; the sign freedom of
singular vectors cancels in s B0 A0), so the file needs only the trained A and B; `pissa_to_lora`
gives a plain-LoRA adapter for the original base instead (what PEFT loads).
"""

from __future__ import annotations

import dataclasses
import os

from tinylora.engine.backend import move
from tinylora.errors import MissingNameError
from tinylora.io import load_tensors, read_json, require_fields, save_tensors, write_json_atomic
from tinylora.lora.apply import apply_lora, lora_layers
from tinylora.methods.adalora import ORTH_REG_WEIGHT, RankAllocator, apply_adalora, orthogonal_regulariser
from tinylora.methods.dora import apply_dora
from tinylora.methods.glora import apply_glora, glora_layers
from tinylora.methods.loraplus import DEFAULT_RATIO, loraplus_param_groups
from tinylora.methods.pissa import apply_pissa
from tinylora.methods.rslora import apply_rslora

METHODS = ("lora", "rslora", "loraplus", "dora", "pissa", "olora", "adalora", "glora")
FORMAT = "tinylora-method-adapter"
CONFIG_FILE, TENSOR_FILE = "adapter_config.json", "adapter.safetensors"


def apply_method(model, method: str, settings: dict):
    """Apply `method` with `settings` (keyword arguments of its apply function; see below). Returns `model`.

    Common settings: r, alpha, targets, layers, dropout. Extra ones: rslora (dora, pissa, olora);
    ratio (loraplus: used by training_hooks); init_r, target_r, tinit, tfinal, delta_t, orth_reg_weight
    (adalora: all but init_r used by training_hooks); config (glora: the kinds of A..E).
    """
    s = dict(settings)
    common = {k: s[k] for k in ("targets", "layers") if k in s}
    lora_like = {**common, **{k: s[k] for k in ("r", "alpha", "dropout") if k in s}}
    if method == "lora":
        return apply_lora(model, **lora_like)
    if method == "loraplus":
        return apply_lora(model, **lora_like)  # LoRA+ changes the optimizer only
    if method == "rslora":
        return apply_rslora(model, **lora_like)
    if method == "dora":
        return apply_dora(model, **lora_like, rslora=s.get("rslora", False))
    if method in ("pissa", "olora"):
        return apply_pissa(model, **lora_like, init=method, rslora=s.get("rslora", False))
    if method == "adalora":
        return apply_adalora(model, init_r=s.get("init_r", 12), alpha=s.get("alpha"), dropout=s.get("dropout", 0.0),
                             **common)
    if method == "glora":
        return apply_glora(model, r=s.get("r", 4), config=s.get("config"), **common)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def training_hooks(model, method: str, settings: dict, lr: float, total_steps: int, weight_decay: float = 0.0) -> dict:
    """The keyword arguments `tinylora.train.loop.train` needs for `method` ({} for most methods).

    loraplus: param_groups with B's learning rate ratio × lr (settings["ratio"], default 16).
    adalora:  extra_loss γ R(P, Q) (settings["orth_reg_weight"], default 0.5) and after_step = a
              RankAllocator's step (target_r 8, tinit 0, tfinal 0, delta_t 1 unless set); the allocator
              is returned too, under "allocator", for reading the rank allocation afterwards.
    """
    if method == "loraplus":
        return {"param_groups": loraplus_param_groups(model, lr, settings.get("ratio", DEFAULT_RATIO), weight_decay)}
    if method == "adalora":
        allocator = RankAllocator(model, target_r=settings.get("target_r", 8), total_step=total_steps,
                                  tinit=settings.get("tinit", 0), tfinal=settings.get("tfinal", 0),
                                  delta_t=settings.get("delta_t", 1))
        gamma = settings.get("orth_reg_weight", ORTH_REG_WEIGHT)
        if not (isinstance(gamma, (int, float)) and 0 <= gamma < float("inf")):  # False for NaN
            raise ValueError(f"adalora: orth_reg_weight must be a finite number >= 0, got {gamma!r}")
        return {"extra_loss": lambda m: orthogonal_regulariser(m) * gamma, "after_step": allocator.step,
                "allocator": allocator}
    return {}


def _adapter_tensors(model) -> dict:
    """name -> array of every adapter parameter (LoRA-like and GLoRA layers) and every trainable bias."""
    keep = {id(p) for _, layer in lora_layers(model) for p in layer.adapter_parameters()}
    keep |= {id(p) for _, layer in glora_layers(model) for p in layer.adapter_parameters()}
    if not keep:
        raise ValueError("save_method_adapter: the model has no adapter layers")
    tensors = {}
    for name, p in model.named_parameters():
        if id(p) in keep or (p.requires_grad and name.endswith("bias")):
            tensors[name] = p.data
        elif p.requires_grad:
            raise ValueError(f"save_method_adapter: '{name}' trains but is neither an adapter tensor nor a bias")
    return tensors


def save_method_adapter(model, path, method: str, settings: dict) -> None:
    """Write path/adapter.safetensors and path/adapter_config.json (see the module docstring)."""
    from tinylora.version import __version__

    if any(layer.merged for _, layer in [*lora_layers(model), *glora_layers(model)]):
        raise ValueError("save_method_adapter: unmerge first (merged layers hold the update inside W0)")
    tensors = _adapter_tensors(model)
    path = os.fspath(path)
    config = {"format": FORMAT, "tinylora_version": __version__, "method": method,
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
              "base_model": dataclasses.asdict(model.config)}
    save_tensors(os.path.join(path, TENSOR_FILE), tensors, metadata={"format": FORMAT})
    write_json_atomic(os.path.join(path, CONFIG_FILE), config)


def load_method_adapter(model, path):
    """Apply the saved method to `model` (a fresh copy of the same base) and load its tensors. Returns `model`."""
    path = os.fspath(path)
    config_path, tensor_path = os.path.join(path, CONFIG_FILE), os.path.join(path, TENSOR_FILE)
    config = read_json(config_path)
    if config.get("format") != FORMAT:
        raise ValueError(f"{config_path} is not a tinylora method adapter (format {config.get('format')!r}); "
                         "a plain LoRA adapter loads with tinylora.lora.load_adapter")
    require_fields(config, config_path, {"method": str, "settings": dict, "base_model": dict})
    if config["base_model"] != dataclasses.asdict(model.config):
        raise ValueError(f"{config_path}: the adapter was trained on another base model configuration")
    tensors = load_tensors(tensor_path)
    apply_method(model, config["method"], config["settings"])
    params = dict(model.named_parameters())
    expected = set(_adapter_tensors(model))
    unknown = [k for k in tensors if k not in params]
    missing = sorted(expected - set(tensors))
    if unknown or missing:
        raise MissingNameError(f"{tensor_path}: tensors {unknown[:3]} are not in the model, {missing[:3]} are missing")
    for name, value in tensors.items():
        p = params[name]
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"{tensor_path}: '{name}' has shape {tuple(value.shape)}, "
                             f"the model needs {tuple(p.shape)}")
        p.data[...] = move(value.astype(p.dtype, copy=False), p.device)
        if name.endswith("bias") and name not in expected:
            p.requires_grad_(True)
    return model
