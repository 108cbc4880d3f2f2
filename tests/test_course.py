"""The course works: stubs are exact source surgery; every assignment's release is unsolved, gradeable and
solvable by the reference (what a grader whose tests never run, or a release that ships solutions, would fail).
"""

import json
import os
import textwrap

import pytest

from tinylora.course import ASSIGNMENTS, grade, release
from tinylora.course.release import INSTRUCTOR_ONLY, repository_root
from tinylora.course.solve import solve
from tinylora.course.stubs import get_body, replace_body, stub

SOURCE = textwrap.dedent('''\
    import math


    def plain(x):
        return x + 1


    class Op:
        """An op."""

        @staticmethod
        def forward(a,
                    b):
            """y = a b, over two lines of signature."""
            # a comment that is part of the body
            y = a * b
            return y

        def backward(self, grad):
            return grad * 2  # no docstring
    ''')


def test_stub_keeps_signature_and_docstring_and_raises_with_the_task_text():
    out = stub(SOURCE, "Op.forward", "A9 task 1: write it")
    namespace = {}
    exec(compile(out, "x.py", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="A9 task 1: write it"):
        namespace["Op"].forward(1, 2)
    assert '"""y = a b, over two lines of signature."""' in out and "@staticmethod" in out
    assert "a * b" not in out and "a comment that is part of the body" not in out
    assert namespace["Op"]().backward(3) == 6 and namespace["plain"](1) == 2  # the rest untouched


def test_replace_body_puts_the_reference_back_exactly():
    for name in ("plain", "Op.forward", "Op.backward"):
        stubbed = stub(SOURCE, name, "A9 task 1")
        assert replace_body(stubbed, name, get_body(SOURCE, name)) == SOURCE


def test_unknown_names_are_clear_errors():
    with pytest.raises(LookupError, match="Op.missing: no definition named 'missing'"):
        stub(SOURCE, "Op.missing", "x")
    with pytest.raises(LookupError, match="is a class"):
        stub(SOURCE, "Op", "x")


def test_every_task_names_functions_that_exist_and_have_tests():
    root = repository_root()
    for assignment in ASSIGNMENTS:
        tests = open(os.path.join(root, assignment.tests), encoding="utf-8").read()
        assert os.path.isfile(os.path.join(root, assignment.notebook)), assignment.notebook
        for task in assignment.tasks:
            assert f"pytest.mark.{assignment.marker(task)}" in tests, f"{assignment.message(task)} has no tests"
            assert all(n != task.number and n in [t.number for t in assignment.tasks] for n in task.needs), \
                f"{assignment.message(task)}: needs must name other tasks of {assignment.id}"
            for path, qualname in task.functions:
                get_body(open(os.path.join(root, path), encoding="utf-8").read(), qualname)  # raises if missing


def _text_files(folder):
    for base, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__", ".pytest_cache", ".hypothesis")]
        for name in names:
            if name.endswith((".py", ".ipynb", ".md", ".txt", ".json", ".toml")):
                yield os.path.join(base, name)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_release_is_unsolved_gradeable_and_solvable(assignment, tmp_path):
    root = repository_root()
    out = str(tmp_path / assignment.id)
    record = release(assignment, out)

    # no solution text anywhere in the release: no removed body, and no solution cell in any notebook
    bodies = {(e["file"], e["function"]): get_body(open(os.path.join(root, e["file"]), encoding="utf-8").read(),
                                                   e["function"]) for e in record["stubbed"]}
    assert not any(os.path.exists(os.path.join(out, p)) for p in INSTRUCTOR_ONLY if "*" not in p), \
        "a release ships no instructor-only file (solve, the wrong-solution catalogue)"
    for path in _text_files(out):
        text = open(path, encoding="utf-8").read()
        for (file, function), body in bodies.items():
            assert textwrap.dedent(body).strip() not in textwrap.dedent(text), \
                f"a release must not ship a stubbed function's solution: {function}'s body is in {path}"
        if path.endswith(".ipynb"):
            for cell in json.loads(text)["cells"]:
                if "solution" in cell.get("metadata", {}).get("tags", []):
                    assert "".join(cell["source"]).startswith("# YOUR CODE HERE"), f"solution cell left in {path}"

    # unsolved: every task scores 0 with its own NotImplementedError (tasks with needs: once those are solved)
    independent = [t.number for t in assignment.tasks if not t.needs]
    scores = grade(out, assignment.id, tasks=independent)
    for row in scores["tests"]:
        assert row["total"] > 0, f"{row['name']}: no tests ran"
        assert row["score"] == 0 and f"NotImplementedError: {assignment.id} task {row['task']}:" in row["output"], row
    for needs in sorted({t.needs for t in assignment.tasks if t.needs}):  # a fresh copy per set of prerequisites
        partly = str(tmp_path / f"{assignment.id}-after-{'-'.join(map(str, needs))}")
        release(assignment, partly)
        solve(partly, tasks=set(needs))
        for row in grade(partly, assignment.id, tasks=[t.number for t in assignment.tasks if t.needs == needs])["tests"]:
            assert row["total"] > 0 and row["score"] == 0, row
            assert f"NotImplementedError: {assignment.id} task {row['task']}:" in row["output"], row

    # solved with the reference bodies: full marks
    solve(out)
    scores = grade(out, assignment.id, json_path=str(tmp_path / "scores.json"))
    assert scores["score"] == scores["max_score"] == len(assignment.tasks), scores
    assert json.loads((tmp_path / "scores.json").read_text())["score"] == scores["score"]


def _guard_source(notebook):
    cells = json.load(open(notebook, encoding="utf-8"))["cells"]
    guards = [c for c in cells if "release-guard" in c.get("metadata", {}).get("tags", [])]
    assert len(guards) == 1 and cells.index(guards[0]) == 1, f"{notebook}: the release guard must be its first code cell"
    return "".join(guards[0]["source"])


@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_a_handout_refuses_a_tinylora_from_another_folder(assignment, tmp_path, monkeypatch):
    source = _guard_source(os.path.join(repository_root(), assignment.notebook))
    monkeypatch.chdir(os.path.join(repository_root(), "tutorials", "course"))
    exec(compile(source, "guard", "exec"), {})  # its own repository's tinylora: runs
    elsewhere = tmp_path / "tutorials" / "course"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    with pytest.raises(RuntimeError, match="this handout belongs to the tinylora in"):
        exec(compile(source, "guard", "exec"), {})  # a release whose own tinylora is not the one imported
