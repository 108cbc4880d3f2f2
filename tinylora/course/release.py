"""Write a student's copy of the repository for one assignment: its tasks stubbed, and every later one's.

    release("A2", "out/A2")     copy the repository; stub the functions of A2 and of A3..A6 (a student who
                                does the course in order fills them in order; nothing of a later assignment
                                ships solved), and the fast paths that compute a stubbed task's answer;
                                strip the handout's solution cells; write out/A2/COURSE_RELEASE.json

A release carries no instructor-only file (INSTRUCTOR_ONLY): no `solve`, no catalogue of wrong solutions
(its edits quote reference lines), no tests of the course machinery. The grader (grader.py) builds the
same clean copy for itself, so what a student's folder holds beyond the listed bodies never matters.

A handout's solution cells are the code cells tagged "solution" (cell metadata "tags"): in the release
their source becomes a `# YOUR CODE HERE` stub.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess

from tinylora.course.assignments import ASSIGNMENTS, Assignment, get_assignment
from tinylora.course.stubs import stub
from tinylora.io import read_json, require_fields, write_json_atomic

RELEASE_FILE = "COURSE_RELEASE.json"
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "runs", "build", "dist", ".ipynb_checkpoints"}
INSTRUCTOR_ONLY = ("tinylora/course/solve.py", "tinylora/course/wrong_solutions.py", "tests/test_course*.py")


def repository_root() -> str:
    """The repository the running package sits in (the reference the course is generated from)."""
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


def instructor_only(path: str) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in INSTRUCTOR_ONLY)


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def stubbed_functions(assignment: Assignment) -> list:
    """What a release of `assignment` stubs: its tasks, every later assignment's (less its `keeps`), and
    their fast paths.

    One entry per function: {"assignment", "task", "file", "function", "message"}; a fast path's entry says
    so in its message (it is never a student's to write: the grader runs with TINYLORA_KERNELS=0)."""
    later = ASSIGNMENTS[[a.id for a in ASSIGNMENTS].index(assignment.id):]
    entries = []
    for owner in later:
        for task in owner.tasks:
            if (owner.id, task.number) in assignment.keeps:
                continue
            for path, qualname in task.functions:
                entries.append({"assignment": owner.id, "task": task.number, "file": path, "function": qualname,
                                "message": owner.message(task)})
            for path, qualname in task.copies:
                entries.append({"assignment": owner.id, "task": task.number, "file": path, "function": qualname,
                                "message": f"a fast path of {owner.id} task {task.number}, removed from the course "
                                           "release: run with TINYLORA_KERNELS=0", "copy": True})
    return entries


def copy_and_stub(assignment: Assignment, out: str, repo: str, files) -> list:
    """Copy `files` (paths from `repo`) into `out` and stub what `stubbed_functions` lists; return the list."""
    for rel in files:
        os.makedirs(os.path.dirname(os.path.join(out, rel)) or out, exist_ok=True)
        shutil.copy2(os.path.join(repo, rel), os.path.join(out, rel))
    entries = stubbed_functions(assignment)
    for entry in entries:
        target = os.path.join(out, entry["file"])
        write_text(target, stub(read_text(target), entry["function"], entry["message"]))
    return entries


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
        write_text(notebook_path, json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return stripped


def release(assignment: Assignment | str, out: str, repo: str | None = None) -> dict:
    """Write the student copy of `assignment` to the new folder `out`; return what was stubbed."""
    assignment = get_assignment(assignment) if isinstance(assignment, str) else assignment
    repo = repo or repository_root()
    if os.path.exists(os.path.join(repo, RELEASE_FILE)):
        raise RuntimeError(f"tinylora course release: {repo} is itself a course release; release from the reference")
    if os.path.exists(out) and os.listdir(out):
        raise FileExistsError(f"tinylora course release: {out} exists and is not empty; choose a new folder")
    files = [p for p in repository_files(repo) if not instructor_only(p)]
    stubbed = copy_and_stub(assignment, out, repo, files)
    notebooks = [os.path.join(folder, n) for folder, _, names in os.walk(os.path.join(out, "tutorials"))
                 for n in names if n.endswith(".ipynb")]
    cells = sum(strip_solution_cells(nb) for nb in notebooks)
    record = {"assignment": assignment.id, "title": assignment.title, "notebook": assignment.notebook,
              "tests": assignment.tests, "solution_cells_stripped": cells,
              "stubbed": [{k: e[k] for k in ("assignment", "task", "file", "function")} for e in stubbed]}
    write_json_atomic(os.path.join(out, RELEASE_FILE), record)
    return record


def read_release(folder: str) -> dict:
    path = os.path.join(folder, RELEASE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {folder} is not a folder written by `tinylora course release`")
    return require_fields(read_json(path), path, {"assignment": str, "stubbed": list})
