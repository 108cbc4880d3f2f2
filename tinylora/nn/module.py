"""Module: a container of Parameters and child Modules, as in PyTorch.

Assigning a Parameter or a Module to an attribute registers it, in order, so
`named_parameters()` yields names such as "blocks.0.attn.q.weight". A
Parameter registered by two modules (weight tying, e.g. an LM-head Linear
handed the embedding's weight) is yielded once, under the first name it was
found at. (tinylora's GPT has no head module: it computes x @ wte.weight.T.)
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager

from tinylora.engine.autograd import no_grad
from tinylora.engine.backend import get_device, move
from tinylora.engine.tensor import _as_dtype
from tinylora.errors import MissingNameError
from tinylora.nn.parameter import Parameter


class Module:
    """Base class of every layer and model. Subclasses define `forward` and call the module like a function."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        # replacing a registered child keeps its place in the order (apply_lora swaps q for a LoRALinear)
        if not isinstance(value, Parameter):
            self._parameters.pop(name, None)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # ------------------------------------------------------------- traversal
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix: str = ""):
        """Yield (name, module) for this module and every descendant, depth first, each once."""
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items()]
            stack.extend(reversed(children))

    def get_submodule(self, name: str) -> "Module":
        """The descendant at dotted path `name` ("blocks.0.attn"); "" is the module itself."""
        module = self
        for part in filter(None, name.split(".")):
            if part not in module._modules:
                raise KeyError(f"{type(module).__name__} has no submodule '{part}' (looking up '{name}')")
            module = module._modules[part]
        return module

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix: str = ""):
        """Yield (dotted name, Parameter) for every parameter, each shared Parameter once."""
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def trainable_parameters(self):
        """The parameters with requires_grad=True (what an optimizer should get)."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------ modes
    def train(self, mode: bool = True):
        """Training mode (dropout active) for this module and all children; returns self."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: dropout off."""
        return self.train(False)

    @property
    def device(self):
        """The device of this module's parameters (the first one's; None for a module without any)."""
        return next((p.device for p in self.parameters()), None)

    def requires_grad_(self, flag: bool = True):
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def zero_grad(self) -> None:
        """Forget accumulated gradients (sets every .grad to None)."""
        for p in self.parameters():
            p.grad = None

    def to(self, device=None, dtype=None):
        """Move every parameter to `device` and/or cast floating ones to `dtype`, in place; returns self."""
        target = get_device(device) if device is not None else None
        dtype = _as_dtype(dtype)
        for p in self.parameters():
            data = p.data
            if target is not None and p.device != target:
                data = move(data, target)
                p.device = target
            if dtype is not None and data.dtype.kind == "f" and data.dtype != dtype:
                data = data.astype(dtype)
            if data is not p.data:
                p.data = data
                p.grad = None
                from tinylora.engine.backend import memory

                memory.track(data, "parameters")
        return self

    # ------------------------------------------------------------ state dict
    def state_dict(self) -> "OrderedDict[str, object]":
        """name -> array for every parameter (shared ones once), in registration order."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict: bool = True) -> dict:
        """Copy arrays into parameters by name, checking shapes; with strict=True keys must match exactly.

        Returns {"missing": [...], "unexpected": [...]} (both empty when strict).
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise MissingNameError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, p in own.items():
            if name not in state:
                continue
            value = state[name]
            value = value.data if hasattr(value, "requires_grad") else value
            if tuple(value.shape) != p.shape:
                raise ValueError(f"load_state_dict: '{name}' has shape {tuple(value.shape)} in the file but {p.shape} in the model")
            p.data[...] = move(value, p.device).astype(p.dtype, copy=False)
        return {"missing": missing, "unexpected": unexpected}

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


@contextmanager
def evaluating(module: Module):
    """`with evaluating(model):` eval mode and no graph inside; afterwards every module's own mode is back.

    Each module's mode is restored, not one mode for all, so a submodule kept in eval mode
    inside a training model stays so.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with no_grad():
            yield module
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)


class ModuleList(Module):
    """A list of modules, registered as children "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
