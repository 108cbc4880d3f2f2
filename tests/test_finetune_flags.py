"""`tinylora finetune`: a flag of another method, a flag without the one it configures, and a value out of its
range are each one error line naming the flag (and the method), before any model is loaded.

Which method takes which flag is its row in tinylora/methods/table.py; these cases are the ones users hit.
"""

from __future__ import annotations

import pytest
from test_cli import cli

from tinylora.methods.table import METHOD_FLAGS, METHODS

NOT_APPLICABLE = [  # (method, flags given): the first flag does not apply to the method
    ("bitfit", ["--rank", "8"]),
    ("bitfit", ["--targets", "fc"]),
    ("bitfit", ["--lora-dropout", "0.5"]),
    ("top2", ["--layers", "0"]),
    ("prefix-embed", ["--rank", "4"]),
    ("adapter-h", ["--alpha", "2"]),
    ("glora", ["--alpha", "2"]),
    ("glora", ["--lora-dropout", "0.1"]),
    ("lora", ["--rslora"]),
    ("lora", ["--loraplus-ratio", "4"]),
    ("lora", ["--glora-config", "A=lora"]),
    ("dora", ["--target-r", "2"]),
    ("dora", ["--quantize", "nf4"]),
    ("full", ["--quantize", "nf4"]),
    ("full", ["--rank", "4"]),
    ("rslora", ["--rslora"]),
]


@pytest.mark.parametrize("method, given", NOT_APPLICABLE)
def test_a_flag_of_another_method_is_one_line_naming_flag_and_method(capsys, tmp_path, method, given):
    code, _, err = cli(capsys, "finetune", "--data", tmp_path / "absent.txt", "--method", method, *given,
                       "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"tinylora: error: {given[0]} does not apply to --method {method} (it takes: "), err


BAD_VALUES = [  # (flags, what the one line must say)
    (["--method", "glora", "--glora-config", "A=lora,A=none"], "--glora-config: support A is given twice"),
    (["--method", "glora", "--glora-config", "F=lora"], "--glora-config: expected SUPPORT=KIND"),
    (["--method", "loraplus", "--loraplus-ratio", "inf"], "--loraplus-ratio: must be a finite number"),
    (["--method", "loraplus", "--loraplus-ratio", "nan"], "--loraplus-ratio: must be a finite number"),
    (["--method", "loraplus", "--loraplus-ratio", "0"], "--loraplus-ratio: must be > 0.0"),
    (["--method", "adalora", "--target-r", "0"], "--target-r: must be an integer >= 1"),
    (["--method", "adalora", "--tinit", "-1"], "--tinit: must be an integer >= 0"),
    (["--method", "adalora", "--tfinal", "-2"], "--tfinal: must be an integer >= 0"),
    (["--method", "adalora", "--delta-t", "0"], "--delta-t: must be an integer >= 1"),
    (["--method", "adalora", "--orth-reg-weight", "nan"], "--orth-reg-weight: must be a finite number"),
    (["--method", "adalora", "--orth-reg-weight", "-1"], "--orth-reg-weight: must be >= 0.0"),
    (["--method", "adalora", "--rank", "4", "--target-r", "6"], "--target-r 6 is more than the initial rank"),
    (["--method", "adalora", "--max-steps", "4", "--tinit", "2", "--tfinal", "2"], "needs --tinit < --max-steps"),
    (["--method", "prefix-embed", "--prefix-len", "0", "--infix-len", "0"], "no virtual token to train"),
    (["--method", "prefix-layer", "--prefix-len", "-1"], "--prefix-len: must be an integer >= 0"),
    (["--method", "adapter-h", "--adapter-dim", "0"], "--adapter-dim: must be an integer >= 1"),
    (["--compute-dtype", "float32"], "--compute-dtype configures NF4 quantization: it needs --quantize nf4"),
    (["--quant-block-size", "64"], "--quant-block-size configures NF4 quantization: it needs --quantize nf4"),
    (["--double-quant"], "--double-quant configures NF4 quantization: it needs --quantize nf4"),
    (["--quantize", "nf4", "--quant-block-size", "48"], "--quant-block-size: must be a power of two"),
]


@pytest.mark.parametrize("given, says", BAD_VALUES)
def test_bad_values_and_contradictions_are_one_line(capsys, tmp_path, given, says):
    code, _, err = cli(capsys, "finetune", "--data", tmp_path / "absent.txt", *given, "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1, err
    assert says in err, err


def test_every_method_flag_belongs_to_some_method_and_every_method_has_a_learning_rate():
    """The table is the whole truth: each flag checked above is taken by at least one method (else it could
    never be used), and each method has a positive default learning rate and a known file kind."""
    assert {"rank", "alpha", "rslora", "loraplus_ratio", "target_r", "glora_config", "prefix_len",
            "adapter_dim", "quantize"} <= set(METHOD_FLAGS)
    for name, row in METHODS.items():
        assert row.lr > 0 and row.files in ("lora", "method", "model"), name
