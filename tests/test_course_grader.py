"""The grader cannot be steered by a submission: every known way to raise an unsolved release's score scores 0.

Each cheat is applied to an unsolved A1 release (or a solved one, where the point is that a correct
submission keeps its marks) and graded with `--task 1` (unbroadcast) to stay fast. The fast tests check
the graded tree's surgery without running a grader.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tinylora.course import grade, release
from tinylora.course.release import RELEASE_FILE, read_text, repository_root, write_text
from tinylora.course.solve import solve
from tinylora.course.stubs import get_body, replace_body
from tinylora.course.tree import take_body

UTIL = "tinylora/engine/ops/_util.py"
TESTS = "tests/course/test_a1_ops.py"


@pytest.fixture(scope="module")
def unsolved(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("release") / "A1")
    release("A1", folder)
    return folder


def copy_of(folder, tmp_path, name="student"):
    out = str(tmp_path / name)
    shutil.copytree(folder, out, symlinks=True)
    return out


def set_body(folder, body, path=UTIL, qualname="unbroadcast"):
    target = os.path.join(folder, path)
    write_text(target, replace_body(read_text(target), qualname, textwrap.indent(textwrap.dedent(body), "    ")))


def task_one(folder, **kw):
    return grade(folder, "A1", tasks=[1], timeout=kw.pop("timeout", 20), **kw)["tests"][0]


# ------------------------------------------------------------------ the graded tree (fast)
def test_a_body_that_escapes_its_function_is_not_taken(tmp_path):
    submission, tree = tmp_path / "s", tmp_path / "t"
    for root, body in ((submission, "    return 1\nSTOLEN = 2\n"), (tree, "    raise NotImplementedError\n")):
        (root / "pkg").mkdir(parents=True)
        (root / "pkg/m.py").write_text(f"def f():\n    \"\"\"doc\"\"\"\n{body}\n\ndef g():\n    return 0\n")
    note = take_body(str(submission), str(tree), "pkg/m.py", "f")
    assert note is None, "a plain body must be taken"
    assert "STOLEN" not in (tree / "pkg/m.py").read_text(), "only the function's own statements may be copied"
    (submission / "pkg/m.py").write_text("def f():\n    nonlocal x\n    return x\n\ndef g():\n    return 0\n")
    note = take_body(str(submission), str(tree), "pkg/m.py", "f")
    assert note and note.startswith("pkg/m.py:2:"), f"a body that does not compile is refused with file:line, got {note}"


def test_a_syntax_error_names_the_file_and_line(tmp_path):
    (tmp_path / "s/pkg").mkdir(parents=True)
    (tmp_path / "s/pkg/m.py").write_text("def f():\n    return (\n")
    note = take_body(str(tmp_path / "s"), str(tmp_path), "pkg/m.py", "f")
    assert note.startswith("pkg/m.py:2: SyntaxError"), f"the note must name file and line, got {note}"


# ------------------------------------------------------------------ cheats that must score 0 (slow)
CHEATING_BODIES = {
    "skip": "import pytest\npytest.skip('later')\n",
    "xfail": "import pytest\npytest.xfail('later')\n",
    "exit_pytest": "import pytest\npytest.exit('done', returncode=0)\n",
    "exit_process": "import os\nos._exit(0)\n",
    "system_exit": "raise SystemExit(0)\n",
    "loop": "while True:\n    pass\n",
    "subprocess": "import subprocess\nsubprocess.run(['true'])\nreturn grad\n",
    "patch_numpy_testing": ("import numpy.testing\nnumpy.testing.assert_allclose = lambda *a, **k: None\n"
                            "return grad.sum(axis=tuple(range(grad.ndim - len(shape))) or None).reshape(shape)"
                            " if len(shape) else grad.sum()\n"),
    "forge_pipe": ("import json, os\nfor fd in os.listdir('/proc/self/fd'):\n"
                   "    try:\n        os.write(int(fd), (json.dumps({'test': 'tests/course/test_a1_ops.py::"
                   "test_unbroadcast_of_the_same_shape_changes_nothing', 'outcome': 'passed'}) + '\\n').encode())\n"
                   "    except OSError:\n        pass\nraise NotImplementedError\n"),
}


@pytest.mark.slow
@pytest.mark.parametrize("cheat", sorted(CHEATING_BODIES))
def test_a_body_that_cheats_scores_zero(cheat, unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    set_body(student, CHEATING_BODIES[cheat])
    row = task_one(student, timeout=5)
    assert row["score"] == 0, f"a body that does `{cheat}` must not pass a single test: {row}"
    assert row["total"] == 7, "the grader, not the submission, says how many tests a task has"


@pytest.mark.slow
def test_loading_the_reference_by_path_is_refused(unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    reference = os.path.join(repository_root(), UTIL)
    set_body(student, f"""\
        import importlib.util
        spec = importlib.util.spec_from_file_location("ref", {reference!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.unbroadcast(grad, shape)
        """)
    row = task_one(student)
    assert row["score"] == 0 and "may not open" in row["output"], \
        f"the reference's files must not open inside the graded process: {row}"


@pytest.mark.slow
def test_solve_is_absent_from_a_release_and_refuses_there(unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    assert not os.path.exists(os.path.join(student, "tinylora/course/solve.py")), "a release ships no solve"
    env = dict(os.environ, PYTHONPATH=student)
    done = subprocess.run([sys.executable, "-c", "from tinylora.cli import main; main(['course', 'solve', '.'])"],
                          cwd=student, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "invalid choice" in done.stderr, "`course solve` must not exist in a release"
    with pytest.raises(RuntimeError, match="is a course release"):
        solve(student, repo=student)
    assert task_one(student)["score"] == 0


@pytest.mark.slow
def test_the_submissions_tests_conftests_and_reports_are_never_read(unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    tests = os.path.join(student, TESTS)
    module = ast.parse(read_text(tests))
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            node.body = [ast.Pass()]  # every released test passes whatever the code does
    write_text(tests, ast.unparse(module))
    hooks = textwrap.dedent("""\
        import pytest

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(item, call):
            outcome = yield
            report = outcome.get_result()
            report.outcome = "passed"

        def pytest_pyfunc_call(pyfuncitem):
            return True

        def pytest_sessionfinish(session):
            open("report.xml", "w").write('<testsuite tests="7" failures="0"/>')
        """)
    for where in ("conftest.py", "tests/conftest.py", "tests/course/conftest.py"):
        write_text(os.path.join(student, where), hooks)
    bomb = '<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY a{i} "{"&a;" * 10 if i == 0 else f"&a{i - 1};" * 10}">' for i in range(9)) + ']><b>&a8;</b>'
    write_text(os.path.join(student, "report.xml"), bomb)
    record = json.loads(read_text(os.path.join(student, RELEASE_FILE)))
    write_text(os.path.join(student, RELEASE_FILE), json.dumps(dict(record, assignment="A5", stubbed=[])))
    row = task_one(student)
    assert row["score"] == 0, f"tests, conftests, junit files and metadata of the submission must not count: {row}"


@pytest.mark.slow
def test_edited_release_metadata_changes_nothing(tmp_path):
    folder = str(tmp_path / "A5")
    release("A5", folder)
    record = json.loads(read_text(os.path.join(folder, RELEASE_FILE)))
    write_text(os.path.join(folder, RELEASE_FILE), json.dumps(dict(record, assignment="A1", stubbed=[])))
    scores = grade(folder, "A5", tasks=[1])
    assert scores["score"] == 0, f"an A5 release relabelled A1 is still graded as the instructor says: {scores}"


FORK = """\
    import ctypes, os, time
    pid = ctypes.CDLL(None).fork()  # through libc: no audit event, so only the grader's kill can stop it
    if pid == 0:
        os.setsid()  # out of the test process's group
        with open({pidfile!r}, "w") as f:
            f.write(str(os.getpid()))
        {wait}
        with open({scores!r}, "w") as f:
            f.write('{{"score": 1.0}}')
        with open({forged!r}, "w") as f:
            f.write("forged")
        os._exit(0)
    """
WAIT_FOR_SCORES = "while not os.path.exists({scores!r}): time.sleep(0.05)"  # then rewrite them


@pytest.mark.slow
def test_a_detached_child_is_killed_before_scores_are_written(unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    scores, forged, pidfile = tmp_path / "scores.json", tmp_path / "forged", tmp_path / "pid"
    wait = WAIT_FOR_SCORES.format(scores=str(scores))
    set_body(student, FORK.format(pidfile=str(pidfile), wait=wait, scores=str(scores), forged=str(forged)) +
             "raise NotImplementedError\n")
    row = task_one(student, json_path=str(scores))
    time.sleep(2)
    assert row["score"] == 0 and json.loads(scores.read_text())["score"] == 0, \
        "a process the submission left behind must be dead before the grader writes scores"
    assert not forged.exists()


@pytest.mark.slow
def test_a_child_holding_the_pipe_neither_stalls_nor_zeroes_a_correct_submission(unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    solve(student, tasks={1})
    body = get_body(read_text(os.path.join(repository_root(), UTIL)), "unbroadcast")
    pidfile = tmp_path / "pid"
    fork = FORK.format(pidfile=str(pidfile), wait="time.sleep(60)", scores=str(tmp_path / "never"),
                       forged=str(tmp_path / "never"))
    set_body(student, "import builtins\nif not hasattr(builtins, 'forked'):\n    builtins.forked = 1\n" +
             textwrap.indent(textwrap.dedent(fork), "    ") + textwrap.dedent(body) + "\n")
    started = time.monotonic()
    row = task_one(student)
    assert row["score"] == 1.0, f"a correct body keeps its marks when it leaves a process behind: {row}"
    assert time.monotonic() - started < 60, "the grader must not wait for a process holding its pipe"
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower() \
        or " Z " in open(f"/proc/{pid}/stat").read(), "the left-behind process must be killed"


@pytest.mark.slow
def test_a_syntax_error_zeroes_its_tasks_and_grading_goes_on(unsolved, tmp_path):
    student = copy_of(unsolved, tmp_path)
    solve(student)
    path = os.path.join(student, "tinylora/engine/ops/matmul.py")
    write_text(path, read_text(path) + "\ndef broken(:\n")
    scores = grade(student, "A1")
    by_task = {r["task"]: r for r in scores["tests"]}
    assert by_task[4]["score"] == 0 and "tinylora/engine/ops/matmul.py:" in by_task[4]["output"] \
        and "SyntaxError" in by_task[4]["output"], f"the note names file and line: {by_task[4]}"
    assert all(by_task[n]["score"] == 1 for n in (1, 2, 3)), f"tasks in other files are still graded: {scores}"
