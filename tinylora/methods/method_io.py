"""Saving a baseline's trained numbers and putting them back on a fresh copy of the base model.

A method folder holds only what trained (like a LoRA adapter folder, tinylora/lora/adapter_io.py):

    method.safetensors     every trainable parameter, named as in model.named_parameters()
                           (blocks.{i}.after_mlp.up.weight, virtual_tokens.weight, blocks.{i}.attn.q.bias, ...)
    method_config.json     {"format": "tinylora-method", "method": "adapter-h", "settings": {"r": 8, "layers": null},
                            "base_model": {GPTConfig fields}, "tinylora_version"}

Loading calls the method's apply function with the saved settings (which builds its modules and
freezes the rest), then copies the saved tensors in, after checking that their names and shapes
are exactly the trainable parameters the method built.

    save_method(model, "run/method");  load_method(base_model, "run/method")
"""

from __future__ import annotations

import dataclasses
import os

from tinylora.engine.backend import move
from tinylora.errors import MissingNameError
from tinylora.io import load_tensors, read_json, require_fields, save_tensors, write_json_atomic
from tinylora.methods.bottleneck_adapters import apply_adapter_h, apply_adapter_l
from tinylora.methods.bitfit import apply_bitfit
from tinylora.methods.full_ft import apply_full_ft, apply_top_layers
from tinylora.methods.prefix import apply_prefix_embed, apply_prefix_layer

FORMAT = "tinylora-method"
CONFIG_FILE, TENSOR_FILE = "method_config.json", "method.safetensors"
_SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")

# the method names of `model.finetune_method` and of `tinylora finetune --method`, and how to apply each
APPLY = {
    "full": apply_full_ft,
    "top": apply_top_layers,
    "bitfit": apply_bitfit,
    "prefix-embed": apply_prefix_embed,
    "prefix-layer": apply_prefix_layer,
    "adapter-h": apply_adapter_h,
    "adapter-l": apply_adapter_l,
}
MERGEABLE = ("full", "top", "bitfit")  # these only change existing weights: the result is a plain GPT


def save_method(model, path) -> None:
    """Write `path`/method.safetensors (the trainable parameters) and `path`/method_config.json."""
    from tinylora.version import __version__

    recorded = getattr(model, "finetune_method", None)
    if recorded is None:
        raise ValueError("save_method: the model has no baseline method applied (for LoRA use save_adapter)")
    settings = {k: v for k, v in recorded.items() if k != "method"}
    tensors = {name: p.data for name, p in model.named_parameters() if p.requires_grad}
    path = os.fspath(path)
    save_tensors(os.path.join(path, TENSOR_FILE), tensors, metadata={"format": FORMAT})
    write_json_atomic(os.path.join(path, CONFIG_FILE), {
        "format": FORMAT, "tinylora_version": __version__, "method": recorded["method"], "settings": settings,
        "base_model": dataclasses.asdict(model.config),
    })


def read_method_config(path) -> dict:
    """method_config.json of a method folder, checked to be one."""
    config_path = os.path.join(os.fspath(path), CONFIG_FILE)
    config = require_fields(read_json(config_path), config_path, {"method": str, "settings": dict, "base_model": dict})
    if config.get("format") != FORMAT or config["method"] not in APPLY:
        raise ValueError(f"{config_path} is not a tinylora method config "
                         f"(format {config.get('format')!r}, method {config.get('method')!r})")
    return config


def load_method(model, path):
    """Apply the saved method to `model` (a plain GPT of the same shape) and load its trained tensors.

    The base shape is checked before the model changes; the tensors' names and shapes after the
    method has built its parameters (a mismatch then means a damaged folder: start from a fresh base).
    """
    config = read_method_config(path)
    saved, own = config["base_model"], dataclasses.asdict(model.config)
    differ = [f"{k}: saved {saved.get(k)} vs model {own[k]}" for k in _SHAPE_FIELDS if saved.get(k) != own[k]]
    if differ:
        raise ValueError(f"{path}: the method was trained on a different base model ({', '.join(differ)})")
    tensors = load_tensors(os.path.join(os.fspath(path), TENSOR_FILE))
    APPLY[config["method"]](model, **config["settings"])
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(trainable) != set(tensors):
        missing, extra = sorted(set(trainable) - set(tensors)), sorted(set(tensors) - set(trainable))
        raise MissingNameError(f"{path}: the file does not match {config['method']}'s parameters "
                       f"(missing {missing[:3]}, unexpected {extra[:3]})")
    for name, p in trainable.items():
        if tuple(tensors[name].shape) != p.shape:
            raise ValueError(f"{path}: '{name}' has shape {tuple(tensors[name].shape)} in the file, "
                             f"the model needs {p.shape}")
        p.data[...] = move(tensors[name].astype(p.dtype, copy=False), p.device)
    return model
