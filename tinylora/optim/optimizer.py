"""Optimizer base class: parameter groups, zero_grad, and state only for trainable parameters."""

from __future__ import annotations

from ..backend import memory


class Optimizer:
    """Holds parameter groups; subclasses implement `step()`.

    `params` is a list of Parameters or of dicts {"params": [...], "lr": ...}
    (a parameter group with its own settings). Frozen parameters
    (requires_grad=False) are dropped here, so they never get optimizer state.
    """

    def __init__(self, params, defaults: dict):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        for group in groups:
            full = dict(defaults)
            full.update(group)
            full["params"] = [p for p in group["params"] if p.requires_grad]
            self.param_groups.append(full)
        if not any(g["params"] for g in self.param_groups):
            raise ValueError("optimizer: no parameter requires grad (did you freeze everything?)")
        self.state: dict[int, dict] = {}  # id(param) -> its state arrays

    def zero_grad(self) -> None:
        """Set every managed parameter's .grad to None."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_for(self, p, **initial) -> dict:
        """This parameter's state, created on first use from `initial` name -> array factory."""
        s = self.state.get(id(p))
        if s is None:
            s = {name: memory.track(make(), "optimizer") for name, make in initial.items()}
            self.state[id(p)] = s
        return s

    def step(self) -> None:
        raise NotImplementedError
