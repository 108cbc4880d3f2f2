"""`tinylora finetune --method` for each of the LoRA paper's baselines, end to end on tiny models:
train on a text file and on E2E-style pairs, write the method folder, generate with it, evaluate it,
and merge what can be merged (the rest is refused in one line)."""

import importlib.util
import json
import os

import numpy as np
import pytest
from test_cli import FAST, base, cli, short_pairs, some_text  # noqa: F401  (base is a fixture)

from tinylora.data import write_e2e
from tinylora.io import read_json
from tinylora.methods import load_method
from tinylora.model.load import load_model

BASELINES = ["top2", "bitfit", "prefix-embed", "prefix-layer", "adapter-h", "adapter-l"]
FLAGS = {"prefix-embed": ["--prefix-len", "3", "--infix-len", "2"], "prefix-layer": ["--prefix-len", "3", "--infix-len", "2"],
         "adapter-h": ["--adapter-dim", "4"], "adapter-l": ["--adapter-dim", "4"]}  # each method's own flags


def metrics_installed() -> bool:
    """sacrebleu (the `metrics` extra) is there; under TINYLORA_REQUIRE_REF=1 it must be."""
    installed = importlib.util.find_spec("sacrebleu") is not None
    if not installed and os.environ.get("TINYLORA_REQUIRE_REF") == "1":
        pytest.fail("sacrebleu is required (TINYLORA_REQUIRE_REF=1) but missing")
    return installed


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baseline-data")
    (folder / "text.txt").write_text(some_text(seed=11), encoding="utf-8")
    write_e2e(short_pairs(), folder / "pairs.csv")
    return folder


@pytest.mark.parametrize("method", BASELINES)
def test_each_baseline_trains_generates_and_evaluates(method, base, data, tmp_path, capsys):  # noqa: F811
    for name in ("text.txt", "pairs.csv"):
        out = tmp_path / name
        code, stdout, err = cli(capsys, "finetune", "--base", base, "--data", data / name, "--method", method,
                                *FLAGS.get(method, []), "--out", out, *FAST)
        assert code == 0, err
        assert stdout.startswith(f"{method}: trainable:")
        config = read_json(out / "method" / "adapter_config.json")
        assert config["method"] == method and config["format"] == "tinylora-method-adapter"
        metrics = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
        assert metrics[-1]["step"] == 3 and np.isfinite(metrics[-1]["val_loss"])
    folder = tmp_path / "pairs.csv" / "method"
    model, _ = load_model(base)
    load_method(model, folder)  # the folder loads onto a fresh base
    code, stdout, err = cli(capsys, "info", "--adapter", folder)
    assert code == 0 and stdout.startswith(f"adapter {folder}: {method} ("), err
    code, stdout, err = cli(capsys, "generate", "--model", base, "--adapter", folder, "--prompt", "name[Ab] ||",
                            "--max-new-tokens", "5", "--temperature", "0")
    assert code == 0, err
    assert stdout.startswith("name[Ab] ||")
    code, stdout, err = cli(capsys, "evaluate", "--model", base, "--adapter", folder, "--data", data / "pairs.csv",
                            "--max-prompts", "2", "--max-new-tokens", "8", "--out", tmp_path / "scores.json")
    if metrics_installed():
        assert code == 0, err
        scores = read_json(tmp_path / "scores.json")
        assert scores["prompts"] == 2 and 0 <= scores["bleu"] <= 100 and 0 <= scores["rouge_l"] <= 100
    else:  # the student's `.[test]` install: one line saying what to install, nothing written
        assert code == 2 and "pip install 'tinylora[metrics]'" in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "scores.json").exists()
    code, stdout, err = cli(capsys, "merge", "--base", base, "--adapter", folder, "--out", tmp_path / "merged")
    if method in ("top2", "bitfit"):
        assert code == 0, err
        merged, _ = load_model(tmp_path / "merged")  # a plain model with the trained weights
        trained = {n: p.data for n, p in model.named_parameters() if p.requires_grad}
        for name, p in merged.named_parameters():
            if name in trained:
                np.testing.assert_array_equal(p.data, trained[name])
    else:
        assert code == 2 and err.count("\n") == 1 and "cannot be merged" in err
        assert not os.path.exists(tmp_path / "merged")


def test_a_prefix_too_long_for_the_context_is_one_error(base, data, tmp_path, capsys):  # noqa: F811
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data / "text.txt", "--method", "prefix-embed",
                       "--prefix-len", "64", "--out", tmp_path, *FAST)
    assert code == 2 and err.count("\n") == 1 and "block_size" in err
