"""Named adapters: one frozen base, many small (A, B) pairs, switched by name (paper §4.2).

The paper's deployment story: keep W0 once, and for each task keep only its
r(d + k) numbers per adapted matrix; switching tasks is "replacing the
matrices A and B". Here every LoRALinear can hold several named adapters:

    layer.lora_A, layer.lora_B, r, alpha, scaling   the ACTIVE adapter, called layer.adapter_name
    layer.stored_adapters                          name -> AdapterState of every other adapter

Only the active adapter is a registered Parameter, so everything written for a
single adapter (forward, merge, save_adapter, lora_state_dict, the optimizer
over model.parameters()) works on the active one unchanged. Switching rebinds
lora_A / lora_B to another adapter's arrays: nothing is copied, W0 is never
touched, so A -> B -> A gives A's logits back bit for bit.

    add_adapter(model, "sql", r=8)         a new adapter (A random, B = 0), not yet active
    load_named_adapter(model, path, "e2e") one saved with save_adapter, without reloading the base
    set_adapter(model, "sql")              make it the one forward uses (and training trains)
    list_adapters(model)                   ["default", "sql", "e2e"]; active_adapter(model) -> "sql"
    delete_adapter(model, "e2e")
    adapter_report(model)["text"]          bytes per adapter next to the base's
    with adapters_disabled(model): ...     the base model alone (= lora_disabled)

add_adapter puts a new adapter on the modules the others sit on (ranks may
differ); load_named_adapter may bring one for other modules: the LoRA layers
then cover both, and each adapter is exactly zero (B = 0) where it has no
layer of its own. Errors (an unknown name, a name twice, an adapter
whose modules or shapes do not fit, switching while merged) are raised before
anything changes, so a failed call leaves the model as it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tinylora import nn
from tinylora.engine.backend import move
from tinylora.errors import MissingNameError
from tinylora.io import load_tensors, read_json, tensor_shapes
from tinylora.lora.adapter_io import (_LORA_NAME, CONFIG_FILE, TENSOR_FILE, _check_base_shape, _check_config,
                                     _check_identity, _check_lora_shapes, _check_quantization, load_adapter)
from tinylora.lora.apply import _check_layers, _check_targets, TARGETS, apply_lora, disable_lora, enable_lora
from tinylora.lora.apply import lora_disabled, lora_layers
from tinylora.lora.layer import LoRALinear, lora_scaling

BASE = "base"  # reserved: in a mixed batch (lora/mixed.py) it means "no adapter for this example"


@dataclass
class AdapterState:
    """One adapter of one layer: A (r, k), B (d, r), and the settings that go with them."""

    lora_A: nn.Parameter
    lora_B: nn.Parameter
    r: int
    alpha: float
    init: str
    dropout: float
    rslora: bool = False  # s = α/√r (rsLoRA) instead of α/r

    @property
    def scaling(self) -> float:
        return lora_scaling(self.alpha, self.r, self.rslora)

    @classmethod
    def of(cls, layer: LoRALinear) -> "AdapterState":
        """The adapter a layer holds as its active one."""
        return cls(layer.lora_A, layer.lora_B, layer.r, layer.alpha, layer.init, layer.lora_dropout.p, layer.rslora)

    def bind(self, layer: LoRALinear) -> None:
        """Make this the layer's active adapter (rebinds the attributes; no array is copied)."""
        layer.lora_A, layer.lora_B = self.lora_A, self.lora_B
        layer.r, layer.alpha, layer.rslora, layer.scaling = self.r, self.alpha, self.rslora, self.scaling
        layer.init, layer.lora_dropout.p = self.init, self.dropout


def adapter_state(layer: LoRALinear, name: str) -> AdapterState:
    """The adapter called `name` in `layer`, active or stored."""
    if name == layer.adapter_name:
        return AdapterState.of(layer)
    return layer.stored_adapters[name]


