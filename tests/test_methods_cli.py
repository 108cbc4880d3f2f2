"""`tinylora finetune --method dora|rslora|loraplus|pissa|olora|adalora|glora`: each trains end to end from
the command line, writes a safetensors + JSON adapter that loads back, and merges into a plain model."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from test_cli import FAST, base, cli, logits_of, some_text  # noqa: F401  (base is a fixture)

from tinylora.methods import load_any_adapter
from tinylora.model.load import load_model

METHOD_FLAGS = {
    "rslora": ["--alpha", "2"],
    "loraplus": ["--loraplus-ratio", "8"],
    "dora": ["--rslora"],
    "pissa": [],
    "olora": [],
    "adalora": ["--rank", "3", "--target-r", "2", "--tfinal", "1"],
    "glora": ["--glora-config", "A=vector,B=lora,C=none,D=scalar,E=vector", "--rank", "2"],
}


@pytest.mark.parametrize("method", sorted(METHOD_FLAGS))
def test_finetune_method_then_load_and_merge(capsys, tmp_path, base, method):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    run = tmp_path / "run"
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--method", method, "--out", run,
                         "--lr", "1e-2", *METHOD_FLAGS[method], *FAST)
    assert code == 0, err
    assert "validation loss" in out
    if method == "adalora":
        assert "adalora rank per layer" in out

    ids = np.arange(20).reshape(1, 20)
    model, _ = load_model(base)
    before = logits_of(model, ids)
    trained = logits_of(load_any_adapter(model, run / "adapter"), ids)
    assert np.abs(trained - before).max() > 1e-4  # the adapter changes the function

    merged_dir = tmp_path / "merged"
    code, out, err = cli(capsys, "merge", "--base", base, "--adapter", run / "adapter", "--out", merged_dir)
    assert code == 0, err
    merged, _ = load_model(merged_dir)
    assert_close(logits_of(merged, ids), trained, rtol=0, atol=1e-4, what=f"{method} merged")  # float32

    code, out, err = cli(capsys, "generate", "--model", base, "--adapter", run / "adapter", "--max-new-tokens", "3")
    assert code == 0, err


def test_bad_method_flags_are_one_line_errors(capsys, tmp_path, base):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data, "--method", "glora",
                       "--glora-config", "C=scalar", "--out", tmp_path / "run", *FAST)
    assert code == 2 and err.startswith("tinylora: error: argument --glora-config: support C cannot be 'scalar'")
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data, "--method", "adalora", "--delta-t", "0",
                       "--out", tmp_path / "run", *FAST)
    assert code == 2 and err.startswith("tinylora: error: argument --delta-t: must be an integer >= 1")
