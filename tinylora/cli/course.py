"""`tinylora course`: list the assignments, release a student copy, grade it, or solve it with the reference.

    tinylora course list
    tinylora course release A1 --out DIR        (or `release all --out DIR`: DIR/A1, DIR/A2, ...)
    tinylora course grade DIR [--json scores.json] [--timeout 300]
    tinylora course solve DIR [--task 2]        (the reference bodies back in: for instructors and CI)
"""

from __future__ import annotations

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
    g = actions.add_parser("grade", help="run each task's tests in a student copy and score them")
    g.add_argument("folder", help="the student's copy (written by `course release`)")
    g.add_argument("--json", default=None, help="also write the scores here (default: FOLDER/scores.json)")
    g.add_argument("--timeout", type=flags.POSITIVE, default=300.0, help="seconds per task (default 300)")
    s = actions.add_parser("solve", help="put the reference bodies back into a student copy")
    s.add_argument("folder")
    s.add_argument("--task", type=flags.POSITIVE_INT, action="append", default=None,
                   help="only this task (repeatable)")


def run(args) -> None:
    from tinylora.course import ASSIGNMENTS, get_assignment, grade, release, solve

    if args.action == "list":
        for assignment in ASSIGNMENTS:
            print(f"{assignment.id}  {assignment.title}  ({assignment.notebook})")
            for task in assignment.tasks:
                names = ", ".join(name for _, name in task.functions)
                print(f"    task {task.number}: {task.title:<20} {names}")
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
                  f"handout {assignment.notebook}; grade with: tinylora course grade {out}")
    elif args.action == "grade":
        json_path = args.json or os.path.join(args.folder, "scores.json")
        grade(args.folder, timeout=args.timeout, json_path=json_path, verbose=True)
        print(f"scores written to {json_path}")
    else:
        restored = solve(args.folder, tasks=args.task)
        print(f"restored {len(restored)} reference bodies in {args.folder}")
