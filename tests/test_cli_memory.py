"""`tinylora finetune` with the memory options: --method lora-fa, --quantize nf4 [--double-quant],
--checkpoint-activations, --chunked-loss, and one clear error for each bad combination."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import FAST, base, cli, some_text  # noqa: F401  (base is a fixture)

from tinylora.io import load_tensors


@pytest.mark.parametrize("flags", [
    ["--method", "lora-fa"],
    ["--quantize", "nf4", "--double-quant"],
    ["--method", "lora-fa", "--quantize", "nf4", "--compute-dtype", "float32", "--checkpoint-activations",
     "--chunked-loss", "16"],
])
def test_finetune_with_memory_options_trains_end_to_end(capsys, tmp_path, base, flags):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    run = tmp_path / "run"
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", run, *flags, *FAST)
    assert code == 0, err
    assert "validation loss" in out
    tensors = load_tensors(run / "adapter" / "adapter.safetensors")
    assert any(np.any(t != 0) for n, t in tensors.items() if n.endswith("lora_B"))  # B trained
    if "lora-fa" in flags:
        assert "trainable: 512 of" in out  # B only: 2 blocks x (q, v) x d r = 2 x 2 x 32 x 4
    if "nf4" in flags:
        assert "NF4 base" in out
        total = sum(t.size for t in load_tensors(base + "/model.safetensors").values())  # the float base
        assert f" of {total + 1024:,} parameters" in out  # the 4-bit weights counted, plus A, B: 2 x 2 x r(d + k)
        assert "stored in 4 bits (NF4)" in out


@pytest.mark.parametrize("flags,message", [
    (["--double-quant"], "needs --quantize nf4"),
    (["--quantize", "nf4", "--method", "full"], "cannot be fine-tuned fully"),
    (["--quantize", "nf4", "--quant-block-size", "48"], "power of two"),
    (["--paged-optimizer"], "nothing to page"),
    (["--chunked-loss", "0"], "--chunked-loss: must be an integer >= 1"),
])
def test_bad_memory_options_give_one_clear_error(capsys, tmp_path, base, flags, message):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(6))
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", tmp_path / "run", *flags, *FAST)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
