"""The graded tree: a clean copy of the release the grader builds itself, holding only a student's bodies.

    clean_tree(assignment, out)              tinylora/ (the assignment and every later one stubbed, as in a
                                             release), the assignment's tests, the tests' helpers and config,
                                             all from the instructor's reference
    take_bodies(assignment, submission, out) for every function the manifest lists for the assignment, the
                                             body (the statements after the docstring) from the student's
                                             file, and nothing else: no decorator, default, import, helper,
                                             test, conftest or metadata of theirs is read

A body that cannot be taken leaves the stub in place and a note for its task, with the file and line:
the student's file does not parse (SyntaxError), the function is missing or has no body, or the body does
not compile where it goes (e.g. `nonlocal` in a method). After an insertion the file must parse to the
clean module with exactly that function's body replaced, so no body can reach outside its function.
"""

from __future__ import annotations

import ast
import os
import textwrap

from tinylora.course.assignments import Assignment
from tinylora.course.release import copy_and_stub, instructor_only, read_text, repository_files, write_text
from tinylora.course.stubs import body_span, find_function, replace_body

TEST_SUPPORT = ("pyproject.toml", "tests/conftest.py", "tests/gradcheck.py")


def clean_tree(assignment: Assignment, out: str, repo: str) -> None:
    """Write the grader's own release of `assignment` (package, tests, test helpers) into `out`."""
    files = [p for p in repository_files(repo) if p.startswith("tinylora/") and not instructor_only(p)]
    copy_and_stub(assignment, out, repo, files + list(TEST_SUPPORT) + [assignment.tests])


def _statements(func: ast.FunctionDef) -> list:
    """The body's statements after the docstring, as ast.dump strings (no positions)."""
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return [ast.dump(statement) for statement in body]


def _without_body(source: str, qualname: str) -> str:
    """ast.dump of the module with `qualname`'s body emptied: what must not change when a body goes in."""
    module = ast.parse(source)
    find_function(module, qualname).body = []
    return ast.dump(module)


def take_body(submission: str, out: str, path: str, qualname: str) -> str | None:
    """Copy one function's body from the submission into the graded tree; return why not, or None."""
    source_path = os.path.join(submission, path)
    if not os.path.isfile(source_path):
        return f"{path} is missing from the submission"
    try:
        source = read_text(source_path)
        student = ast.parse(source, filename=path)
    except SyntaxError as err:
        return f"{path}:{err.lineno}: SyntaxError: {err.msg} (every task with a function in this file scores 0)"
    except (UnicodeDecodeError, ValueError) as err:
        return f"{path}: cannot be read as Python source: {err}"
    try:
        student_func = find_function(student, qualname)
        first, last, indent = body_span(source, qualname)
    except LookupError as err:
        return f"{path}: {err}"
    body = "".join(source.splitlines(keepends=True)[first:last])
    target = read_text(os.path.join(out, path))
    _, _, target_indent = body_span(target, qualname)
    if indent != target_indent:
        body = textwrap.indent(textwrap.dedent(body), target_indent)
    graded = replace_body(target, qualname, body)
    where = f"{path}:{student_func.lineno} ({qualname})"
    try:
        module = ast.parse(graded)
        same = _statements(find_function(module, qualname)) == _statements(student_func) and \
            _without_body(graded, qualname) == _without_body(target, qualname)
        compile(graded, path, "exec")
    except SyntaxError as err:
        line = first + (err.lineno or 0) - body_span(target, qualname)[0]
        return f"{path}:{line}: {qualname}'s body does not compile inside the function: {err.msg}"
    except LookupError:
        same = False
    if not same:
        return f"{where}: the body does not stay inside the function when copied (check its indentation)"
    write_text(os.path.join(out, path), graded)
    return None


def take_bodies(assignment: Assignment, submission: str, out: str) -> dict:
    """Copy every listed body of `assignment`; return {task number: the first note of what went wrong}."""
    problems = {}
    for task in assignment.tasks:
        for path, qualname in task.functions:
            note = take_body(submission, out, path, qualname)
            if note:
                problems.setdefault(task.number, note)
    return problems