# ------------------------------------------------------------------ looking
def _layers(model, action: str) -> list:
    layers = [layer for _, layer in lora_layers(model)]
    if not layers:
        raise ValueError(f"{action}: the model has no LoRA layers (call apply_lora or add_adapter first)")
    for layer in layers:
        if type(layer) is not LoRALinear:
            raise TypeError(f"{action}: named adapters work on plain LoRALinear layers, not {type(layer).__name__}")
    return layers


def list_adapters(model) -> list:
    """The names of the adapters the model holds, the active one first."""
    layer = _layers(model, "list_adapters")[0]
    return [layer.adapter_name, *layer.stored_adapters]


def active_adapter(model) -> str:
    """The name of the adapter that forward uses."""
    return _layers(model, "active_adapter")[0].adapter_name


def _check_known(model, name, action: str) -> list:
    layers = _layers(model, action)
    if not isinstance(name, str):
        raise TypeError(f"{action}: an adapter name is a str, got {name!r}")
    known = list_adapters(model)
    if name not in known:
        raise MissingNameError(f"{action}: no adapter named '{name}'; the model holds {known}")
    return layers


def _check_new_name(model, name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"adapter names are non-empty str, got {name!r}")
    if name == BASE:
        raise ValueError(f"'{BASE}' is reserved (it means 'no adapter' in a mixed batch); choose another name")
    if any(True for _ in lora_layers(model)) and name in list_adapters(model):
        raise ValueError(f"the model already holds an adapter named '{name}'; delete_adapter it first or pick another name")


def _check_fits(model, modules, action: str) -> list:
    """The model's LoRA layers, after checking that an adapter on `modules` (names) sits exactly on them."""
    layers = dict(lora_layers(model))
    if set(modules) != set(layers):
        raise ValueError(f"{action}: the new adapter is for {sorted(modules)}, but the model's adapters sit on "
                         f"{sorted(layers)}; every adapter of a model must adapt the same modules")
    return [layers[name] for name in modules]


# ------------------------------------------------------------------ adding
def add_adapter(model, name: str, r: int = 8, alpha: float | None = None, targets=("q", "v"), layers=None,
                dropout: float = 0.0, init: str = "kaiming"):
    """Add a new adapter `name` (A random, B = 0, so it starts as the base model). Returns `model`.

    On a model without LoRA this is apply_lora (the adapter becomes the active one).
    Otherwise the new adapter is stored, not activated: call set_adapter(model, name).
    It must adapt the same modules as the adapters already there (`targets`, `layers`);
    its rank, alpha, dropout and init are its own.
    """
    _check_new_name(model, name)
    if not any(True for _ in lora_layers(model)):
        apply_lora(model, r=r, alpha=alpha, targets=targets, layers=layers, dropout=dropout, init=init)
        for layer in _layers(model, "add_adapter"):
            layer.adapter_name = name
        return model
    targets = _check_targets(targets)
    wanted = [f"blocks.{i}.{TARGETS[t]}.{t}" for i in _check_layers(layers, len(model.blocks)) for t in targets]
    _layers(model, "add_adapter")
    owners = _check_fits(model, wanted, "add_adapter")
    # a throwaway LoRALinear around the same frozen base checks r, alpha, ... and draws A's init (W0 untouched)
    fresh = [AdapterState.of(LoRALinear(layer.base, r, alpha=alpha, dropout=dropout, init=init)) for layer in owners]
    for layer, state in zip(owners, fresh):  # nothing failed: now change the model
        layer.stored_adapters[name] = state
    return model


