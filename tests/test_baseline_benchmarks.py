"""Smoke tests of the Table 1 and Table 3 benchmarks (benchmarks/table1_latency.py, table3_e2e.py) on tiny settings."""

import json

import pytest

from benchmarks import table1_latency, table3_e2e


@pytest.mark.parametrize("contender", ["base", "adapter-h", "prefix-layer"])
def test_table1_worker_times_every_setting(contender):
    times = table1_latency.time_contender(contender, "mini", adapter_dim=4, trials=2, seed=0)
    assert set(times["cpu"]) == {f"{b}x{t}" for b, t in table1_latency.SETTINGS}
    assert all(len(v) == 2 and min(v) >= 0 for v in times["cpu"].values())


def test_table1_table_shows_percent_over_base():
    cell = {"median_ms": 2.0, "half_iqr_ms": 0.1, "percent_over_base": 100.0}
    rows = {"base": {f"{b}x{t}": {**cell, "median_ms": 1.0} for b, t in table1_latency.SETTINGS},
            "adapter-h": {f"{b}x{t}": cell for b, t in table1_latency.SETTINGS}}
    text = table1_latency.table(rows)
    assert "| adapter-h | 2.0 ± 0.1 (+100.0%)" in text and "| base | 1.0 ± 0.1 |" in text


def test_table3_test_prompts_are_held_out_with_three_references():
    train, test = table3_e2e.e2e_data(n_train=60, n_test=4)
    assert len(test) == 12 and not {p["prompt"] for p in train} & {p["prompt"] for p in test}
    assert all(test[i]["prompt"] == test[i + 1]["prompt"] == test[i + 2]["prompt"] for i in range(0, 12, 3))


def test_table3_keeps_rows_up_to_max_bytes():
    def longest(pairs):
        return max(len((p["prompt"] + p["completion"]).encode()) for p in pairs)

    assert longest(table3_e2e.e2e_data(n_train=200, n_test=2)[0]) <= table3_e2e.MAX_BYTES
    assert 256 < longest(table3_e2e.e2e_data(n_train=200, n_test=2, max_bytes=384)[0]) <= 384


@pytest.mark.slow  # trains base-mini twice and generates: ~20 s on an idle 2-core machine
def test_table3_runs_end_to_end(tmp_path):
    out = tmp_path / "t3.json"
    table3_e2e.main(["--steps", "2", "--batch", "2", "--train", "30", "--test", "1", "--methods", "lora-all,adapter-h",
                     "--seeds", "0", "--base", "base-mini-384", "--max-bytes", "384", "--work", str(tmp_path / "runs"),
                     "--out", str(out)])
    result = json.loads(out.read_text())["result"]
    rows = result["rows"]
    assert rows["adapter-h"]["0"]["trainable"] == 9_248 and rows["lora-all"]["0"]["trainable"] == 73_728
    assert (result["base"], result["max_bytes"]) == ("base-mini-384", 384)
    assert set(result["baselines"]) == {"constant", "template"} and result["summary"]["lora-all"]["bleu"][1] == 0.0
    assert out.with_suffix(".png").exists() and out.with_suffix(".md").exists()


def test_table3_says_which_differences_exceed_the_spread():
    runs = {"lora": {0: {"val_loss_after": 1.0, "bleu": 10.0, "rouge_l": 30.0},
                     1: {"val_loss_after": 1.2, "bleu": 12.0, "rouge_l": 32.0}},
            "a": {0: {"val_loss_after": 1.0, "bleu": 20.0, "rouge_l": 30.0},
                  1: {"val_loss_after": 1.0, "bleu": 20.0, "rouge_l": 30.0}},
            "b": {0: {"val_loss_after": 1.0, "bleu": 9.0, "rouge_l": 30.0},
                  1: {"val_loss_after": 1.0, "bleu": 14.0, "rouge_l": 30.0}}}
    summary = table3_e2e.summarize(runs)
    assert summary["lora"]["bleu"] == pytest.approx((11.0, 2 ** 0.5))  # mean, sample sd
    assert table3_e2e.against_lora(summary, "a") == "above LoRA"  # 20 vs 11: 9 > 0 + 1.41
    assert table3_e2e.against_lora(summary, "b") == "within spread"  # 11.5 vs 11: 0.5 <= 3.54 + 1.41
