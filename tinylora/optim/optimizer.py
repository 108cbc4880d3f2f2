"""Optimizer base class: parameter groups, names, lazy in-place state, and checkpoints.

Every optimizer in tinylora works the same way:

  * It is given parameters as a list of tensors, as `model.named_parameters()`
    (name, parameter) pairs, or as parameter groups: dicts
    {"params": [...], "lr": ...} whose settings override the defaults.
  * Frozen parameters (requires_grad=False) are dropped at construction, so
    they never get optimizer state. With LoRA that is the point: W0 is frozen
    and only A and B carry state.
  * State (momentum, Adam's m and v) is created on a parameter's first update,
    counted as "optimizer" memory, and then updated in place: a step creates
    no new arrays. Temporaries go to a reusable work buffer (`scratch`).
  * `state_dict()` names each parameter's state by the parameter's name (or by
    its position in the list when no names were given), so a checkpoint maps
    back onto the parameters by name.
"""

from __future__ import annotations

from tinylora.engine.backend import memory, move, to_host
from tinylora.engine.tensor import Tensor
from tinylora.errors import MissingNameError


class Optimizer:
    """Holds parameter groups and per-parameter state; subclasses implement `step()`.

    `params` is one of
        [p0, p1, ...]                         tensors; named "0", "1", ... by position
        [("h.0.attn.lora_A", p0), ...]        (name, tensor) pairs, e.g. model.named_parameters()
        [{"params": [...], "lr": 1e-3}, ...]  parameter groups, each with its own settings
    `defaults` holds every setting a group may have (a group may override any of them).
    """

    def __init__(self, params, defaults: dict):
        if isinstance(params, (Tensor, dict)):
            raise TypeError(f"{type(self).__name__}: params must be a list of tensors, (name, tensor) pairs or groups")
        entries = list(params)
        if not entries:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = entries if isinstance(entries[0], dict) else [{"params": entries}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.param_names: dict[int, str] = {}  # id(param) -> name used in state_dict()
        named = []  # (name, tensor) for every parameter given, frozen ones included
        for group in groups:
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"{type(self).__name__}: a parameter group must be a dict with a 'params' key")
            unknown = sorted(set(group) - set(defaults) - {"params"})
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown setting(s) {unknown}; known: {sorted(defaults)}")
            full = dict(defaults)
            full.update(group)
            full["params"] = []
            for name, p in self._named(group["params"], named):
                if p.requires_grad:  # frozen parameters are dropped: no state, no update
                    full["params"].append(p)
                    self.param_names[id(p)] = name
            self.check_group(full)
            self.param_groups.append(full)
        if not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{type(self).__name__}: no parameter requires grad (did you freeze everything?)")
        self.state: dict[int, dict] = {}  # id(param) -> {"step": int, slot name: array}
        self._scratch: dict[tuple, object] = {}  # (device, dtype, slot) -> flat work buffer

    def _named(self, params, named: list) -> list:
        """Check a group's entries and return them as (name, tensor) pairs, appended to `named`.

        A tensor given without a name is named by its position among all the
        parameters given ("0", "1", ...).
        """
        if isinstance(params, Tensor):
            params = [params]
        start = len(named)
        seen_ids, seen_names = {id(q) for _, q in named}, {n for n, _ in named}
        for entry in params:
            if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
                name, p = entry
            else:
                name, p = str(len(named)), entry
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__}: expected tensors or (name, tensor) pairs, "
                                f"got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__}: '{name}' is not a leaf tensor (it was computed by an op)")
            if id(p) in seen_ids or name in seen_names:
                raise ValueError(f"{type(self).__name__}: parameter '{name}' appears twice")
            seen_ids.add(id(p))
            seen_names.add(name)
            named.append((name, p))
        return named[start:]

    def check_group(self, group: dict) -> None:
        """Refuse bad settings with a clear message (subclasses add their own checks)."""
        if not group["lr"] > 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {group['lr']}")
        if group.get("weight_decay", 0.0) < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {group['weight_decay']}")

    # --------------------------------------------------------------- stepping
    def step(self) -> None:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Set every managed parameter's .grad to None."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_for(self, p, **initial) -> dict:
        """This parameter's state, created on first use: `initial` maps a name to a factory.

        Arrays made by the factories are counted as "optimizer" memory. Plain
        numbers (such as a step count) are kept as they are.
        """
        s = self.state.get(id(p))
        if s is None:
            s = {name: memory.track(make(), "optimizer") for name, make in initial.items()}
            self.state[id(p)] = s
        return s

    def scratch(self, p, slot: int = 0):
        """A reusable work buffer shaped like `p`, for temporaries inside `step()`.

        One flat buffer per (device, dtype, slot), as long as the largest
        parameter, is allocated on first use and shared by all parameters, so a
        step touches no fresh memory. Its contents are garbage between uses.
        It is a workspace, not state, so memory accounting counts it as "other":
        "optimizer" stays exactly the state (momentum, m, v) of trainable parameters.
        """
        key = (p.device.name, p.dtype.str, slot)
        flat = self._scratch.get(key)
        if flat is None:
            largest = max(q.size for g in self.param_groups for q in g["params"]
                          if q.device == p.device and q.dtype == p.dtype)
            flat = memory.track(p.device.xp.empty(largest, dtype=p.dtype), "other")
            self._scratch[key] = flat
        return flat[: p.size].reshape(p.shape)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """A snapshot for checkpoints: host arrays plus JSON-able settings, keyed by parameter name.

            {"param_groups": [{"lr": 1e-3, ..., "params": [name, ...]}, ...],   # JSON-able
             "step":         {name: int},                                       # JSON-able
             "state":        {name: {slot: numpy array}}}                       # e.g. "m", "v"

        The arrays are copies: later steps do not change a saved state_dict.
        To write it with safetensors, flatten "state" to {f"{name}/{slot}": array}
        (names contain dots, so "/" splits back unambiguously) and store the
        other two entries as JSON.
        """
        groups = []
        for group in self.param_groups:
            entry = {k: list(v) if isinstance(v, tuple) else v for k, v in group.items() if k != "params"}
            entry["params"] = [self.param_names[id(p)] for p in group["params"]]
            groups.append(entry)
        state, steps = {}, {}
        for p in self._managed():
            s = self.state.get(id(p))
            if s is None:
                continue
            name = self.param_names[id(p)]
            state[name] = {slot: _host_copy(a) for slot, a in s.items() if slot != "step"}
            if "step" in s:
                steps[name] = int(s["step"])
        return {"param_groups": groups, "step": steps, "state": state}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore settings and state saved by `state_dict()`, matching parameters by name.

        The optimizer must have been built the same way (same groups, same
        parameter names, same kind of optimizer); everything is checked before
        anything changes. State arrays that already exist are overwritten in
        place; parameters absent from the checkpoint start again with no state,
        as they had none when it was saved.
        """
        me = type(self).__name__
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{me}.load_state_dict: checkpoint has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        new_settings = []
        for i, (mine, saved) in enumerate(zip(self.param_groups, saved_groups)):
            names = [self.param_names[id(p)] for p in mine["params"]]
            if list(saved["params"]) != names:
                missing, extra = sorted(set(names) - set(saved["params"])), sorted(set(saved["params"]) - set(names))
                raise ValueError(f"{me}.load_state_dict: group {i} parameters differ (not in the checkpoint: "
                                 f"{missing[:5]}; only in the checkpoint: {extra[:5]}; or a different order)")
            if set(saved) - {"params"} != set(self.defaults):
                raise ValueError(f"{me}.load_state_dict: group {i} has settings {sorted(set(saved) - {'params'})}, "
                                 f"expected {sorted(self.defaults)} (a checkpoint of another optimizer?)")
            settings = {k: tuple(saved[k]) if isinstance(self.defaults[k], tuple) else saved[k] for k in self.defaults}
            self.check_group(dict(mine, **settings))
            new_settings.append(settings)

        by_name = {self.param_names[id(p)]: p for p in self._managed()}
        unknown = sorted(set(state_dict["state"]) - set(by_name))
        if unknown:
            raise MissingNameError(f"{me}.load_state_dict: state for unknown parameters {unknown[:5]}")
        for name, slots in state_dict["state"].items():
            for slot, saved in slots.items():
                if tuple(saved.shape) != by_name[name].shape:
                    raise ValueError(f"{me}.load_state_dict: state '{slot}' of '{name}' has shape "
                                     f"{tuple(saved.shape)}, the parameter has shape {by_name[name].shape}")

        for group, settings in zip(self.param_groups, new_settings):
            group.update(settings)
        steps = state_dict.get("step", {})
        new_state = {}
        for name, slots in state_dict["state"].items():
            p = by_name[name]
            old = self.state.get(id(p), {})
            s = {"step": int(steps[name])} if name in steps else {}
            for slot, saved in slots.items():
                target = old.get(slot)
                if target is None:
                    target = memory.track(p.device.xp.empty(p.shape, dtype=p.dtype), "optimizer")
                target[...] = move(saved, p.device)  # in place; casts to the parameter's dtype
                s[slot] = target
            new_state[id(p)] = s
        self.state = new_state

    def _managed(self):
        """Every parameter this optimizer updates, group by group."""
        for group in self.param_groups:
            yield from group["params"]


def _host_copy(array):
    """A NumPy copy of `array` (CuPy's `.get()` already copies; a NumPy array is copied here)."""
    host = to_host(array)
    return host.copy() if host is array else host