def load_named_adapter(model, path, name: str, force: bool = False):
    """Load an adapter saved by `save_adapter` as adapter `name`, next to those the model holds. Returns `model`.

    The base is not reloaded: only A and B are read. The file's base config must be the
    model's, its values finite; an adapter that trained biases cannot share the base with
    others (its biases would change W0's layer for every adapter), so it is refused: load
    it alone with `load_adapter`. Its modules may differ from those the model's adapters
    sit on: the LoRA layers then cover both, and each adapter is zero (B = 0, exactly no
    update) on the modules it does not adapt. Checked before the model changes. `force` skips the check
    that the base's weights are the ones it was trained on (as load_adapter's does).
    """
    _check_new_name(model, name)
    path = os.fspath(path)
    config_path, tensor_path = os.path.join(path, CONFIG_FILE), os.path.join(path, TENSOR_FILE)
    config = read_json(config_path)
    modules = _check_config(config, config_path, len(model.blocks))
    _check_base_shape(model, config, config_path)
    tensors = load_tensors(tensor_path)
    broken = [key for key, value in tensors.items() if value.dtype.kind != "f" or not np.isfinite(value).all()]
    if broken:
        raise ValueError(f"{tensor_path}: {broken[:3]} hold NaN, inf or a non-float dtype; an adapter's tensors "
                         "are finite floats")
    biases = [key for key in tensors if key.endswith("bias")]
    if biases:
        raise ValueError(f"{tensor_path} holds trained biases ({biases[0]}, ...): they change the shared base, so this "
                         "adapter cannot sit beside others; load it alone with load_adapter")
    if not any(True for _ in lora_layers(model)):
        load_adapter(model, path, force=force)
        for layer in _layers(model, "load_named_adapter"):
            layer.adapter_name = name
        return model
    existing = dict(zip([n for n, _ in lora_layers(model)], _layers(model, "load_named_adapter")))
    _check_lora_shapes(model, modules, tensor_shapes(tensor_path), tensor_path)
    _check_quantization(model, config, config_path)
    if not force:
        _check_identity(model, config, (), config_path)
    own = dict(model.named_modules())
    states = {}  # module -> the new adapter's state there
    for module, s in modules.items():
        base = existing[module].base if module in existing else own[module]
        state = AdapterState.of(LoRALinear(base, s["r"], alpha=s["alpha"], dropout=s.get("dropout", 0.0),
                                           init=s.get("init", "kaiming"), rslora=s.get("rslora", False)))
        for key, p in (("lora_A", state.lora_A), ("lora_B", state.lora_B)):
            p.data[...] = move(tensors[f"{module}.{key}"].astype(p.dtype, copy=False), p.device)
        states[module] = state
    # nothing failed: now change the model. Modules only the new adapter adapts get a LoRA layer on which every
    # adapter the model holds is zero; modules it does not adapt get a zero state for it.
    held = list_adapters(model)
    for module in modules:
        if module not in existing:
            i, target = _LORA_NAME.fullmatch(module).groups()
            apply_lora(model, r=1, targets=(target,), layers=[int(i)])
            layer = dict(model.named_modules())[module]
            nn.init.zeros_(layer.lora_B)  # already 0: the active adapter adds nothing here
            layer.adapter_name = held[0]
            layer.stored_adapters.update({other: _zero_state(layer) for other in held[1:]})
            existing[module] = layer
    for module, layer in existing.items():
        layer.stored_adapters[name] = states[module] if module in states else _zero_state(layer)
    return model


def _zero_state(layer) -> AdapterState:
    """An adapter of rank 1 that adds exactly nothing (B = 0) on `layer`: where an adapter has no layer."""
    return AdapterState.of(LoRALinear(layer.base, 1))


def store_adapter(model, name: str, parts: dict):
    """Store a ready-made adapter: `parts` maps each LoRA module name to (A (r, k), B (d, r), alpha) arrays.

    For code that computes adapters (tinylora/lora/combine.py). Shapes are checked
    against each layer's W0 (d, k) before anything changes; r may be any size >= 1.
    """
    _check_new_name(model, name)
    _layers(model, "store_adapter")
    owners = _check_fits(model, list(parts), "store_adapter")
    states = []
    for module, layer in zip(parts, owners):
        a, b, alpha = parts[module]
        d, k = layer.out_features, layer.in_features
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != k or b.shape[0] != d or a.shape[0] != b.shape[1] or not a.shape[0]:
            raise ValueError(f"store_adapter: '{module}' needs A (r, {k}) and B ({d}, r) with r >= 1, "
                             f"got A {tuple(a.shape)} and B {tuple(b.shape)}")
        a, b = (nn.Parameter(move(x.astype(layer.lora_A.dtype), layer.lora_A.device)) for x in (a, b))
        states.append(AdapterState(a, b, int(a.shape[0]), float(alpha), layer.init, 0.0))
    for layer, state in zip(owners, states):
        layer.stored_adapters[name] = state
    return model


