"""benchmarks/tutorials_time.py: which notebooks it times, in what order, and the record it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root (python -m), not installed
    sys.path.insert(0, str(REPO))

from benchmarks import tutorials_time  # noqa: E402


def test_every_tutorial_in_reading_order_then_the_lab():
    names = [nb.name for nb in tutorials_time.notebooks()]
    numbered = sorted(p.name for p in (REPO / "tutorials").glob("[0-9][0-9]_*.ipynb"))
    assert names[:len(numbered)] == numbered and names[len(numbered):] == ["lab_common_mistakes.ipynb"]
    assert [nb.name for nb in tutorials_time.notebooks(["04", "lab"])] == ["04_lora_in_15_minutes.ipynb",
                                                                           "lab_common_mistakes.ipynb"]


def test_a_prefix_that_names_no_notebook_is_refused_by_name():
    with pytest.raises(SystemExit, match="no notebook in tutorials/ starts with any of \\['99'\\]"):
        tutorials_time.notebooks(["99"])


@pytest.mark.slow
def test_times_the_lab_and_records_provenance_and_load(tmp_path):
    out = tmp_path / "t.json"
    assert tutorials_time.main(["--only", "lab", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    assert row["notebook"] == "lab_common_mistakes.ipynb" and row["returncode"] == 0 and row["seconds"] > 0
    assert record["total_seconds"] == row["seconds"]
    assert record["load_min"] <= record["load_max"]
    assert {"git", "machine", "command", "versions", "time"} <= set(record["provenance"])
