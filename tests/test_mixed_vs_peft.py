"""Mixed-adapter batches against PEFT's own (`adapter_names=[...]` per example), on one randomised base."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from test_peft_interop import ATOL, HF_SIZES, _randomise_lora, ref  # noqa: F401: the fixture

import tinylora
from tinylora.lora import add_adapter, export_peft, set_adapter
from tinylora.model.hf_gpt2 import load_gpt2

pytestmark = pytest.mark.ref


def test_a_mixed_batch_matches_pefts_mixed_batch(ref, tmp_path):  # noqa: F811
    torch, peft, load_hf, base = ref
    tiny = load_gpt2(base)
    for seed, name in enumerate(("a", "b")):
        add_adapter(tiny, name, r=4, alpha=8, targets=("q", "v"))
        set_adapter(tiny, name)
        _randomise_lora(tiny, seed=seed + 1)
        export_peft(tiny, tmp_path / name)  # the active adapter, as a PEFT c_attn LoRA
    hf = peft.PeftModel.from_pretrained(load_hf(), tmp_path / "a", adapter_name="a")
    hf.load_adapter(tmp_path / "b", adapter_name="b")
    hf.eval()
    idx = np.random.default_rng(2).integers(0, HF_SIZES["vocab_size"], size=(4, 10))
    ours = ["b", "base", "a", "b"]
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(idx), adapter_names=[n if n != "base" else "__base__" for n in ours])
    with tinylora.no_grad():
        got = tiny.eval()(idx, adapter_ids=ours)[0].numpy()
    assert_close(got, expected.logits.numpy(), rtol=0, atol=ATOL, what="mixed batch vs PEFT adapter_names")
    with torch.no_grad():
        base_only = hf(input_ids=torch.tensor(idx), adapter_names=["__base__"] * 4).logits.numpy()
    assert np.abs(got[[0, 2, 3]] - base_only[[0, 2, 3]]).max() > 100 * ATOL  # the adapters really change the rows


def test_concat_combination_matches_pefts_add_weighted_adapter_cat(ref, tmp_path):  # noqa: F811
    """combine_adapters(method="concat") and PEFT's combination_type="cat" give the same model: Σ wᵢ ΔWᵢ."""
    from tinylora.lora import combine_adapters

    torch, peft, load_hf, base = ref
    tiny = load_gpt2(base)
    for seed, name in enumerate(("a", "b")):
        add_adapter(tiny, name, r=4, alpha=8, targets=("q", "v"))
        set_adapter(tiny, name)
        _randomise_lora(tiny, seed=seed + 1)
        export_peft(tiny, tmp_path / name)
    combine_adapters(tiny, {"a": 0.7, "b": -0.4}, "ab", method="concat")
    set_adapter(tiny, "ab")
    hf = peft.PeftModel.from_pretrained(load_hf(), tmp_path / "a", adapter_name="a")
    hf.load_adapter(tmp_path / "b", adapter_name="b")
    hf.add_weighted_adapter(["a", "b"], [0.7, -0.4], "ab", combination_type="cat")
    hf.set_adapter("ab")
    hf.eval()
    idx = np.random.default_rng(3).integers(0, HF_SIZES["vocab_size"], size=(2, 10))
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(idx)).logits.numpy()
    with tinylora.no_grad():
        got = tiny.eval()(idx)[0].numpy()
    assert_close(got, expected, rtol=0, atol=ATOL, what="concat combination vs PEFT cat")