# ------------------------------------------------------------------ switching, deleting
def set_adapter(model, name: str):
    """Make adapter `name` the active one in every LoRA layer. Returns `model`.

    Refused while any layer is merged: W0 then holds the active adapter's ΔW, and
    switching would leave it there. Call unmerge_lora(model) first.
    """
    layers = _check_known(model, name, "set_adapter")
    merged = [n for n, layer in lora_layers(model) if layer.merged]
    if merged:
        raise RuntimeError(f"set_adapter: {merged[0]} is merged (W0 holds adapter '{layers[0].adapter_name}'); "
                           "call unmerge_lora(model) before switching")
    for layer in layers:
        if layer.adapter_name == name:
            continue
        layer.stored_adapters[layer.adapter_name] = AdapterState.of(layer)
        layer.stored_adapters.pop(name).bind(layer)
        layer.adapter_name = name
    return model


def delete_adapter(model, name: str):
    """Forget adapter `name` (not the active one: set_adapter to another first). Returns `model`."""
    layers = _check_known(model, name, "delete_adapter")
    if name == layers[0].adapter_name:
        raise ValueError(f"delete_adapter: '{name}' is the active adapter; set_adapter(model, another) first "
                         "(or merge_and_unload / a fresh base to drop LoRA altogether)")
    for layer in layers:
        del layer.stored_adapters[name]
    return model


def disable_adapters(model):
    """Run the base model alone (every LoRA layer disabled; merged ones unmerged). Same as disable_lora."""
    return disable_lora(model)


def enable_adapters(model):
    """Bring the active adapter back. Same as enable_lora."""
    return enable_lora(model)


adapters_disabled = lora_disabled  # `with adapters_disabled(model):` the base model, then back as before


# ------------------------------------------------------------------ memory
def adapter_report(model) -> dict:
    """Bytes each adapter costs (A and B of every layer), next to the base model's bytes.

    Returns {"base_bytes", "adapters": [{"name", "active", "params", "bytes"}], "text"}.
    The base's bytes count W0 once (the weights every adapter shares; the tied
    embedding once); each extra adapter adds only its own row.
    """
    layers = _layers(model, "adapter_report")
    lora_ids = {id(p) for layer in layers for p in (layer.lora_A, layer.lora_B)}
    base_bytes = sum(p.data.nbytes for p in model.parameters() if id(p) not in lora_ids)
    rows = []
    for name in list_adapters(model):
        states = [adapter_state(layer, name) for layer in layers]
        rows.append({"name": name, "active": name == layers[0].adapter_name,
                     "params": sum(s.lora_A.size + s.lora_B.size for s in states),
                     "bytes": sum(s.lora_A.data.nbytes + s.lora_B.data.nbytes for s in states)})
    lines = [f"base model: {base_bytes:,} bytes (shared by every adapter)"]
    lines += [f"{'*' if row['active'] else ' '} {row['name']}: {row['params']:,} parameters, {row['bytes']:,} bytes "
              f"({100 * row['bytes'] / base_bytes:.2f}% of the base)" for row in rows]
    return {"base_bytes": base_bytes, "adapters": rows, "text": "\n".join(lines)}


__all__ = [
    "AdapterState", "BASE", "active_adapter", "adapter_report", "adapter_state", "adapters_disabled", "add_adapter",
    "delete_adapter", "disable_adapters", "enable_adapters", "list_adapters", "load_named_adapter", "set_adapter",
    "store_adapter",
]
