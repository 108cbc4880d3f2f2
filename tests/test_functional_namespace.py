"""tinylora.functional is the one op namespace, and help() on an op's class shows its math.

- every public op is reachable as F.<name>, and each Function subclass in engine/ops/ is behind one;
- `from tinylora.functional import *` brings every op but shadows no Python builtin (sum, max, pow);
- every Function subclass has a docstring stating its forward (`y = ...` or similar) and its gradient;
- no op file keeps its math in `# forward:` comments any more.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
from pathlib import Path

import tinylora.engine.ops as ops_package
import tinylora.functional as F
from tinylora.engine.autograd import Function

OP_MODULES = [
    importlib.import_module(f"tinylora.engine.ops.{m.name}")
    for m in pkgutil.iter_modules(ops_package.__path__)
    if not m.name.startswith("_")
]
FUNCTIONS = sorted(
    {obj for module in OP_MODULES for obj in vars(module).values()
     if inspect.isclass(obj) and issubclass(obj, Function) and obj is not Function},
    key=lambda cls: cls.__name__,
)


def test_star_import_shadows_no_builtin_but_every_op_stays_reachable():
    namespace = {}
    exec("from tinylora.functional import *", namespace)
    exported = set(namespace) - {"__builtins__"}
    assert not exported & set(dir(builtins)), f"star-import shadows builtins: {exported & set(dir(builtins))}"
    assert exported == set(F.__all__)
    for name in F.SHADOWS_A_BUILTIN:
        assert hasattr(builtins, name) and callable(getattr(F, name)) and name not in F.__all__
    public = {n for n, v in vars(F).items() if callable(v) and not n.startswith("_")}
    assert public == set(F.__all__) | set(F.SHADOWS_A_BUILTIN)


def test_every_op_function_in_the_engine_is_in_functional():
    public_functions = {
        name for module in OP_MODULES for name, obj in vars(module).items()
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
        and not name.startswith("gelu_reference")  # the plain formulas the fused GELU is tested against
    }
    missing = public_functions - set(vars(F))
    assert not missing, f"ops missing from tinylora.functional: {sorted(missing)}"


def test_every_op_class_documents_its_forward_and_gradient():
    assert len(FUNCTIONS) >= 25
    for cls in FUNCTIONS:
        doc = cls.__doc__ or ""
        assert "=" in doc, f"{cls.__name__}: no formula in its docstring"
        assert any(mark in doc for mark in ("dx", "da", "dW", "dz", "ds", "dy/dx", "dweight")), (
            f"{cls.__name__}: the docstring does not state the gradient"
        )


def test_no_op_keeps_its_math_in_comments():
    for path in Path(ops_package.__file__).parent.glob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not line.strip().startswith(("# forward:", "# backward:")), f"{path.name}:{number}: {line.strip()}"


def test_functional_re_exports_the_engines_op_namespace():
    """Tensor's methods call the ops through tinylora.engine.ops (the engine imports nothing above it);
    tinylora.functional hands users the very same functions."""
    assert set(ops_package.__all__) == set(F.__all__) | set(F.SHADOWS_A_BUILTIN)
    assert all(getattr(F, name) is getattr(ops_package, name) for name in ops_package.__all__)
