"""`tinylora course`: list the assignments, release a student copy, grade one submission or a class.

    tinylora course list
    tinylora course release A1 --out DIR        (or `release all --out DIR`: DIR/A1, DIR/A2, ...)
    tinylora course grade DIR --assignment A1 [--task 2] [--json scores.json] [--timeout 30]
    tinylora course grade-all SUBMISSIONS --assignment A1 --out grades.csv [--timeout 30]
    tinylora course solve DIR [--task 2]        (instructor's clone only: absent from student releases)
"""

from __future__ import annotations

import importlib.util
import os

from tinylora.cli import flags


def add_parser(sub) -> None:
    p = sub.add_parser("course", help="assignments: release a student copy, grade it (offline)",
                       description="Assignments generated from the reference code, and an offline autograder. "
                                   "See tutorials/course/INSTRUCTOR_GUIDE.md.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the assignments and their tasks")
    r = actions.add_parser("release", help="write a student copy of the repository with the tasks stubbed")
    r.add_argument("assignment", help="A1, A2, ... or 'all'")
    r.add_argument("--out", required=True, help="a new folder (for 'all': one subfolder per assignment)")
    g = actions.add_parser("grade", help="grade the listed functions of one submission with the instructor's tests")
    g.add_argument("folder", help="the student's copy (only the bodies of the assignment's functions are read)")
    g.add_argument("--assignment", required=True, help="A1, A2, ...: the grader never reads it from the folder")
    g.add_argument("--task", type=flags.POSITIVE_INT, action="append", default=None, help="only this task (repeatable)")
    g.add_argument("--json", default=None, help="also write the scores here (never inside the submission)")
    g.add_argument("--timeout", type=flags.POSITIVE, default=30.0, help="seconds per test (default 30)")
    a = actions.add_parser("grade-all", help="grade every submission folder in SUBMISSIONS into one CSV")
    a.add_argument("submissions", help="a folder holding one folder per student (the folder name is the id)")
    a.add_argument("--assignment", required=True)
    a.add_argument("--out", required=True, help="the CSV to write")
    a.add_argument("--timeout", type=flags.POSITIVE, default=30.0, help="seconds per test (default 30)")
    if importlib.util.find_spec("tinylora.course.solve") is not None:  # instructor-only: not in releases
        s = actions.add_parser("solve", help="put the reference bodies back into a student copy (instructors)")
        s.add_argument("folder")
        s.add_argument("--task", type=flags.POSITIVE_INT, action="append", default=None, help="only this task (repeatable)")


def run(args) -> None:
    from tinylora.course import ASSIGNMENTS, get_assignment, grade, release

    if args.action == "list":
        for assignment in ASSIGNMENTS:
            print(f"{assignment.id}  {assignment.title}  ({assignment.notebook})")
            for task in assignment.tasks:
                names = ", ".join(name for _, name in task.functions)
                needs = f"  (needs {', '.join(map(str, task.needs))})" if task.needs else ""
                print(f"    task {task.number}: {task.title:<20} {names}{needs}")
    elif args.action == "release":
        chosen = ASSIGNMENTS if args.assignment.lower() == "all" else (get_assignment(args.assignment),)
        outs = [os.path.join(args.out, a.id) if len(chosen) > 1 else args.out for a in chosen]
        taken = [out for out in outs if os.path.isdir(out) and os.listdir(out)]
        if taken:  # checked for every assignment before any is written
            raise FileExistsError(f"tinylora course release: {', '.join(taken)} already hold(s) files; "
                                  "nothing was written: choose a new --out")
        for assignment, out in zip(chosen, outs):
            record = release(assignment, out)
            print(f"{assignment.id}: {len(record['stubbed'])} functions stubbed in {out}; "
                  f"handout {assignment.notebook}; grade with: tinylora course grade {out} --assignment {assignment.id}")
    elif args.action == "grade":
        if args.json and os.path.realpath(args.json).startswith(os.path.realpath(args.folder) + os.sep):
            raise ValueError(f"--json {args.json} is inside the submission {args.folder}: write scores elsewhere")
        grade(args.folder, args.assignment, tasks=args.task, timeout=args.timeout, json_path=args.json, verbose=True)
        if args.json:
            print(f"scores written to {args.json}")
    elif args.action == "grade-all":
        from tinylora.course.classroom import grade_all

        grade_all(args.submissions, args.assignment, args.out, timeout=args.timeout, verbose=True)
    else:
        from tinylora.course.solve import solve

        restored = solve(args.folder, tasks=args.task)
        print(f"restored {len(restored)} reference bodies in {args.folder}")
