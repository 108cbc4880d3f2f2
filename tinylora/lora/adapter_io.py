"""Adapter files: save the few trained numbers of a LoRA model, load them onto a fresh copy of the base.

A LoRA fine-tune changes only A and B (r(d + k) numbers per adapted d×k
weight, and the biases if `mark_only_lora_as_trainable(bias=...)` let them
train), so that is all an adapter directory holds:

    adapter.safetensors     blocks.{i}.attn.q.lora_A      (r, k)   every LoRA layer's A and B,
                            blocks.{i}.attn.q.lora_B      (d, r)   named as in model.named_parameters(),
                            blocks.{i}.attn.q.base.bias   (d,)     plus every bias that trains
    adapter_config.json     {"r", "alpha", "targets", "layers", "dropout", "init", "bias", "biases",
                             "modules": {name: {"r", "alpha", "rslora", "dropout", "init"}},
                             "base_model": {GPTConfig fields},
                             "base": {"name", "weights_sha256"}, "quantization", "tinylora_version", "format"}

`modules` lists every LoRA layer with its own settings, so a model whose layers
differ (say q and v with r = 8, fc with r = 4) round-trips exactly, its
scaling included (rslora: s = α/√r instead of α/r); the
top-level r, alpha, dropout and init summarise them (null where layers differ),
and targets / layers say where LoRA sits (layers null: every block). `bias` is
the bias mode and `biases` names every bias the file holds: an adapter may set
only what its config declares.

`base` identifies the model the adapter was trained on: the name it was loaded
by (`model.name_or_path`, e.g. "base-mini" or a folder) and a SHA-256 of its
weights (`weights_sha256`, below). `load_adapter` refuses a base whose weights
hash differently unless `force=True`, because an adapter on another base
computes something nobody trained. `quantization` (QLoRA, else null) says how
the base was quantized when the adapter trained on it: the adapter loads onto
that NF4 copy of the recorded base only (tinylora/cli/loading.py rebuilds it).

    save_adapter(model, "run/adapter")
    model = load_adapter(load_model("base-mini")[0], "run/adapter")
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import os
import re

import numpy as np

from tinylora import nn
from tinylora.engine.backend import move, to_host
from tinylora.errors import MissingNameError
from tinylora.io import FileFormatError, load_tensors, read_json, save_tensors, tensor_shapes, write_json_atomic
from tinylora.lora.apply import (
    BIAS_MODES, TARGETS, _bias_params, all_or_nothing, apply_lora, base_named_parameters, lora_layers,
)
from tinylora.lora.layer import INITS, LoRALinear

FORMAT = "tinylora-lora-adapter"
CONFIG_FILE, TENSOR_FILE = "adapter_config.json", "adapter.safetensors"
_LORA_NAME = re.compile(r"blocks\.(\d+)\.(?:attn|mlp)\.(\w+)")  # blocks.{i}.attn.q -> (i, "q")
_SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias")


class BaseMismatchError(ValueError):
    """The adapter was trained on other base weights than the model it is loaded into."""


# ------------------------------------------------------------------ what an adapter holds
def _own_parameters(model) -> dict:
    """{name: Parameter} of what the LoRA layers own (A, B, and whatever a LoRA variant adds), by module type."""
    params = {}
    for name, layer in lora_layers(model):
        params.update({f"{name}.{key}": p for key, p in layer._parameters.items()})
    return params


def _bias_names(model, params) -> list:
    """model.named_parameters() names of `params` (biases), in model order."""
    ids = {id(p) for p in params}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def weights_sha256(model, skip=()) -> str:
    """SHA-256 of the base model's weights: every parameter but LoRA's own, and but the Parameters in `skip`.

    Parameters are taken in name order (names without LoRA, see
    `base_named_parameters`), each as its name, shape and float32 bytes, so a
    model loaded as float32 or float64 hashes the same. The biases an adapter
    carries are skipped on both sides (they trained, so they differ from the base).
    """
    skip = {id(p) for p in skip}
    digest = hashlib.sha256()
    for name, p in sorted(base_named_parameters(model), key=lambda item: item[0]):
        if id(p) in skip:
            continue
        digest.update(f"{name}:{tuple(p.shape)};".encode())
        digest.update(np.ascontiguousarray(to_host(p.data), dtype="<f4").data)  # no copy if already float32
    return digest.hexdigest()


def remember_base(model) -> None:
    """Record `model.base_identity` = {"name", "weights_sha256"} of the plain base, before a method changes it.

    Called by what changes base weights or their storage (a method's apply, quantize_model), so that
    an adapter saved later names the base it was trained on, not the residual or 4-bit copy it holds then.
    The first record stays (a second method on the same model does not overwrite it).
    """
    if getattr(model, "base_identity", None) is None:
        model.base_identity = {"name": getattr(model, "name_or_path", None), "weights_sha256": weights_sha256(model)}


def _module_settings(layer) -> dict:
    return {"r": layer.r, "alpha": layer.alpha, "rslora": layer.rslora, "dropout": layer.lora_dropout.p,
            "init": layer.init}


def _common(modules: dict, key: str):
    """The value every module shares for `key`, or None where they differ."""
    values = {m[key] for m in modules.values()}
    return values.pop() if len(values) == 1 else None


def _bias_mode(model, trainable: set) -> str:
    """Name the set of trainable biases as a `mark_only_lora_as_trainable` bias mode ("custom" if none fits)."""
    for mode in BIAS_MODES:
        if {id(p) for p in _bias_params(model, mode)} == trainable:
            return mode
    return "custom"


def adapter_config(model) -> dict:
    """The adapter_config.json content describing `model`'s LoRA layers and the base they sit on."""
    from tinylora.version import __version__

    layers_by_name = dict(lora_layers(model))
    modules = {name: _module_settings(layer) for name, layer in layers_by_name.items()}
    if not modules:
        raise ValueError("save_adapter: the model has no LoRA layers (call apply_lora first)")
    places = []
    for name in modules:
        match = _LORA_NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"save_adapter: LoRA layer '{name}' is not at blocks.{{i}}.attn/mlp.{{target}}")
        places.append((int(match.group(1)), match.group(2)))
    layers = sorted({i for i, _ in places})
    biases = [p for p in _bias_params(model, "all") if p.requires_grad]
    merged = any(layer.merged for layer in layers_by_name.values())
    quantization = getattr(model, "quantization", None)  # QLoRA: trained on an NF4 copy of the recorded base
    if quantization is not None:
        base = dict(model.base_identity)
    else:  # merged layers hold W0 + ΔW in the base weights: their hash would not be the base's (null: unknown)
        base = {"name": getattr(model, "name_or_path", None),
                "weights_sha256": None if merged else weights_sha256(model, skip=biases)}
    return {
        "format": FORMAT,
        "tinylora_version": __version__,
        "r": _common(modules, "r"),
        "alpha": _common(modules, "alpha"),
        "targets": list(dict.fromkeys(t for _, t in places)),
        "layers": None if layers == list(range(len(model.blocks))) else layers,
        "dropout": _common(modules, "dropout"),
        "init": _common(modules, "init"),
        "bias": _bias_mode(model, {id(p) for p in biases}),
        "biases": _bias_names(model, biases),
        "modules": modules,
        "base_model": dataclasses.asdict(model.config),
        "base": base,
        "quantization": quantization,
    }


