"""Write a student's copy of the repository for one assignment, and put reference bodies back.

    release("A1", "out/A1")      copy the repository; stub every task's functions; strip the handout's
                                 solution cells; write out/A1/COURSE_RELEASE.json (what was stubbed, no code)
    solve("out/A1")              put the reference bodies back (all tasks, or some): what a perfect student
                                 submits; the course check grades it to full marks

A handout's solution cells are the code cells tagged "solution" (cell metadata "tags"): in the release
their source becomes a `# YOUR CODE HERE` stub.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from tinylora.course.assignments import Assignment, get_assignment
from tinylora.course.stubs import get_body, replace_body, stub
from tinylora.io import read_json, require_fields, write_json_atomic

RELEASE_FILE = "COURSE_RELEASE.json"
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "build", "dist", ".ipynb_checkpoints"}


def repository_root() -> str:
    """The repository the installed package sits in (the reference the course is generated from)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not (os.path.isfile(os.path.join(root, "pyproject.toml")) and os.path.isdir(os.path.join(root, "tests"))):
        raise FileNotFoundError(f"tinylora course: {root} is not a tinylora repository (no pyproject.toml and tests/); "
                                "install tinylora from a clone with `pip install -e .`")
    return root


def repository_files(root: str) -> list:
    """Files to copy: git's tracked files when `root` is a git checkout, else every file outside SKIP_DIRS."""
    if os.path.exists(os.path.join(root, ".git")):
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                                capture_output=True, check=False)
        if listed.returncode == 0:
            return sorted(p for p in listed.stdout.decode().split("\0") if p and os.path.isfile(os.path.join(root, p)))
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        files += [os.path.relpath(os.path.join(folder, n), root) for n in names]
    return sorted(files)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def strip_solution_cells(notebook_path: str) -> int:
    """Replace the source of every code cell tagged "solution" by a stub; return how many were stripped."""
    with open(notebook_path, encoding="utf-8") as f:
        notebook = json.load(f)
    stripped = 0
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") == "code" and "solution" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = ["# YOUR CODE HERE\n", "raise NotImplementedError(\"write this cell\")\n"]
            cell["outputs"], cell["execution_count"] = [], None
            stripped += 1
    if stripped:
        _write(notebook_path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return stripped


def release(assignment: Assignment | str, out: str, repo: str | None = None) -> dict:
    """Write the student copy of `assignment` to the new folder `out`; return what was stubbed."""
    assignment = get_assignment(assignment) if isinstance(assignment, str) else assignment
    repo = repo or repository_root()
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"tinylora course release: {out} exists and is not empty; choose a new folder")
    for rel in repository_files(repo):
        os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
        shutil.copy2(os.path.join(repo, rel), os.path.join(out, rel))

    stubbed = []
    for task in assignment.tasks:
        for path, qualname in task.functions:
            target = os.path.join(out, path)
            _write(target, stub(_read(target), qualname, assignment.message(task)))
            stubbed.append({"task": task.number, "file": path, "function": qualname})
    notebooks = [os.path.join(folder, n) for folder, _, names in os.walk(os.path.join(out, "tutorials"))
                 for n in names if n.endswith(".ipynb")]
    cells = sum(strip_solution_cells(nb) for nb in notebooks)
    record = {"assignment": assignment.id, "title": assignment.title, "notebook": assignment.notebook,
              "tests": assignment.tests, "stubbed": stubbed, "solution_cells_stripped": cells}
    write_json_atomic(os.path.join(out, RELEASE_FILE), record)
    return record


def read_release(folder: str) -> dict:
    path = os.path.join(folder, RELEASE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {folder} is not a folder written by `tinylora course release`")
    return require_fields(read_json(path), path, {"assignment": str})


def solve(folder: str, tasks=None, repo: str | None = None) -> list:
    """Put the reference bodies of `tasks` (default: all) back into the release in `folder`; return them."""
    record = read_release(folder)
    repo = repo or repository_root()
    restored = []
    for entry in record["stubbed"]:
        if tasks is not None and entry["task"] not in tasks:
            continue
        body = get_body(_read(os.path.join(repo, entry["file"])), entry["function"])
        target = os.path.join(folder, entry["file"])
        _write(target, replace_body(_read(target), entry["function"], body))
        restored.append(entry)
    return restored
