"""Every file and module a docstring, a comment or a README names exists (a move leaves no stale pointer).

A name counts if it ends in .py, .ipynb or .md (`tinylora/engine/ops/matmul.py`,
`ops/attention.py`, `RESULTS.md`). It resolves if some file of the repository
ends with it (`ops/attention.py` is tinylora/engine/ops/attention.py), so a
docstring may name a file relative to its own folder. Scanned: README.md, every
other README, and the docstrings and comments (not the code) of every .py file
in tinylora/, tests/ and benchmarks/.

A dotted name such as `tinylora.engine.backend.memory` or `tinylora.lora.apply_lora`
must be a module or an attribute reached from `tinylora` (a module path of tinylora 0.1
that moved since is neither).
"""

from __future__ import annotations

import ast
import functools
import importlib
import io
import os
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOTTED_NAME = re.compile(r"(?<![\w.])(tinylora(?:\.\w+)+)")
FILE_NAME = re.compile(r"(?<![\w./-])((?:\.ci/|[\w-]+/)*[\w-]+\.(?:py|ipynb|md))(?![\w/])")


@functools.lru_cache(maxsize=None)
def _repo_files() -> tuple[str, ...]:
    """Every file of the working tree as "/folder/name", skipping .git, caches and run outputs."""
    skip = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "build", ".ipynb_checkpoints"}
    found = []
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in skip and not d.endswith(".egg-info")]
        relative = Path(folder).relative_to(ROOT).as_posix()
        found += ["/" + (f"{relative}/{n}" if relative != "." else n) for n in names]
    return tuple(found)


def _prose_of_python(path: Path) -> str:
    """The docstrings and comments of a Python file, one per line."""
    source = path.read_text(encoding="utf-8")
    pieces = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                pieces.append(doc)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            pieces.append(token.string)
    return "\n".join(pieces)


@functools.lru_cache(maxsize=None)
def _texts() -> tuple:
    """(path, prose) for the README files and the docstrings + comments of every scanned .py file."""
    texts = [(readme, readme.read_text(encoding="utf-8")) for readme in [ROOT / "README.md", *sorted(ROOT.glob("*/**/README.md"))]]
    for folder in ("tinylora", "tests", "benchmarks"):
        texts += [(p, _prose_of_python(p)) for p in sorted((ROOT / folder).rglob("*.py"))]
    return tuple(texts)


def test_every_file_named_in_docs_exists():
    files = _repo_files()
    missing = []
    for path, text in _texts():
        for name in set(FILE_NAME.findall(text)):
            if not any(f.endswith("/" + name.lstrip("./")) or f == "/" + name for f in files):
                missing.append(f"{path.relative_to(ROOT)} names {name}")
    assert not missing, "files named in docs but absent:\n" + "\n".join(sorted(missing))


def _resolves(dotted: str) -> bool:
    """Is `dotted` a module or an attribute path from `tinylora` (importing submodules on the way)?"""
    parts = dotted.split(".")
    obj, name = importlib.import_module("tinylora"), "tinylora"
    for part in parts[1:]:
        name += "." + part
        try:
            obj = importlib.import_module(name)  # a submodule wins over a same-named attribute
            continue
        except ImportError:
            pass
        obj = getattr(obj, part, None)
        if obj is None:
            return False
    return True


def test_every_module_named_in_docs_exists():
    stale = [
        f"{path.relative_to(ROOT)} names {name}"
        for path, text in _texts()
        for name in sorted(set(DOTTED_NAME.findall(text)))
        if not _resolves(name.rstrip("."))
    ]
    assert not stale, "modules or attributes named in docs that do not exist (or moved):\n" + "\n".join(stale)


def test_the_scan_finds_the_names_it_should():
    # guards the regular expression: these names are in the README and in autograd.py's docstring
    readme = set(FILE_NAME.findall((ROOT / "README.md").read_text(encoding="utf-8")))
    assert {"tinylora/engine/autograd.py", "tinylora/lora/layer.py"} <= readme
    assert "backend/memory.py" in FILE_NAME.findall(_prose_of_python(ROOT / "tinylora/engine/autograd.py"))
    assert not any(f.endswith("/no_such_file.py") for f in _repo_files())
    assert _resolves("tinylora.engine.backend.memory") and _resolves("tinylora.tensor")
    assert not _resolves("tinylora.hf.load_gpt2") and not _resolves("tinylora.no_such_module")


