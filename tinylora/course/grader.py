"""The autograder: score a submission's listed functions with the instructor's tests, in a tree it builds.

    grade("submissions/alice", "A2")              every task of A2
    grade("submissions/alice", "A2", tasks=[3])   task 3 alone

The instructor names the assignment; the submission's COURSE_RELEASE.json, tests, conftests and every
other file are never read. For each grading:

  1. tree.py builds a clean release of the assignment from the instructor's reference in a scratch folder
     and copies in only the bodies of the functions the manifest lists (a body that does not parse or
     compile leaves the stub and zeroes its task, with file and line; grading goes on);
  2. the instructor's tests are collected once from the clean tree: the grader, not the submission, knows
     which tests each task has (the denominator);
  3. sandbox.py runs them in a fresh `python -I -S` process that cannot import or open the reference,
     cannot start processes, and reports each test through a pipe; every test has its own time limit;
     after a time-out or a crash the process group and any escaped process are killed, and the remaining
     tests run in a new process (the rest of the task whose test timed out or crashed fails, unrun);
  4. a task scores (tests passed) / (tests collected) × 1 point. Passed means passed: skipped, xfailed
     and errored tests, and tests that never reported, are failures.

A failed task's note names the first failed test, why it failed, and the command that reruns it in the
student's folder. `grade()` returns the scores and can write them as JSON ({"score", "max_score",
"execution_time", "tests": [{"name", "score", "max_score", "output"}]}, what Gradescope and other LMS
autograders import), atomically, to a path the instructor names.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

from tinylora.course.assignments import Assignment, get_assignment
from tinylora.course.release import read_text, repository_root
from tinylora.course.sandbox import become_subreaper, run_pytest
from tinylora.course.tree import clean_tree, take_bodies
from tinylora.io import write_json_atomic

_COLLECTED = {}  # (reference, assignment, tests' text) -> {nodeid: [task markers]}


def blocked_folders(repo: str, submission: str) -> list:
    """What the test process may not open: the reference package, its history and tests, the submission."""
    return [os.path.join(repo, name) for name in ("tinylora", ".git", "tests", "tutorials")] + [submission]


def collect(assignment: Assignment, tree: str, repo: str, scratch: str, blocked: list) -> dict:
    """{nodeid: [task markers]} of the assignment's tests, collected from the clean tree (cached)."""
    support = "".join(read_text(os.path.join(tree, p)) for p in (assignment.tests, "tests/conftest.py"))
    key = (os.path.realpath(repo), assignment.id, hashlib.sha256(support.encode()).hexdigest())
    if key not in _COLLECTED:
        markers = " or ".join(assignment.marker(t) for t in assignment.tasks)
        run = run_pytest(tree, assignment.tests, markers, scratch, blocked, collect_only=True, timeout=120)
        if not run.collected:
            raise RuntimeError(f"grade: the instructor's tests {assignment.tests} collect nothing from the clean "
                               f"release: {(run.collect_errors or [run.log])[-1][-500:]}")
        _COLLECTED[key] = run.collected
    return _COLLECTED[key]


def failure_line(text: str) -> str:
    """The line that explains a failure: the NotImplementedError's text, else the first `E ` line."""
    lines = [line[1:].strip() for line in (text or "").splitlines() if line.startswith("E ")]
    for line in lines:
        if "NotImplementedError" in line:
            return line[:300]
    if lines:
        return lines[0][:300]
    last = (text or "").strip().splitlines()
    return last[-1][:300] if last else ""


