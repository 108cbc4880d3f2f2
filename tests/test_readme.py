"""The README's Python example runs as written (so the README cannot drift from the code)."""

import os

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


@pytest.mark.slow  # 50 LoRA steps on the shipped base: minutes on a 2-core machine
def test_readme_lora_example_runs_and_learns():
    text = open(README, encoding="utf-8").read()
    start = text.index("## LoRA in a few lines")
    code = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    result, model = scope["result"], scope["model"]
    assert result.val_loss_after < result.val_loss_before - 0.5  # 50 LoRA steps learn the task visibly
    assert not any("lora" in name for name, _ in model.named_parameters())  # merge_and_unload left a plain GPT
