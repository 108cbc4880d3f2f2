"""tinylora.lora.peft: adapters move between tinylora and Hugging Face PEFT and compute the same function.

Base: a small GPT2LMHeadModel with every parameter randomised, saved once and
loaded both by transformers and by tinylora.model.hf_gpt2.load_gpt2. Each test gives the
adapter a nonzero B (a zero B would make every comparison pass trivially) and
compares logits in eval mode, float32, to atol 1e-5 (the base models already
agree to about 1e-6; the LoRA path adds a few small matmuls).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, random_hf_gpt2

import tinylora
from tinylora.model.hf_gpt2 import load_gpt2
from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora import apply_lora, export_peft, import_peft, lora_layers, mark_only_lora_as_trainable

pytestmark = pytest.mark.ref

HF_SIZES = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64, bos_token_id=None, eos_token_id=None)
ATOL = 1e-5  # float32 logits of O(1): rounding differences between the libraries are ~1e-6


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """(torch, peft, load_hf, base_dir): load_hf() returns a fresh HF copy of the randomised base model."""
    base = tmp_path_factory.mktemp("peft_base")
    torch, transformers, peft = random_hf_gpt2(base, HF_SIZES)

    def load_hf():
        return transformers.GPT2LMHeadModel.from_pretrained(base).eval()

    return torch, peft, load_hf, base


IDX = np.random.default_rng(1).integers(0, HF_SIZES["vocab_size"], size=(2, 12))


def _tiny_logits(model):
    with tinylora.no_grad():
        return model.eval()(tinylora.tensor(IDX))[0].numpy()


def _hf_logits(torch, model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDX)).logits.numpy()


def _randomise_lora(model, seed=0):
    """Nonzero B (and a fresh A) in every LoRA layer, so ΔW = (α/r) B A is not 0."""
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        for p in (layer.lora_A, layer.lora_B):
            p.data[...] = rng.normal(0.0, 0.2, p.shape).astype(p.dtype)
    return model


# ------------------------------------------------------------------ tinylora -> PEFT
def test_export_q_v_is_one_c_attn_lora_of_rank_2r(ref, tmp_path):
    torch, peft, load_hf, base = ref
    tiny = _randomise_lora(apply_lora(load_gpt2(base), r=4, alpha=8, targets=("q", "v")))
    export_peft(tiny, tmp_path)
    config = read_json(tmp_path / "adapter_config.json")
    assert (config["r"], config["lora_alpha"], config["fan_in_fan_out"]) == (8, 16, True)  # 2r, 2α
    tensors = load_tensors(tmp_path / "adapter_model.safetensors")
    B = tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"]  # (3C, 2r)
    assert B.shape == (96, 8) and not B[32:64].any()  # the k rows get no update

    hf = peft.PeftModel.from_pretrained(load_hf(), tmp_path).eval()
    expected = _tiny_logits(tiny)
    assert np.abs(expected - _hf_logits(torch, load_hf())).max() > 1e-2  # the adapter changes the function
    assert_close(_hf_logits(torch, hf), expected, rtol=0, atol=ATOL, what="PEFT vs tinylora logits")


def test_export_all_targets_with_mixed_ranks(ref, tmp_path):
    torch, peft, load_hf, base = ref
    tiny = apply_lora(load_gpt2(base), r=2, alpha=3, targets=("k", "o", "proj"))
    apply_lora(tiny, r=3, alpha=6, targets=("q", "fc"), layers=[1])  # q rank 3 next to k rank 2: B is rescaled
    _randomise_lora(tiny, seed=1)
    export_peft(tiny, tmp_path)
    config = read_json(tmp_path / "adapter_config.json")
    assert config["rank_pattern"]["h.1.attn.c_attn"] == 5 and config["rank_pattern"]["h.1.mlp.c_fc"] == 3
    hf = peft.PeftModel.from_pretrained(load_hf(), tmp_path).eval()
    assert_close(_hf_logits(torch, hf), _tiny_logits(tiny), rtol=0, atol=ATOL, what="PEFT vs tinylora logits")


def test_export_refuses_trainable_biases(ref, tmp_path):
    tiny = mark_only_lora_as_trainable(apply_lora(load_gpt2(ref[3]), r=2), bias="lora_only")
    with pytest.raises(ValueError, match="biases train"):
        export_peft(tiny, tmp_path)


# ------------------------------------------------------------------ PEFT -> tinylora
@pytest.mark.parametrize("use_rslora", [False, True])
def test_import_reproduces_peft_logits(ref, tmp_path, use_rslora):
    torch, peft, load_hf, base = ref
    config = peft.LoraConfig(r=3, lora_alpha=5, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                             rank_pattern={"c_fc": 2}, alpha_pattern={"c_fc": 7}, use_rslora=use_rslora)
    hf = peft.get_peft_model(load_hf(), config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path)
    expected = _hf_logits(torch, hf.eval())

    tiny = import_peft(load_gpt2(base), tmp_path)
    attn = tiny.blocks[0].attn
    assert attn.q.r == attn.k.r == attn.v.r == 3 and tiny.blocks[1].mlp.fc.r == 2
    np.testing.assert_array_equal(attn.q.lora_A.detach().numpy(), attn.v.lora_A.detach().numpy())  # one shared A
    assert_close(_tiny_logits(tiny), expected, rtol=0, atol=ATOL, what="tinylora vs PEFT logits")


def test_round_trip_keeps_the_function(ref, tmp_path):
    tiny = _randomise_lora(apply_lora(load_gpt2(ref[3]), r=4, alpha=8, targets=("q", "v", "fc")), seed=2)
    export_peft(tiny, tmp_path)
    back = import_peft(load_gpt2(ref[3]), tmp_path)
    assert back.blocks[1].attn.k.r == 8 and back.blocks[1].mlp.fc.r == 4  # c_attn rank 2r comes back on q, k, v
    # float32: the round trip computes the same ΔW x as a rank-8 product with zero rows (k) instead of two
    # rank-4 ones, so sums run in another order; a few ulps of logits of size ~1 (1e-6 was seen to fail)
    assert_close(_tiny_logits(back), _tiny_logits(tiny), rtol=0, atol=1e-5, what="round trip logits")


# ------------------------------------------------------------------ clear errors
def test_import_errors(ref, tmp_path):
    tiny = _randomise_lora(apply_lora(load_gpt2(ref[3]), r=2, targets=("q",)))
    export_peft(tiny, tmp_path)
    with pytest.raises(ValueError, match="already have LoRA"):
        import_peft(tiny, tmp_path)  # q has LoRA already

    other_base = tinylora.model.gpt.GPT(tinylora.model.gpt.GPTConfig(vocab_size=100, block_size=64, n_layer=2, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn.*\(2, 32\).*\(2, 16\)"):
        import_peft(other_base, tmp_path)
    assert not any(True for _ in lora_layers(other_base))  # checked before anything changed

    tensors = load_tensors(tmp_path / "adapter_model.safetensors")
    save_tensors(tmp_path / "adapter_model.safetensors",
                 {**tensors, "base_model.model.transformer.wte.lora_embedding_A": np.zeros((2, 100), np.float32)})
    with pytest.raises(ValueError, match="lora_embedding_A"):
        import_peft(load_gpt2(ref[3]), tmp_path)

    write_json_atomic(tmp_path / "adapter_config.json", {**read_json(tmp_path / "adapter_config.json"), "peft_type": "IA3"})
    with pytest.raises(ValueError, match="IA3"):
        import_peft(load_gpt2(ref[3]), tmp_path)