def run_tests(tree: str, assignment: Assignment, wanted: list, scratch: str, blocked: list, task_of: dict,
              timeout: float) -> dict:
    """{nodeid: (passed, note)} for the `wanted` tests, restarting the process after a time-out or crash."""
    results = {}
    markers = " or ".join(sorted({task_of[n] for n in wanted}))
    while len(results) < len(wanted):
        run = run_pytest(tree, assignment.tests, markers, scratch, blocked, timeout=timeout,
                         deselect=[n for n in results])
        for nodeid, result in run.results.items():
            if nodeid in wanted and nodeid not in results:
                passed = result["outcome"] == "passed"
                note = "" if passed else failure_line(result["text"])
                if result["outcome"] in ("skipped", "xfailed"):
                    note = f"{result['outcome']} (counts as failed): {note}"
                results[nodeid] = (passed, note or result["outcome"])
        if len(results) == len(wanted):
            break
        culprit = run.started if run.started in wanted and run.started not in results else None
        if culprit is None:  # no test was running: the process failed before or between tests
            why = (run.collect_errors[-1].strip().splitlines()[-1] if run.collect_errors else
                   (run.log.strip().splitlines() or ["the test process ended without reporting"])[-1])
            for nodeid in wanted:
                results.setdefault(nodeid, (False, f"did not run: {why[:300]}"))
            break
        if run.timed_out:
            results[culprit] = (False, f"timed out after {timeout:g} s")
        else:
            results[culprit] = (False, "the test process died during this test: " +
                                (run.log.strip().splitlines() or ["no output"])[-1][:200])
        what = "timed out" if run.timed_out else "crashed the test process"
        for nodeid in wanted:  # the rest of that task would most likely do the same: not run, failed
            if task_of[nodeid] == task_of[culprit]:
                results.setdefault(nodeid, (False, f"not run: an earlier test of this task {what}"))
    return results


def rerun_command(assignment: Assignment, nodeid: str) -> str:
    return f"python -m pytest -q {assignment.tests}::{nodeid.split('::', 1)[-1]}"


def grade(submission: str, assignment, tasks=None, timeout: float = 30.0, json_path: str | None = None,
          verbose: bool = False, repo: str | None = None) -> dict:
    """Grade the listed bodies in `submission` against `assignment`; return (and maybe write) the scores."""
    started = time.monotonic()
    assignment = get_assignment(assignment) if not isinstance(assignment, Assignment) else assignment
    if not os.path.isdir(submission):
        raise FileNotFoundError(f"grade: submission folder {submission} not found")
    if timeout <= 0:
        raise ValueError(f"grade: timeout must be positive, got {timeout}")
    chosen = [t for t in assignment.tasks if tasks is None or t.number in set(tasks)]
    if tasks is not None and len(chosen) != len(set(tasks)):
        raise KeyError(f"grade: {assignment.id} has no task {sorted(set(tasks) - {t.number for t in chosen})}")
    repo = repo or repository_root()
    submission = os.path.realpath(submission)
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="tinylora-grade-") as scratch:
        tree = os.path.join(scratch, "tree")
        blocked = blocked_folders(repo, submission)
        clean_tree(assignment, tree, repo)
        collected = collect(assignment, tree, repo, scratch, blocked)
        problems = take_bodies(assignment, submission, tree)
        task_of = {n: marks[0] for n, marks in collected.items() if marks}
        wanted = [n for n, mark in task_of.items()
                  if any(mark == assignment.marker(t) and t.number not in problems for t in chosen)]
        results = run_tests(tree, assignment, wanted, scratch, blocked, task_of, timeout) if wanted else {}
    rows = []
    for task in chosen:
        ids = [n for n, mark in task_of.items() if mark == assignment.marker(task)]
        passed = sum(results.get(n, (False, ""))[0] for n in ids)
        note = problems.get(task.number, "")
        failed = [n for n in ids if n in results and not results[n][0]]
        if not note and failed:
            note = f"{failed[0].split('::')[-1]}: {results[failed[0]][1]} (rerun: {rerun_command(assignment, failed[0])})"
        if not ids:
            note = f"no tests collected for {assignment.marker(task)}"
        score = 0.0 if task.number in problems or not ids else passed / len(ids)
        rows.append({"name": f"{assignment.id} task {task.number}: {task.title}", "task": task.number,
                     "score": round(score, 4), "max_score": 1.0, "passed": 0 if task.number in problems else passed,
                     "total": len(ids), "output": note})
    scores = {"assignment": assignment.id, "score": round(sum(r["score"] for r in rows), 4),
              "max_score": float(len(rows)), "execution_time": round(time.monotonic() - started, 1), "tests": rows}
    if json_path:
        write_json_atomic(json_path, scores)
    if verbose:
        print(format_table(scores))
    return scores


def format_table(scores: dict) -> str:
    lines = [f"{'task':<34} {'tests':>7} {'score':>6}  note"]
    for row in scores["tests"]:
        lines.append(f"{row['name'][:34]:<34} {row['passed']:>3}/{row['total']:<3} {row['score']:>6.2f}  {row['output']}")
    lines.append(f"{scores['assignment'] + ' total':<34} {'':>7} {scores['score']:>6.2f} / {scores['max_score']:g}"
                 f"   ({scores['execution_time']:g} s)")
    return "\n".join(lines)
