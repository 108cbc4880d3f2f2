"""Every task can be solved from its own prerequisites, and every catalogued wrong solution loses marks.

For each assignment: a release; for each task, a copy where only the task and its declared `needs` are
solved must score full marks on that task (graded alone, `--task N`); then each wrong solution of the task
(tinylora/course/wrong_solutions.py), applied to that copy, must score less.
"""

import collections
import os
import shutil

import pytest

from tinylora.course import ASSIGNMENTS, grade, release
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


@pytest.mark.slow
@pytest.mark.parametrize("assignment", ASSIGNMENTS, ids=lambda a: a.id)
def test_each_task_passes_from_its_needs_and_every_wrong_solution_loses_marks(assignment, tmp_path):
    unsolved = str(tmp_path / "unsolved")
    release(assignment, unsolved)
    survivors = []
    for task in assignment.tasks:
        folder = str(tmp_path / f"task{task.number}")
        shutil.copytree(unsolved, folder, symlinks=True)
        solve(folder, tasks={task.number, *task.needs})
        row = grade(folder, assignment.id, tasks=[task.number])["tests"][0]
        assert row["score"] == 1, f"{assignment.id} task {task.number} with only its needs {task.needs} solved " \
                                  f"must reach full marks (are its needs complete?): {row['output']}"
        for wrong in [w for w in CATALOGUE if (w.assignment, w.task) == (assignment.id, task.number)]:
            path = os.path.join(folder, dict((q, p) for p, q in task.functions)[wrong.function])
            solved = read_text(path)
            write_text(path, replace_body(solved, wrong.function, apply(get_body(solved, wrong.function), wrong)))
            row = grade(folder, assignment.id, tasks=[task.number], timeout=20)["tests"][0]
            write_text(path, solved)
            if row["score"] >= 1:
                survivors.append(f"{assignment.id} task {task.number} {wrong.function}: {wrong.why}")
    assert not survivors, "these wrong solutions score full marks: the tests do not check what they claim:\n" + \
        "\n".join(survivors)
