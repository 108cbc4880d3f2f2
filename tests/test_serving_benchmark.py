"""Smoke test of benchmarks/serving.py on the tiny shape: it runs, every strategy answers, the table is written."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root (python -m), not installed
    sys.path.insert(0, str(REPO))

from benchmarks import serving  # noqa: E402


def test_serving_benchmark_runs_every_strategy(tmp_path, monkeypatch):
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "1"))  # restored after the test
    out = tmp_path / "serving.json"
    record = serving.main(["--config", "tiny", "--adapters", "1,2", "--requests", "4", "--prompt", "3", "--new", "2",
                           "--threads", "1", "--out", str(out)])
    rows = record["result"]["rows"]
    assert {(r["adapters"], r["strategy"]) for r in rows} == {(n, s) for n in (1, 2) for s in serving.STRATEGIES}
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert json.loads(out.read_text())["benchmark"] == "serving"
    assert "| N adapters |" in out.with_suffix(".md").read_text()
