"""Every task can be solved from its own prerequisites, and every catalogued wrong solution loses marks.

For each assignment: a release; for each task, a copy where only the task and its declared `needs` are
solved must score full marks on that task (graded alone, `--task N`); then each wrong solution of the task
(tinylora/course/wrong_solutions.py), applied to that copy, must score less.

Each wrong solution is graded in its own copy by its own `tinylora course grade` process, a few at a
time: a grade spends half its time starting Python and pytest, so the 2-core CI machine grades about
twice as many per minute this way, and each process is its own grader (its own orphan killer).
"""

import collections
import json
import os
import shutil
import subprocess
import sys

import pytest

from tinylora.course import ASSIGNMENTS, release
from tinylora.course.release import read_text, repository_root, write_text
from tinylora.course.solve import solve
from tinylora.course.stubs import get_body, replace_body
from tinylora.course.wrong_solutions import CATALOGUE, apply


def test_the_catalogue_has_two_wrong_solutions_per_task_and_each_edit_applies():
    per_task = collections.Counter((w.assignment, w.task) for w in CATALOGUE)
    for assignment in ASSIGNMENTS:
        for task in assignment.tasks:
            assert per_task[(assignment.id, task.number)] >= 2, \
                f"{assignment.id} task {task.number} needs at least two catalogued wrong solutions"
    assert len(CATALOGUE) >= 50
    for wrong in CATALOGUE:
        task = next(a for a in ASSIGNMENTS if a.id == wrong.assignment).task(wrong.task)
        path = dict((q, p) for p, q in task.functions)[wrong.function]
        body = get_body(read_text(os.path.join(repository_root(), path)), wrong.function)
        assert apply(body, wrong) != body, f"the wrong solution {wrong.why!r} must change the body"


def grade_in_parallel(jobs: list, workers: int = 4) -> list:
    """[(folder, assignment id, task number)] -> the score of that task in each folder, each graded by a
    `tinylora course grade` process of its own, `workers` at a time."""
    scores, running, queue = [None] * len(jobs), {}, list(enumerate(jobs))
    while queue or running:
        while queue and len(running) < workers:
            i, (folder, assignment, task) = queue.pop(0)
            out = folder + ".json"
            command = [sys.executable, "-m", "tinylora.cli", "course", "grade", folder, "--assignment", assignment,
                       "--task", str(task), "--timeout", "20", "--json", out]
            running[i] = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
        for i, (process, out) in list(running.items()):
            if process.poll() is not None:
                error = process.stderr.read().decode()
                assert process.returncode == 0, f"grading {jobs[i]} failed: {error}"
                with open(out, encoding="utf-8") as f:
                    scores[i] = json.load(f)["tests"][0]
                del running[i]
        if running:
            next(iter(running.values()))[0].wait()
    return scores


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_each_task_passes_from_its_needs_and_every_wrong_solution_loses_marks(assignment, tmp_path):
    unsolved = str(tmp_path / "unsolved")
    release(assignment, unsolved)
    solved_jobs, wrong_jobs, wrongs = [], [], []
    for task in assignment.tasks:
        folder = str(tmp_path / f"task{task.number}")
        shutil.copytree(unsolved, folder, symlinks=True)
        solve(folder, tasks={task.number, *task.needs})
        solved_jobs.append((folder, assignment.id, task.number))
        for k, wrong in enumerate(w for w in CATALOGUE if (w.assignment, w.task) == (assignment.id, task.number)):
            copy = str(tmp_path / f"task{task.number}-wrong{k}")
            shutil.copytree(folder, copy, symlinks=True)
            path = os.path.join(copy, dict((q, p) for p, q in task.functions)[wrong.function])
            solved = read_text(path)
            write_text(path, replace_body(solved, wrong.function, apply(get_body(solved, wrong.function), wrong)))
            wrong_jobs.append((copy, assignment.id, task.number))
            wrongs.append(wrong)
    rows = grade_in_parallel(solved_jobs + wrong_jobs)
    for (_, _, number), row in zip(solved_jobs, rows):
        needs = assignment.task(number).needs
        assert row["score"] == 1, f"{assignment.id} task {number} with only its needs {needs} solved " \
                                  f"must reach full marks (are its needs complete?): {row['output']}"
    survivors = [f"{w.assignment} task {w.task} {w.function}: {w.why}"
                 for w, row in zip(wrongs, rows[len(solved_jobs):]) if row["score"] >= 1]
    assert not survivors, "these wrong solutions score full marks: the tests do not check what they claim:\n" + \
        "\n".join(survivors)
