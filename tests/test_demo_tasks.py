"""`tinylora demo`'s two tasks (tinylora/cli/demo.py): the near task's data, the flags, the record it writes."""

import json

import pytest

from tinylora.cli.demo import NEAR_PROMPT_BYTES, TASKS, _sample_prompt, near_datasets, run_demo
from tinylora.tokenizers import load_tokenizer


@pytest.mark.slow  # reads and tokenizes NumPy's 9 MB of source
def test_the_near_task_is_held_out_python_source():
    tokenizer = load_tokenizer("byte")
    train_set, val_set = near_datasets(tokenizer, 64)
    assert len(val_set.tokens) < len(train_set.tokens) / 5  # 10% of the chunks held out
    prompt = _sample_prompt("near", val_set, tokenizer)  # held-out code from a line start to a `return `
    assert NEAR_PROMPT_BYTES - 100 < len(prompt) <= NEAR_PROMPT_BYTES and prompt.endswith("return ")
    assert prompt in tokenizer.decode(val_set.tokens[:20000].tolist())


def test_an_unknown_task_is_one_error():
    with pytest.raises(ValueError, match="the demo's tasks are near, far"):
        run_demo("/nonexistent", steps=1, tasks=("mars",))
    assert set(TASKS) == {"near", "far"}


@pytest.mark.slow
def test_the_demo_compares_both_tasks_and_records_its_numbers(tmp_path, capsys):
    results = run_demo(str(tmp_path), steps=1)
    out = capsys.readouterr().out
    assert set(results) == {"near", "far"} and all(set(rows) == {"full", "lora"} for rows in results.values())
    assert "LoRA's validation loss / full fine-tuning's: near task" in out
    record = json.loads((tmp_path / "demo.json").read_text())
    assert record["provenance"]["command"] and record["steps"] == 1
    assert record["tasks"]["near"]["lora"]["val_after"] == pytest.approx(results["near"]["lora"]["val_after"])
    near = record["tasks"]["near"]
    assert record["lora_vs_full"]["near"]["loss_ratio"] == pytest.approx(near["lora"]["val_after"] / near["full"]["val_after"])
    assert "base-mini, not tuned" in out and record["tasks"]["near"]["full"]["base_sample"] is not None
