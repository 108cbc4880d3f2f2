"""The memory table's pieces: the analytic model of LoRA-FA, QLoRA, checkpointing and the chunked loss agrees
with what tinylora builds and counts, and one row of `benchmarks.memory_table` runs and reports every column."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package lives beside tinylora

from benchmarks import analytic, memory_table, memory_table_report, procmem  # noqa: E402
from benchmarks.shapes import get_shape  # noqa: E402

from tinylora.methods.qlora import weight_report  # noqa: E402


def test_analytic_lora_fa_drops_one_nc_per_block_and_halves_the_trainables():
    shape = get_shape("gpt2")
    lora, fa = analytic.memory_model(shape, "lora", 8), analytic.memory_model(shape, "lora-fa", 8)
    n, c, L = shape.tokens, shape.n_embd, shape.n_layer
    assert lora["saved_activations"] - fa["saved_activations"] == L * n * c * 4
    assert fa["parameters"]["trainable"] * 2 == lora["parameters"]["trainable"]


def test_analytic_qlora_weights_equal_what_quantize_model_stores():
    shape = get_shape("tiny")
    model = memory_table.build("qlora", shape, seed=0)
    report = weight_report(model)
    lora = sum(p.size for n, p in model.named_parameters() if "lora_" in n) * 4
    assert analytic.weight_bytes(shape, "qlora", 8) == report["total"] + lora


def test_analytic_levers_shrink_saved_activations():
    shape = get_shape("gpt2")
    plain = analytic.memory_model(shape, "qlora", 8)
    levers = analytic.memory_model(shape, "qlora", 8, checkpoint=True, chunk=256)
    assert levers["saved_activations"] < 0.1 * plain["saved_activations"]
    assert levers["logits_transient"] == 256 * shape.vocab_size * 4


@pytest.mark.slow
@pytest.mark.skipif(not procmem.available(), reason="/proc/self/clear_refs is not writable here")
def test_one_row_runs_and_the_report_has_every_column(tmp_path):
    out = tmp_path / "row.json"
    record = memory_table.main(["--row", "lora-fa", "--config", "tiny", "--steps", "2", "--threads", "1",
                                "--out", str(out)])
    r = record["result"]
    assert json.loads(out.read_text())["result"]["row"] == "lora-fa"
    assert set(r["tagged_peak_split"]) == set(memory_table_report.CATEGORIES)
    # the engine's own count is exact; the resident-memory growth (step_peak_bytes) can be 0 inside a test process
    # whose heap already holds freed memory (the benchmark itself runs every row in a fresh process)
    assert sum(r["tagged_peak_split"].values()) > 0 and r["step_peak_bytes"] >= 0
    assert r["analytic_total_bytes"] > 0 and len(r["losses"]) == 2
    fake = {"command": "x", "threads": 1, "timestamp": "t", "machine": {"cpu_model": "cpu"},
            "result": {"configs": {"tiny": [record]}}}
    md, png = memory_table_report.write_report(fake, tmp_path / "t.md", tmp_path / "t.png")
    assert "| lora-fa |" in md.read_text() and png.exists()