def save_adapter(model, path) -> None:
    """Write `path`/adapter.safetensors (A, B and trainable biases) and `path`/adapter_config.json.

    Refuses a model in which some other parameter trains (a LayerNorm weight,
    the embedding): an adapter file cannot hold it, and dropping it silently
    would lose part of the fine-tune. Refuses NaN or inf in what it would write.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"save_adapter: {path} is a file; an adapter is a folder (adapter_config.json + "
                              f"{TENSOR_FILE})")
    config = adapter_config(model)
    keep = {id(p) for p in _own_parameters(model).values()}
    keep |= {id(p) for p in _bias_params(model, "all") if p.requires_grad}
    tensors = {}
    for name, p in model.named_parameters():
        if id(p) in keep:
            tensors[name] = p.data
        elif p.requires_grad:
            raise ValueError(f"save_adapter: '{name}' is trainable but is neither LoRA's A, B nor a bias; an "
                             "adapter cannot hold it (freeze it, or save a full checkpoint instead)")
    tensors = {name: to_host(value) for name, value in tensors.items()}
    broken = [name for name, value in tensors.items() if not np.isfinite(value).all()]
    if broken:
        raise ValueError(f"save_adapter: {broken[:4]} hold NaN or inf; not writing a broken adapter")
    save_tensors(os.path.join(path, TENSOR_FILE), tensors, metadata={"format": FORMAT})
    write_json_atomic(os.path.join(path, CONFIG_FILE), config)


# ------------------------------------------------------------------ setting an adapter from arrays
def set_adapter_weights(model, tensors: dict, biases=None) -> None:
    """Set `model`'s LoRA weights from arrays {name: array}, as `lora_state_dict` names them. All or nothing.

    `tensors` must hold every parameter the model's LoRA layers own (A and B of
    each) and may hold biases of the model: those in `biases` (Parameters), by
    default the biases that train. Every name, shape and value (finite) is
    checked before anything is written; a failure leaves the model unchanged.
    """
    if not isinstance(tensors, dict):
        raise TypeError(f"set_adapter_weights: tensors must be a dict {{name: array}}, got {type(tensors).__name__}")
    params = dict(model.named_parameters())
    own = _own_parameters(model)
    if not own:
        raise ValueError("set_adapter_weights: the model has no LoRA layers (call apply_lora first)")
    biases = [p for p in _bias_params(model, "all") if p.requires_grad] if biases is None else list(biases)
    allowed = {**own, **{name: params[name] for name in _bias_names(model, biases)}}
    missing = [k for k in own if k not in tensors]
    if missing:
        raise KeyError(f"set_adapter_weights: no values for {missing[:4]} ({len(missing)} of the model's "
                       f"{len(own)} LoRA tensors missing)")
    for name, value in tensors.items():
        if name not in allowed:
            what = "a bias the adapter does not declare" if name in params else "not a parameter of this model"
            raise KeyError(f"set_adapter_weights: '{name}' is {what}; allowed: the LoRA tensors and "
                           f"{_bias_names(model, biases)[:4] or 'no biases'}")
        p = allowed[name]
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"set_adapter_weights: '{name}' has shape {tuple(value.shape)} but the model "
                             f"needs {tuple(p.shape)}")
        host = to_host(value)
        if host.dtype.kind != "f" or not np.isfinite(host).all():
            problem = f"dtype {host.dtype}" if host.dtype.kind != "f" else "NaN or inf"
            raise ValueError(f"set_adapter_weights: '{name}' holds {problem}; LoRA weights are finite floats")
    with all_or_nothing(model, overwritten=[allowed[name] for name in tensors]):
        for name, value in tensors.items():
            p = allowed[name]
            p.data[...] = move(to_host(value).astype(p.dtype, copy=False), p.device)


# ------------------------------------------------------------------ loading
def _fail(source: str, message: str) -> FileFormatError:
    return FileFormatError(f"{source}: {message}")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _check_config(config, source: str, n_layer: int) -> dict:
    """Every field load_adapter uses, checked for type and range; returns the modules {name: settings}."""
    if not isinstance(config, dict):
        raise _fail(source, f"expected a JSON object, got a {type(config).__name__}")
    if config.get("format") != FORMAT:
        hint = " (a PEFT adapter? use import_peft)" if "peft_type" in config else ""
        raise ValueError(f"{source} is not a tinylora adapter config: format is {config.get('format')!r}{hint}")
    modules = config.get("modules")
    if not isinstance(modules, dict) or not modules:
        raise _fail(source, f"'modules' must be a non-empty object {{layer name: settings}}, got {modules!r}"[:300])
    for name, s in modules.items():
        match = _LORA_NAME.fullmatch(name)
        if match is None or match.group(2) not in TARGETS or int(match.group(1)) >= n_layer:
            raise _fail(source, f"modules: '{name}' is not a LoRA place of this model "
                                f"(blocks.{{0..{n_layer - 1}}}.attn.{{q,k,v,o}} or .mlp.{{fc,proj}})")
        if not isinstance(s, dict):
            raise _fail(source, f"modules['{name}'] must be an object with r, alpha, dropout, init; got {s!r}")
        r, alpha = s.get("r"), s.get("alpha")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise _fail(source, f"modules['{name}']['r'] must be a positive int, got {r!r}")
        if not _is_number(alpha) or not alpha > 0:
            raise _fail(source, f"modules['{name}']['alpha'] must be a positive number, got {alpha!r}")
        dropout, init = s.get("dropout", 0.0), s.get("init", "kaiming")
        if not _is_number(dropout) or not 0 <= dropout < 1:
            raise _fail(source, f"modules['{name}']['dropout'] must be a number in [0, 1), got {dropout!r}")
        if init not in INITS:
            raise _fail(source, f"modules['{name}']['init'] must be one of {INITS}, got {init!r}")
        if not isinstance(s.get("rslora", False), bool):
            raise _fail(source, f"modules['{name}']['rslora'] must be true or false, got {s.get('rslora')!r}")
    bias = config.get("bias", "none")
    if bias not in (*BIAS_MODES, "custom"):
        raise _fail(source, f"'bias' must be one of {(*BIAS_MODES, 'custom')}, got {bias!r}")
    biases = config.get("biases")
    if biases is not None and not (isinstance(biases, list) and all(isinstance(b, str) for b in biases)):
        raise _fail(source, f"'biases' must be a list of parameter names, got {biases!r}")
    for key in ("base_model", "base"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise _fail(source, f"'{key}' must be an object, got {config[key]!r}")
    base = config.get("base") or {}
    if not isinstance(base.get("name"), (str, type(None))):
        raise _fail(source, f"base.name must be a string or null, got {base.get('name')!r}")
    digest = base.get("weights_sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise _fail(source, f"base.weights_sha256 must be 64 hex digits or null, got {digest!r}")
    # the top-level fields summarise `modules` (what `tinylora info` shows): they must agree with it
    targets = list(dict.fromkeys(_LORA_NAME.fullmatch(name).group(2) for name in modules))
    if "targets" in config and config["targets"] != targets:
        raise _fail(source, f"'targets' is {config['targets']!r} but 'modules' adapts {targets}")
    for key in ("r", "alpha"):
        values = {s[key] for s in modules.values()}
        if config.get(key) is not None and values != {config[key]}:
            raise _fail(source, f"'{key}' is {config[key]!r} but 'modules' has {key} = {sorted(values)}")
    return modules


def _check_base_shape(model, config: dict, source: str) -> None:
    if not isinstance(config.get("base_model"), dict):
        raise _fail(source, "lacks 'base_model' (the GPTConfig fields of the base the adapter was trained on)")
    saved, own = config["base_model"], dataclasses.asdict(model.config)
    differ = {k: (saved.get(k), own[k]) for k in _SHAPE_FIELDS if saved.get(k) != own[k]}
    if differ:
        detail = ", ".join(f"{k}: adapter {a} vs model {b}" for k, (a, b) in differ.items())
        raise ValueError(f"{source}: the adapter was trained on a different base model ({detail})")


def _check_existing(model, modules: dict, source: str) -> bool:
    """True if the model has no LoRA (the file's layers will be added); else check its layers are the file's."""
    existing = dict(lora_layers(model))
    if not existing:
        return True
    if set(existing) != set(modules):
        raise ValueError(f"{source}: the model already has LoRA on {sorted(existing)}, but the adapter "
                         f"is for {sorted(modules)}; load it into a model without LoRA")
    for name, layer in existing.items():
        s = modules[name]
        if (layer.r, layer.alpha, layer.rslora) != (s["r"], s["alpha"], s.get("rslora", False)):
            raise ValueError(f"{source}: '{name}' has r={layer.r}, alpha={layer.alpha}, rslora={layer.rslora} in the "
                             f"model but r={s['r']}, alpha={s['alpha']}, rslora={s.get('rslora', False)} in the adapter")
        if layer.merged:
            raise ValueError(f"{source}: '{name}' is merged; call unmerge_lora(model) before loading new A and B")
    return False


def _check_lora_shapes(model, modules: dict, shapes: dict, source: str) -> None:
    """Check the file's A and B (from its header) against the model's Linears, before anything is read."""
    own = dict(model.named_modules())
    for name, s in modules.items():
        layer = own.get(name)
        linear = layer.base if isinstance(layer, LoRALinear) else layer
        if not isinstance(linear, nn.Linear) and not getattr(linear, "is_quantized", False):
            raise ValueError(f"{source}: the adapter adapts '{name}', which is not a Linear layer of this model")
        r, d, k = s["r"], linear.out_features, linear.in_features
        if r > min(d, k):
            raise FileFormatError(f"{source}: modules['{name}'] has r={r}, more than min(d, k) = {min(d, k)}")
        for key, shape in ((f"{name}.lora_A", (r, k)), (f"{name}.lora_B", (d, r))):  # A (r, k), B (d, r)
            if key not in shapes:
                raise MissingNameError(f"{source} lacks '{key}' (the config lists {len(modules)} LoRA layers)")
            if shapes[key][1] != shape:
                raise ValueError(f"{source}: '{key}' has shape {shapes[key][1]} in the file "
                                 f"but the model needs {shape}")


def _declared_biases(model, config: dict, source: str) -> list:
    """The bias Parameters the adapter's config allows it to set (on a model that has its LoRA layers)."""
    mode = config.get("bias", "none")
    if mode == "custom":
        by_name = dict(model.named_parameters())
        names = config.get("biases")
        if names is None:  # written before "biases" existed: any bias of the model
            return _bias_params(model, "all")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise FileFormatError(f"{source}: 'biases' names {unknown[:3]}, which this model does not have")
        return [by_name[n] for n in names]
    return _bias_params(model, mode)


def _check_quantization(model, config: dict, source: str) -> None:
    """A QLoRA adapter goes on its base quantized as it was in training, and a LoRA adapter on a float base."""
    recorded, own = config.get("quantization"), getattr(model, "quantization", None)
    if recorded is not None and not isinstance(recorded, dict):
        raise _fail(source, f"'quantization' must be an object or null, got {recorded!r}")
    if recorded != own:
        if recorded is None:
            raise ValueError(f"{source}: the adapter was trained on a float base, but this model is quantized "
                             f"({own}); load it onto the float base")
        raise ValueError(f"{source}: the adapter was trained on the base quantized with {recorded}, but this model is "
                         f"{'float' if own is None else own}: quantize the base the same way first "
                         "(tinylora.methods.qlora.quantize_model; the CLI does it)")


def _check_identity(model, config: dict, skip, source: str) -> None:
    recorded = (config.get("base") or {}).get("weights_sha256")
    if not recorded:
        return
    quantized = getattr(model, "quantization", None) is not None
    own = model.base_identity["weights_sha256"] if quantized else weights_sha256(model, skip=skip)
    if own != recorded:
        name = (config.get("base") or {}).get("name")
        raise BaseMismatchError(
            f"{source}: the adapter was trained on base {name!r} whose weights hash to {recorded[:12]}..., but "
            f"this model's ({getattr(model, 'name_or_path', None)!r}) hash to {own[:12]}...: a different base "
            "(same shapes, other weights); load the right base, or pass force=True (CLI: --force) to use it anyway")


def _adapter_files(path) -> tuple[str, str]:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"an adapter is a folder path (str or os.PathLike), got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    config_path, tensor_path = os.path.join(path, CONFIG_FILE), os.path.join(path, TENSOR_FILE)
    if not os.path.exists(config_path):
        inner = os.path.join(path, "adapter")
        if os.path.exists(os.path.join(inner, CONFIG_FILE)):
            raise FileNotFoundError(f"{config_path} not found; {path} looks like a run folder: "
                                    f"did you mean {inner}?")
        if os.path.exists(os.path.join(path, "method_config.json")):
            raise FileNotFoundError(f"{path} holds method_config.json, the baselines' format before every method "
                                    f"wrote {CONFIG_FILE}: run finetune again to write it in the current format")
        what = "does not exist" if not os.path.exists(path) else f"has no {CONFIG_FILE}"
        raise FileNotFoundError(f"adapter folder {path} {what} (an adapter is what save_adapter or "
                                "`tinylora finetune` writes: adapter_config.json + adapter.safetensors)")
    return config_path, tensor_path


def read_adapter_config(path) -> dict:
    """adapter_config.json of adapter folder `path`, as written (not validated against a model)."""
    config_path, _ = _adapter_files(path)
    return read_json(config_path)


def load_adapter(model, path, force: bool = False):
    """Load an adapter saved by `save_adapter` into `model` (a GPT of the same base). Returns `model`.

    If the model has no LoRA yet, LoRA is applied first, with the saved
    settings of every layer, and the biases saved with the adapter are made
    trainable again (as they were). If it has LoRA, its layers must be the
    adapter's. Checked first: the config's fields, the base's shape, every
    tensor's name and shape (from the file's header), the biases the config
    declares, and the base's weights hash (skipped with force=True). All or
    nothing: a failure leaves the model exactly as it was.
    """
    if not isinstance(getattr(model, "blocks", None), nn.ModuleList):
        raise TypeError(f"load_adapter: expected a GPT (with .blocks), got {type(model).__name__}")
    config_path, tensor_path = _adapter_files(path)
    config = read_json(config_path)
    modules = _check_config(config, config_path, len(model.blocks))
    _check_base_shape(model, config, config_path)
    _check_quantization(model, config, config_path)
    fresh = _check_existing(model, modules, config_path)
    shapes = tensor_shapes(tensor_path)
    _check_lora_shapes(model, modules, shapes, tensor_path)
    tensors = load_tensors(tensor_path)
    with all_or_nothing(model, overwritten=_bias_params(model, "all")):
        if fresh:
            for name, s in modules.items():
                i, target = _LORA_NAME.fullmatch(name).groups()
                apply_lora(model, r=s["r"], alpha=s["alpha"], targets=(target,), layers=[int(i)],
                           dropout=s.get("dropout", 0.0), init=s.get("init", "kaiming"), rslora=s.get("rslora", False))
        declared = _declared_biases(model, config, config_path)
        own_names = set(_own_parameters(model))
        params = dict(model.named_parameters())
        declared_names = set(_bias_names(model, declared))
        for name in tensors:
            if name not in own_names and name not in declared_names:
                raise ValueError(f"{tensor_path} holds '{name}', but its config (bias: "
                                 f"{config.get('bias', 'none')!r}) does not declare it; an adapter may set "
                                 "only what its config declares")
        set_in_file = [params[name] for name in tensors if name in declared_names]
        if not force:
            _check_identity(model, config, set_in_file, config_path)
        set_adapter_weights(model, tensors, biases=declared)
        if fresh:
            for p in set_in_file:
                p.requires_grad_(True)  # it trained with the adapter: let it go on training
    return model
