"""One adapter file for every method that is not plain LoRA: save what trained, load it back onto the base.

(Plain LoRA, rsLoRA, LoRA+, LoRA-FA and QLoRA are saved by `tinylora.lora.save_adapter`, in PEFT's layout;
`load_any_adapter` below reads both kinds.) A method adapter folder holds:

    adapter.safetensors    the tensors the method declares, named as in model.named_parameters():
                           every adapter parameter of its layers (A, B, DoRA's m, AdaLoRA's Λ, GLoRA's
                           supports, a bottleneck adapter's weights, virtual tokens) and what it trains
                           (BitFit's biases, FT^Top2's blocks), plus the biases `biases` names
    adapter_config.json    {"format": "tinylora-method-adapter", "method", "settings", "tensors", "biases",
                            "base_model": {GPTConfig fields}, "base": {"name", "weights_sha256", "skip"},
                            "tinylora_version"}

Loading checks, before the model changes: the method is a row of tinylora/methods/table.py, the base's
shape, its weights' SHA-256 (against the plain base, before the method is applied; `force=True` skips
this check), that every tensor is finite and floating-point, and that the file holds exactly the tensors
the config lists. Then it applies the method with the saved settings and checks that those are exactly
the tensors the method declares, with the shapes it built (each mismatch named), and copies them in. All
or nothing: a failure at any step leaves the model as it was (PiSSA's residual included).

    save_method_adapter(model, "run/adapter", "dora", settings)
    model = load_method_adapter(fresh_base, "run/adapter")
    model = load_any_adapter(fresh_base, "run/adapter")         # a LoRA adapter or a method adapter
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from tinylora import nn
from tinylora.engine.backend import move, to_host
from tinylora.errors import MissingNameError
from tinylora.io import (FileFormatError, load_tensors, read_json, require_fields, save_tensors, tensor_shapes,
                         write_json_atomic)
from tinylora.lora.adapter_io import _SHAPE_FIELDS, BaseMismatchError, load_adapter, read_adapter_config, weights_sha256
from tinylora.lora.apply import all_or_nothing, base_named_parameters, lora_layers
from tinylora.methods.glora import glora_layers
from tinylora.methods.table import METHODS, apply_method
from tinylora.methods.trainable import current_method

FORMAT = "tinylora-method-adapter"
CONFIG_FILE, TENSOR_FILE = "adapter_config.json", "adapter.safetensors"
RECORDED_AS = {"top": "top2"}  # model.finetune_method's name -> the table's


def declared_tensors(model) -> dict:
    """{name: Parameter} the method on `model` declares: its layers' adapter parameters and whatever trains."""
    own = {id(p) for _, layer in [*lora_layers(model), *glora_layers(model)] for p in layer.adapter_parameters()}
    return {name: p for name, p in model.named_parameters() if id(p) in own or p.requires_grad}


def _bias_parameters(model) -> dict:
    """{name: Parameter} of every Linear and LayerNorm bias (what an adapter may declare beside its own)."""
    ids = {id(m.bias) for m in model.modules() if isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is not None}
    return {name: p for name, p in model.named_parameters() if id(p) in ids}


