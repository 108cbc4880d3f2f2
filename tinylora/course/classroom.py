"""Grade a class: a folder of submissions into one CSV, and Gradescope's results.json.

    grade_all("submissions", "A2", "grades.csv")   one row per student folder (the folder name is the id):
                                                   the per-task scores, the total, the seconds it took, and
                                                   the first note; a submission the grader cannot grade at
                                                   all gets a row of zeros with the reason
    gradescope("/autograder/submission", "A2", "/autograder/results/results.json")
                                                   what tutorials/course/gradescope/run_autograder calls

A submission may be the repository's root or one folder above it (an upload that wraps the copy in a
folder): `submission_root` finds the folder holding tinylora/.

From the shell: `python -m tinylora.course.classroom gradescope SUBMISSION --assignment A2 --out results.json`.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time

from tinylora.course.assignments import get_assignment
from tinylora.course.grader import format_table, grade
from tinylora.io import write_json_atomic


def submission_root(folder: str) -> str:
    """The folder holding tinylora/ (the folder itself, or the single folder inside that does)."""
    if os.path.isdir(os.path.join(folder, "tinylora")):
        return folder
    inside = [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if not n.startswith((".", "__"))]
    found = [d for d in inside if os.path.isdir(os.path.join(d, "tinylora"))]
    return found[0] if len(found) == 1 else folder


def zero_scores(assignment, reason: str) -> dict:
    rows = [{"name": f"{assignment.id} task {t.number}: {t.title}", "task": t.number, "score": 0.0, "max_score": 1.0,
             "passed": 0, "total": 0, "output": reason} for t in assignment.tasks]
    return {"assignment": assignment.id, "score": 0.0, "max_score": float(len(rows)), "execution_time": 0.0,
            "tests": rows}


def grade_one(folder: str, assignment, timeout: float) -> dict:
    """grade() on the submission's root; a grader error becomes a row of zeros with its reason."""
    try:
        return grade(submission_root(folder), assignment, timeout=timeout)
    except Exception as err:  # noqa: BLE001 - one bad submission must not stop the class
        return zero_scores(assignment, f"not graded: {type(err).__name__}: {err}")


def grade_all(submissions: str, assignment, out: str, timeout: float = 30.0, verbose: bool = False) -> list:
    """Grade every folder in `submissions`; write the CSV `out`; return its rows (as dicts)."""
    assignment = get_assignment(assignment) if isinstance(assignment, str) else assignment
    if not os.path.isdir(submissions):
        raise FileNotFoundError(f"grade-all: {submissions} is not a folder of submissions")
    students = sorted(n for n in os.listdir(submissions)
                      if os.path.isdir(os.path.join(submissions, n)) and not n.startswith("."))
    columns = ["student"] + [f"task {t.number}" for t in assignment.tasks] + ["total", "max", "seconds", "note"]
    rows, started = [], time.monotonic()
    for student in students:
        scores = grade_one(os.path.join(submissions, student), assignment, timeout)
        notes = [r["output"] for r in scores["tests"] if r["output"]]
        row = {"student": student, "total": scores["score"], "max": scores["max_score"],
               "seconds": scores["execution_time"], "note": notes[0] if notes else ""}
        row.update({f"task {r['task']}": r["score"] for r in scores["tests"]})
        rows.append(row)
        if verbose:
            print(f"{student}: {scores['score']:g} / {scores['max_score']:g} ({scores['execution_time']:g} s)")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    temp = out + ".tmp"
    with open(temp, "w", encoding="utf-8", newline="") as f:
        f.write(text.getvalue())
    os.replace(temp, out)
    if verbose:
        print(f"{len(rows)} submissions graded in {time.monotonic() - started:.1f} s; grades written to {out}")
    return rows


def gradescope(submission: str, assignment, out: str, timeout: float = 30.0) -> dict:
    """Grade one upload and write Gradescope's results.json (a grader error: score 0 and the reason)."""
    assignment = get_assignment(assignment) if isinstance(assignment, str) else assignment
    scores = grade_one(submission, assignment, timeout)
    results = {"score": scores["score"], "execution_time": scores["execution_time"],
               "output": format_table(scores),
               "tests": [{"name": r["name"], "score": r["score"], "max_score": r["max_score"], "output": r["output"]}
                         for r in scores["tests"]]}
    write_json_atomic(out, results)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinylora.course.classroom")
    parser.add_argument("action", choices=["gradescope"])
    parser.add_argument("submission")
    parser.add_argument("--assignment", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    results = gradescope(args.submission, args.assignment, args.out, args.timeout)
    print(results["output"])


if __name__ == "__main__":
    main(sys.argv[1:])
