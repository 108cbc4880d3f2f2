"""Old module paths (tinylora 0.1) that still import, with a DeprecationWarning, until the next release.

tinylora 0.2 moved its modules into folders that show the reading order (engine -> nn -> optim -> model ->
lora -> methods -> train -> cli). `import tinylora.gpt` and `from tinylora.hf import load_gpt2` still
work: this finder maps each old name to its new module and warns once. Nothing else uses this file.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "tinylora.tensor": "tinylora.engine.tensor",
    "tinylora.autograd": "tinylora.engine.autograd",
    "tinylora.random": "tinylora.engine.random",
    "tinylora.backend": "tinylora.engine.backend",
    "tinylora.ops": "tinylora.engine.ops",
    "tinylora.gpt": "tinylora.model.gpt",
    "tinylora.generate": "tinylora.model.generate",
    "tinylora.hf": "tinylora.model.hf_gpt2",
    "tinylora.pretrained": "tinylora.model.load",
    "tinylora.checkpoint": "tinylora.train.checkpoint",
    "tinylora.plot": "tinylora.train.plot",
    "tinylora.demo": "tinylora.cli.demo",
}


# `tinylora.ops` itself re-exported every op; those names now live in tinylora.functional (its files in engine/ops/)
RENAMED_PACKAGE_NAMES = {"tinylora.ops": "tinylora.functional"}


def new_name(old: str) -> str | None:
    """'tinylora.backend.memory' -> 'tinylora.engine.backend.memory'; None if `old` did not move."""
    if old in RENAMED_PACKAGE_NAMES:
        return RENAMED_PACKAGE_NAMES[old]
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix):]
    return None


class _Loader(importlib.abc.Loader):
    """Makes the old name a thin module that hands every attribute lookup to the new module."""

    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return None  # a plain new module

    def exec_module(self, module):
        target = importlib.import_module(self.target)
        module.__getattr__ = lambda name: getattr(target, name)  # PEP 562: looked up when `name` is missing
        module.__doc__ = target.__doc__
        if hasattr(target, "__path__") or module.__name__ in RENAMED_PACKAGE_NAMES:
            module.__path__ = []  # a package, so `tinylora.backend.memory` can be imported below it


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname)
        if new is None:
            return None
        warnings.warn(f"{fullname} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=3)
        return importlib.util.spec_from_loader(fullname, _Loader(new))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
