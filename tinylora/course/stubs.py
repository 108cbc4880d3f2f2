"""Source surgery on one function: find it by qualified name, replace its body, or put a body back.

A function is named by its file and qualified name, e.g. ("tinylora/engine/autograd.py", "unbroadcast") or
("tinylora/engine/ops/elementwise.py", "Mul.backward"). Its *body* is everything after the signature and the
docstring; a stub keeps the signature and the docstring and raises NotImplementedError with the task's text,
which is all a student needs to find the task and read the math.
"""

from __future__ import annotations

import ast


def find_function(tree: ast.Module, qualname: str) -> ast.FunctionDef:
    """The def named `qualname` ("func" or "Class.method") at the top of `tree` (no deeper nesting)."""
    node = tree
    for part in qualname.split("."):
        matches = [n for n in getattr(node, "body", [])
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part]
        if not matches:
            raise LookupError(f"{qualname}: no definition named {part!r}")
        node = matches[0]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise LookupError(f"{qualname} is a class, not a function")
    return node


def _docstring_end(func: ast.FunctionDef) -> int | None:
    """Last line (1-based) of the function's docstring, or None if it has none."""
    first = func.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno
    return None


def body_span(source: str, qualname: str) -> tuple[int, int, str]:
    """(first, last, indent): the 0-based line range [first, last) of the body after the docstring."""
    func = find_function(ast.parse(source), qualname)
    doc_end = _docstring_end(func)
    if doc_end is not None and len(func.body) == 1:
        raise LookupError(f"{qualname} has a docstring and no body")
    first_stmt = func.body[1] if doc_end is not None else func.body[0]
    lines = source.splitlines(keepends=True)
    indent = lines[first_stmt.lineno - 1][: first_stmt.col_offset]
    first = doc_end if doc_end is not None else _header_end(lines, func)
    return first, func.end_lineno, indent


def _header_end(lines, func) -> int:
    """0-based index of the first line after the `def ...:` header (which may span lines)."""
    return func.body[0].lineno - 1


def get_body(source: str, qualname: str) -> str:
    """The body's source text (after the docstring), exactly as written."""
    first, last, _ = body_span(source, qualname)
    return "".join(source.splitlines(keepends=True)[first:last])


def replace_body(source: str, qualname: str, new_body: str) -> str:
    """`source` with the body of `qualname` replaced by `new_body` (full lines, already indented)."""
    first, last, _ = body_span(source, qualname)
    lines = source.splitlines(keepends=True)
    if not new_body.endswith("\n"):
        new_body += "\n"
    return "".join(lines[:first]) + new_body + "".join(lines[last:])


def stub(source: str, qualname: str, message: str) -> str:
    """Replace the body of `qualname` by `raise NotImplementedError(message)`."""
    _, _, indent = body_span(source, qualname)
    return replace_body(source, qualname, f"{indent}raise NotImplementedError({message!r})\n")
