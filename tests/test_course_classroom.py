"""A class grades to one CSV row per student in bounded time, whatever the submissions do; Gradescope's
results.json has the shape it imports."""

import csv
import json
import os
import shutil
import textwrap
import time

import pytest

from tinylora.course import release
from tinylora.course.classroom import grade_all, gradescope
from tinylora.course.release import read_text, write_text
from tinylora.course.solve import solve
from tinylora.course.stubs import replace_body

UTIL = "tinylora/engine/ops/_util.py"


def set_unbroadcast(folder, body):
    path = os.path.join(folder, UTIL)
    write_text(path, replace_body(read_text(path), "unbroadcast", textwrap.indent(textwrap.dedent(body), "    ")))


@pytest.mark.slow
def test_a_class_of_five_grades_to_five_rows_in_bounded_time(tmp_path):
    unsolved = str(tmp_path / "unsolved")
    release("A1", unsolved)
    class_folder = tmp_path / "class"
    class_folder.mkdir()
    for name in ("reference", "half", "looping", "crashing"):
        shutil.copytree(unsolved, class_folder / name)
    (class_folder / "empty").mkdir()
    solve(str(class_folder / "reference"))
    solve(str(class_folder / "half"), tasks={1, 2})
    for name, body in (("looping", "while True:\n    pass\n"), ("crashing", "import ctypes\nctypes.string_at(0)\n")):
        solve(str(class_folder / name))
        set_unbroadcast(str(class_folder / name), body)
    started = time.monotonic()
    rows = grade_all(str(class_folder), "A1", str(tmp_path / "grades.csv"), timeout=3)
    elapsed = time.monotonic() - started
    with open(tmp_path / "grades.csv", newline="") as f:
        table = {row["student"]: row for row in csv.DictReader(f)}
    assert sorted(table) == ["crashing", "empty", "half", "looping", "reference"] and len(rows) == 5, \
        "one CSV row per student folder"
    assert float(table["reference"]["total"]) == 4, table["reference"]
    assert float(table["half"]["total"]) == 2 and float(table["half"]["task 2"]) == 1, table["half"]
    assert float(table["empty"]["total"]) == 0 and "missing" in table["empty"]["note"], \
        f"an empty submission gets a 0 row with the reason: {table['empty']}"
    assert float(table["looping"]["task 1"]) == 0 and "timed out" in table["looping"]["note"], table["looping"]
    assert float(table["crashing"]["task 1"]) == 0 and "died" in table["crashing"]["note"], table["crashing"]
    assert elapsed < 240, f"a class of five with a looping submission must grade in bounded time, took {elapsed:.0f} s"

    upload = tmp_path / "upload"
    shutil.copytree(class_folder / "half", upload / "my-tinylora")  # an upload wrapped in one folder
    results = gradescope(str(upload), "A1", str(tmp_path / "results.json"))
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == results and written["score"] == 2 and len(written["tests"]) == 4, written
    assert {"name", "score", "max_score", "output"} <= set(written["tests"][0]), "Gradescope's test fields"
