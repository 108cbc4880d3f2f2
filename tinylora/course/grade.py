"""The offline autograder: run each task's tests in a student's copy and score them.

For every task of the assignment, one fresh `python -m pytest -m aN_taskM` process runs in the student's
folder with the student's package first on the path (never the installed reference: a grader that imports
the instructor's code passes everyone), under a time limit. A task scores the fraction of its tests that
pass, times its points (1 by default). Its message says why it lost points:

    a stub still there      the NotImplementedError's text ("A1 task 2: ...")
    a crash or wrong value  the first line of the first failure
    past the time limit     "timed out after N s"
    no tests ran            an error: a task whose tests never run cannot be graded

`grade()` returns the scores and can write them as JSON in the shape LMS autograders import
({"score", "max_score", "tests": [{"name", "score", "max_score", "output"}]}).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

from tinylora.course.assignments import get_assignment
from tinylora.course.release import read_release
from tinylora.io import write_json_atomic


def student_env(folder: str) -> dict:
    """The environment a student's tests run in: their folder first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(folder) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_student_copy(folder: str) -> None:
    """Refuse to grade if `import tinylora` in `folder` would not load the student's own files."""
    done = subprocess.run([sys.executable, "-c", "import tinylora; print(tinylora.__file__)"], cwd=folder,
                          env=student_env(folder), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"grade: `import tinylora` fails in {folder}: {last}")
    loaded = os.path.realpath(done.stdout.strip())
    if not loaded.startswith(os.path.realpath(folder) + os.sep):
        raise RuntimeError(f"grade: `import tinylora` in {folder} loads {loaded}, not the student's copy")


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def _failure_message(case) -> str:
    """The line that explains a failed test case: a NotImplementedError's text if there is one."""
    for tag in ("failure", "error"):
        node = case.find(tag)
        if node is None:
            continue
        text = (node.get("message") or "") + "\n" + (node.text or "")
        for line in text.splitlines():
            if "NotImplementedError" in line:
                return line.strip().removeprefix("E").strip()[:300]
        return _first_line(node.get("message") or node.text)
    return ""


def run_task(folder: str, tests: str, marker: str, timeout: float) -> dict:
    """Run the tests of one task; return passed, total and the first failure's message."""
    with tempfile.TemporaryDirectory() as scratch:
        report = os.path.join(scratch, "report.xml")
        command = [sys.executable, "-m", "pytest", tests, "-m", marker, "-q", "-p", "no:cacheprovider",
                   "-o", "addopts=", f"--junitxml={report}"]
        try:
            done = subprocess.run(command, cwd=folder, env=student_env(folder), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"passed": 0, "total": 0, "message": f"timed out after {timeout:g} s"}
        if not os.path.isfile(report):
            return {"passed": 0, "total": 0, "message": "pytest did not run: " + _first_line(done.stderr or done.stdout)}
        cases = [c for c in ET.parse(report).getroot().iter("testcase") if c.find("skipped") is None]
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    message = _failure_message(failed[0]) if failed else ""
    if not cases:
        message = _first_line(done.stdout.splitlines()[-1] if done.stdout.strip() else done.stderr) or "no tests ran"
        message = f"no tests ran for {marker}: {message}"
    return {"passed": len(cases) - len(failed), "total": len(cases), "message": message}


def grade(folder: str, assignment=None, timeout: float = 300, json_path: str | None = None, tasks=None,
          verbose: bool = False) -> dict:
    """Grade the student's copy in `folder` task by task; print a table if `verbose`; return the scores."""
    assignment = get_assignment(assignment or read_release(folder)["assignment"])
    check_imports_student_copy(folder)
    rows = []
    for task in assignment.tasks:
        if tasks is not None and task.number not in tasks:
            continue
        result = run_task(folder, assignment.tests, assignment.marker(task), timeout)
        score = result["passed"] / result["total"] if result["total"] else 0.0
        rows.append({"name": f"{assignment.id} task {task.number}: {task.title}", "task": task.number,
                     "score": round(score, 4), "max_score": 1.0, "passed": result["passed"],
                     "total": result["total"], "output": result["message"]})
    scores = {"assignment": assignment.id, "score": round(sum(r["score"] for r in rows), 4),
              "max_score": float(len(rows)), "tests": rows}
    if json_path:
        write_json_atomic(json_path, scores)
    if verbose:
        print(format_table(scores))
    return scores


def format_table(scores: dict) -> str:
    lines = [f"{'task':<34} {'tests':>7} {'score':>6}  note"]
    for row in scores["tests"]:
        lines.append(f"{row['name'][:34]:<34} {row['passed']:>3}/{row['total']:<3} {row['score']:>6.2f}  {row['output']}")
    lines.append(f"{scores['assignment'] + ' total':<34} {'':>7} {scores['score']:>6.2f} / {scores['max_score']:g}")
    return "\n".join(lines)