def _lines(path: Path) -> int:
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)


def test_where_to_read_line_counts_match_the_tree():
    """Each row's count is the `wc -l` of its files (a folder: all its .py files), to 10% or 10 lines."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Where to read"):].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) >= 10
    for step, read, lines, _ in rows:
        if not lines.strip():
            continue
        paths = [ROOT / p for p in re.findall(r"`([^`]+)`", read)]
        counted = sum(_lines(p) for p in paths)
        assert abs(counted - int(lines)) <= max(10, 0.1 * counted), f"step {step.strip()}: README says {lines.strip()} lines, the files have {counted}"


# what one loss.backward() through x * w reads (README, after the table): whole files, or definitions by name
BACKWARD_PATH = {
    "tinylora/engine/tensor.py": ("Tensor.__mul__", "Tensor._operands", "Tensor._lift", "Tensor.backward"),
    "tinylora/engine/ops/elementwise.py": ("Mul", "mul"),
    "tinylora/engine/autograd.py": None,
}
BACKWARD_CALLS = {  # ... and what those lines call
    "tinylora/engine/ops/_util.py": ("broadcast_shapes", "unbroadcast"),
    "tinylora/engine/backend/memory.py": ("MemoryTracker.track", "MemoryTracker.hold_for_backward",
                                          "MemoryTracker.drop_for_backward", "MemoryTracker._entry",
                                          "MemoryTracker._set", "MemoryTracker._effective", "MemoryTracker._add",
                                          "_base_buffer"),
}


def _definition_lines(path: Path, names) -> int:
    """wc -l of the file (names None), or the lines from `def`/`class` to the end of each named definition."""
    source = path.read_text(encoding="utf-8")
    if names is None:
        return len(source.splitlines())
    spans = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            spans[node.name] = node.end_lineno - node.lineno + 1
        if isinstance(node, ast.ClassDef):
            spans |= {f"{node.name}.{f.name}": f.end_lineno - f.lineno + 1 for f in node.body
                      if isinstance(f, ast.FunctionDef)}
    return sum(spans[name] for name in names)


def test_the_backward_reading_path_has_the_lines_the_readme_states():
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    stated = re.search(r"where `\.grad` is written: (\d+) lines in these (\d+) files \((\d+) in (\d+) with", text)
    assert stated, "the README's sentence on the backward path's lines is gone"
    path = sum(_definition_lines(ROOT / p, names) for p, names in BACKWARD_PATH.items())
    called = path + sum(_definition_lines(ROOT / p, names) for p, names in BACKWARD_CALLS.items())
    assert tuple(int(n) for n in stated.groups()) == (path, len(BACKWARD_PATH), called,
                                                      len(BACKWARD_PATH) + len(BACKWARD_CALLS))


# what a reader of the repository cannot follow: a tracker's issue number, or a document it does not hold
# (built from parts so that this file does not name them itself)
UNFOLLOWABLE = re.compile(r"\b[Ii]ssue " + r"\d+|\(" + r"issue\b|\bSP" + r"ECS\b|DEVELOP" + r"ERS\.md|\bST" + r"YLE\.md")


def test_the_repository_names_no_tracker_issue_and_no_document_it_does_not_contain():
    """Code, tests, docs, notebooks and benchmarks speak of what is in the repository (another project's
    public issue, such as `peft #1234`, is a citation and may stay)."""
    suffixes = {".py", ".md", ".ipynb", ".toml", ".sh", ".txt", ".cfg"}
    scanned = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in suffixes
               and not {".git", "results", "runs", ".pytest_cache", "build"} & set(p.relative_to(ROOT).parts)
               and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)]
    scanned.append(ROOT / ".ci" / "run")
    found = [f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}" for p in scanned
             for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if UNFOLLOWABLE.search(line)]
    assert len(scanned) > 100, "the scan found too few files to mean anything"
    assert not found, "names a reader of the repository cannot follow:\n" + "\n".join(found)
