"""The course: assignments generated from the reference code, and an offline autograder.

An assignment is a small manifest (assignments.py): the functions of this package a student writes, task by
task, each with the task's text and a pytest marker, plus a handout notebook in tutorials/course/. Nothing in
the reference code marks what is removed: the manifest names it.

    release.py   copy the repository, replace each listed body by its docstring and
                 `raise NotImplementedError("A1 task 2: ...")`, strip the handout's solution cells
    stubs.py     the source surgery on one function (find it, stub it, put the reference body back)
    grade.py     run each task's tests in the student's copy, one process per task, time-limited,
                 and score them (a per-task table and a JSON file an LMS can import)

From the command line: `tinylora course list | release A1 --out DIR | grade DIR | solve DIR`.
"""

from tinylora.course.assignments import ASSIGNMENTS, Assignment, Task, get_assignment
from tinylora.course.grade import grade
from tinylora.course.release import release, solve

__all__ = ["ASSIGNMENTS", "Assignment", "Task", "get_assignment", "grade", "release", "solve"]