def save_method_adapter(model, path, method: str, settings: dict) -> None:
    """Write path/adapter.safetensors and path/adapter_config.json (see the module docstring)."""
    from tinylora.version import __version__

    row = METHODS.get(RECORDED_AS.get(method, method))
    if row is None:
        raise ValueError(f"save_method_adapter: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if any(layer.merged for _, layer in [*lora_layers(model), *glora_layers(model)]):
        raise ValueError("save_method_adapter: unmerge first (merged layers hold the update inside W0)")
    tensors = declared_tensors(model)
    if not tensors:
        raise ValueError(f"save_method_adapter: the model has no {method} parameters (apply the method first)")
    host = {name: to_host(p.data) for name, p in tensors.items()}
    broken = [name for name, value in host.items() if not np.isfinite(value).all()]
    if broken:
        raise ValueError(f"save_method_adapter: {broken[:4]} hold NaN or inf; not writing a broken adapter")
    biases = [name for name, p in _bias_parameters(model).items() if name in tensors]
    identity, skip = getattr(model, "base_identity", None), []  # recorded by the method's apply, before it changed W0
    if identity is None:  # applied without a record (apply_lora, apply_rslora): hash the base now, less what trained
        skip = [tensors[name] for name in biases]
        identity = {"name": getattr(model, "name_or_path", None), "weights_sha256": weights_sha256(model, skip=skip)}
    base_names = {id(p): name for name, p in base_named_parameters(model)}  # names on the plain base
    path = os.fspath(path)
    config = {"format": FORMAT, "tinylora_version": __version__, "method": RECORDED_AS.get(method, method),
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
              "tensors": sorted(host), "biases": biases,
              "base_model": dataclasses.asdict(model.config),
              "base": {**identity, "skip": [base_names[id(p)] for p in skip]}}
    save_tensors(os.path.join(path, TENSOR_FILE), host, metadata={"format": FORMAT})
    write_json_atomic(os.path.join(path, CONFIG_FILE), config)


def read_method_config(path) -> dict:
    """adapter_config.json of a method adapter folder, its fields checked for type (not against a model)."""
    config_path = os.path.join(os.fspath(path), CONFIG_FILE)
    config = read_json(config_path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        what = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{config_path} is not a tinylora method adapter (format {what!r})")
    require_fields(config, config_path, {"method": str, "settings": dict, "tensors": list, "biases": list,
                                         "base_model": dict, "base": dict})
    if config["method"] not in METHODS:
        raise FileFormatError(f"{config_path}: method {config['method']!r} is not one of {', '.join(METHODS)}")
    if not all(isinstance(n, str) for n in config["tensors"] + config["biases"] + config["base"].get("skip", [])):
        raise FileFormatError(f"{config_path}: 'tensors', 'biases' and base.skip must list parameter names")
    return config


def _check_identity(model, config: dict, source: str) -> None:
    """The plain `model`'s weights must hash as the recorded base's (BaseMismatchError otherwise)."""
    base = config["base"]
    recorded = base.get("weights_sha256")
    if not recorded:
        return
    params = dict(model.named_parameters())
    unknown = [n for n in base.get("skip", []) if n not in params]
    if unknown:
        raise FileFormatError(f"{source}: base.skip names {unknown[:3]}, which this model does not have")
    own = weights_sha256(model, skip=[params[n] for n in base.get("skip", [])])
    if own != recorded:
        raise BaseMismatchError(
            f"{source}: the adapter was trained on base {base.get('name')!r} whose weights hash to {recorded[:12]}..., "
            f"but this model's ({getattr(model, 'name_or_path', None)!r}) hash to {own[:12]}...: a different base; "
            "load the right base, or pass force=True (CLI: --force) to use it anyway")


def load_method_adapter(model, path, force: bool = False):
    """Apply the saved method to `model` (a plain copy of its base) and load its tensors. Returns `model`."""
    path = os.fspath(path)
    config = read_method_config(path)
    config_path, tensor_path = os.path.join(path, CONFIG_FILE), os.path.join(path, TENSOR_FILE)
    method = config["method"]
    if not hasattr(model, "blocks") or not hasattr(model, "config"):
        raise TypeError(f"load_method_adapter: expected a GPT, got {type(model).__name__}")
    other = current_method(model)
    if other is not None or any(True for _ in glora_layers(model)):
        raise ValueError(f"{path}: the model already has {other or 'glora'}; load the {method} adapter into the "
                         "plain base")
    saved, own = config["base_model"], dataclasses.asdict(model.config)
    differ = [f"{k}: adapter {saved.get(k)} vs model {own[k]}" for k in _SHAPE_FIELDS if saved.get(k) != own[k]]
    if differ:
        raise ValueError(f"{config_path}: the adapter was trained on a different base model ({', '.join(differ)})")
    shapes = tensor_shapes(tensor_path)
    if set(shapes) != set(config["tensors"]):
        missing, extra = sorted(set(config["tensors"]) - set(shapes)), sorted(set(shapes) - set(config["tensors"]))
        raise MissingNameError(f"{tensor_path}: its tensors are not the ones its config lists (missing {missing[:3]}, "
                       f"not listed {extra[:3]})")
    tensors = load_tensors(tensor_path)
    for name, value in tensors.items():
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            problem = f"dtype {value.dtype}" if value.dtype.kind != "f" else "NaN or inf"
            raise ValueError(f"{tensor_path}: '{name}' holds {problem}; an adapter's tensors are finite floats")
    if not force:
        _check_identity(model, config, config_path)
    before = dict(model.named_parameters())  # a file may replace base tensors (BitFit's biases, FT^Top2's blocks)
    with all_or_nothing(model, overwritten=[before[n] for n in tensors if n in before]):
        apply_method(model, method, config["settings"])
        params = dict(model.named_parameters())
        biases = _bias_parameters(model)
        wrong = [n for n in config["biases"] if n not in biases]
        if wrong:
            raise MissingNameError(f"{config_path}: 'biases' names {wrong[:3]}, which are not biases of this model")
        expected = {**declared_tensors(model), **{n: params[n] for n in config["biases"]}}
        if set(expected) != set(tensors):
            missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
            raise MissingNameError(f"{tensor_path} does not hold what {method} declares: missing {missing[:3]}, "
                           f"not {method}'s {extra[:3]}")
        for name, p in expected.items():
            if tuple(tensors[name].shape) != tuple(p.shape):
                raise ValueError(f"{tensor_path}: '{name}' has shape {tuple(tensors[name].shape)} in the file, "
                                 f"the model needs {tuple(p.shape)}")
        for name, p in expected.items():
            p.data[...] = move(tensors[name].astype(p.dtype, copy=False), p.device)
        for name in config["biases"]:
            params[name].requires_grad_(True)  # it trained with the adapter: let it go on training
    return model


def save_method(model, path) -> None:
    """Save the baseline recorded on `model` (`model.finetune_method`, set by its apply_*) as a method adapter."""
    recorded = getattr(model, "finetune_method", None)
    if recorded is None:
        raise ValueError("save_method: the model has no baseline method applied (for LoRA use save_adapter)")
    save_method_adapter(model, path, recorded["method"], {k: v for k, v in recorded.items() if k != "method"})


load_method = load_method_adapter  # a baseline's folder is a method adapter like any other


def adapter_format(path) -> str:
    """The `format` of the adapter folder `path` (its adapter_config.json)."""
    config = read_adapter_config(path)
    return config.get("format") if isinstance(config, dict) else None


def load_any_adapter(model, path, force: bool = False):
    """Load a LoRA adapter (save_adapter) or a method adapter (save_method_adapter) onto `model`. Returns `model`."""
    if adapter_format(path) == FORMAT:
        return load_method_adapter(model, path, force=force)
    return load_adapter(model, path, force=force)
