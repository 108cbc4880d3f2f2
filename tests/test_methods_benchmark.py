"""benchmarks/lora_family.py runs end to end (two methods, two steps) and writes a consistent record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `benchmarks` is not installed
from benchmarks import lora_family  # noqa: E402


@pytest.mark.slow  # ~10 s: two short fine-tunes of base-mini
def test_lora_family_smoke(tmp_path):
    out = tmp_path / "family.json"
    assert lora_family.main(["--methods", "lora,adalora", "--steps", "2", "--seeds", "1", "--eval-every", "2",
                             "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["table"]) == {"lora", "adalora"}
    assert record["table"]["lora"]["trainable"] == 8192  # r(d + k) = 4·256 per matrix, q and v in 4 blocks
    assert record["runs"][1]["rank_allocation"] is not None
    assert "issue" not in record["markdown"] and "| lora_fa |" not in record["markdown"]  # only measured rows
