"""The course: assignments generated from the reference code, and an autograder a submission cannot steer.

An assignment is a small manifest (assignments.py): the functions of this package a student writes, task by
task, each with the task's text and a pytest marker, plus a handout notebook in tutorials/course/. Nothing in
the reference code marks what is removed: the manifest names it.

    release.py    copy the repository; stub the assignment's functions and every later assignment's
    stubs.py      the source surgery on one function (find it, stub it, put a body back)
    tree.py       the graded tree: the grader's own clean release plus only the submission's listed bodies
    sandbox.py    run pytest on it in an isolated process, read results from a pipe, kill what it left
    child.py      that process's side (the path, the audit hook, the reporter plugin)
    grader.py     score one submission task by task (a table, and JSON an LMS imports)
    classroom.py  grade a folder of submissions into one CSV; Gradescope's run_autograder
    solve.py      (instructor-only, absent from releases) put the reference bodies back
    wrong_solutions.py  (instructor-only) plausible wrong answers, each of which must lose marks

From the command line: `tinylora course list | release A1 --out DIR | grade DIR --assignment A1 |
grade-all SUBMISSIONS --assignment A1 --out grades.csv | solve DIR`.
"""

from tinylora.course.assignments import ASSIGNMENTS, Assignment, Task, get_assignment
from tinylora.course.grader import grade
from tinylora.course.release import release

__all__ = ["ASSIGNMENTS", "Assignment", "Task", "get_assignment", "grade", "release"]
