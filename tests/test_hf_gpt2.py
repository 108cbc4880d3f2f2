"""tinylora.model.hf_gpt2: Hugging Face GPT-2 checkpoints load into tinylora's GPT and compute the same function.

The reference is a small randomly initialised GPT2LMHeadModel (2 layers, 2
heads, 32 dims, vocab 100, 64 positions) whose every parameter, biases and
LayerNorms included, is randomised, so a wrong split, transpose or name
changes the logits.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import assert_close, require

import tinylora
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.model.hf_gpt2 import load_gpt2, save_gpt2
from tinylora.model.load import load_gpt
from tinylora.io import FileFormatError, load_tensors, save_tensors, write_json_atomic
from tinylora.lora import apply_lora, lora_layers, merge_lora

pytestmark = pytest.mark.ref

HF_SIZES = dict(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64, bos_token_id=None, eos_token_id=None)


def _randomise(model, torch):
    """Every parameter ~ N(0, 0.1^2), LayerNorm weights around 1: no zero bias can hide a mapping bug."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.1)
            if ".ln_" in name and name.endswith("weight"):
                p.add_(1.0)
    return model.eval()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """(torch, transformers, model, dirs): dirs['prefixed'] from save_pretrained, dirs['hub'] without prefix."""
    torch = require("torch")
    transformers = require("transformers")
    torch.manual_seed(0)
    model = _randomise(transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_SIZES)), torch)
    root = tmp_path_factory.mktemp("hf_gpt2")
    prefixed, hub = root / "prefixed", root / "hub"
    model.save_pretrained(prefixed)
    # the hub's layout: no "transformer." prefix and no lm_head
    tensors = load_tensors(prefixed / "model.safetensors")
    assert any(k.startswith("transformer.") for k in tensors)  # else the two layouts would not differ
    hub_tensors = {k.removeprefix("transformer."): v for k, v in tensors.items() if not k.startswith("lm_head")}
    save_tensors(hub / "model.safetensors", hub_tensors, metadata={"format": "pt"})
    shutil.copy(prefixed / "config.json", hub / "config.json")
    return torch, transformers, model, {"prefixed": prefixed, "hub": hub}


def _tokens(batch=2, length=16, vocab=HF_SIZES["vocab_size"], seed=1):
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, length))


def _hf_logits(torch, model, idx):
    with torch.no_grad():
        return model(torch.tensor(idx)).logits.numpy()


def _tiny_logits(model, idx):
    with tinylora.no_grad():
        logits, _ = model(tinylora.tensor(idx))
    return logits.numpy()


def _variant(hf, name, edit):
    """A copy of the prefixed checkpoint with its tensors passed through `edit` (a dict -> dict function)."""
    _, _, _, dirs = hf
    target = dirs["prefixed"].parent / name
    tensors = edit(load_tensors(dirs["prefixed"] / "model.safetensors"))
    save_tensors(target / "model.safetensors", tensors, metadata={"format": "pt"})
    shutil.copy(dirs["prefixed"] / "config.json", target / "config.json")
    return target


# ------------------------------------------------------------------ same function as HF
@pytest.mark.parametrize("layout", ["prefixed", "hub"])
def test_logits_match_hf_float32(hf, layout):
    torch, _, model, dirs = hf
    tiny = load_gpt2(dirs[layout]).eval()
    assert tiny.config.block_size == HF_SIZES["n_positions"] and tiny.wte.weight.dtype == np.float32
    idx = _tokens()
    # float32, 2 layers of width 32: both libraries round differently at ~1e-7 relative; 1e-5 is ample
    assert_close(_tiny_logits(tiny, idx), _hf_logits(torch, model, idx), rtol=0, atol=1e-5, what="logits")


def test_config_fields_are_mapped(hf):
    _, _, _, dirs = hf
    tiny = load_gpt(dirs["hub"])
    c = tiny.config
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size) == (2, 2, 32, 100, 64)
    assert c.dropout == 0.1 and c.layer_norm_eps == 1e-5  # GPT2Config's defaults, read from config.json


def test_greedy_generation_matches_hf_float64(hf):
    torch, _, model, dirs = hf
    tiny = load_gpt2(dirs["prefixed"], dtype="float64").eval()
    reference = model.double()
    try:
        prompt = _tokens(batch=1, length=5, seed=2)
        new = 20
        with torch.no_grad():
            expected = reference.generate(torch.tensor(prompt), max_new_tokens=new, min_new_tokens=new,
                                          do_sample=False, pad_token_id=0).numpy()[0]
    finally:
        model.float()
    seq = list(prompt[0])
    for _ in range(new):  # greedy: append the argmax of the last position's logits
        logits = _tiny_logits(tiny, np.array([seq]))
        seq.append(int(np.argmax(logits[0, -1])))
    assert seq == list(expected), f"tinylora {seq}\nHF       {list(expected)}"


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_files_are_upcast_to_float32(hf, tmp_path, half):
    torch, transformers, model, _ = hf
    low = transformers.GPT2LMHeadModel(model.config)
    low.load_state_dict(model.state_dict())
    low = low.to(getattr(torch, half))
    low.save_pretrained(tmp_path)
    tiny = load_gpt2(tmp_path)
    assert tiny.wte.weight.dtype == np.float32
    # widening float16/bfloat16 to float32 is exact
    expected = low.transformer.h[1].mlp.c_fc.weight.detach().float().numpy().T  # Conv1D (in, out) -> (out, in)
    np.testing.assert_array_equal(tiny.blocks[1].mlp.fc.weight.detach().numpy(), expected)


def test_tied_lm_head_in_file_is_accepted(hf):
    def add_head(t):
        return {**t, "lm_head.weight": t["transformer.wte.weight"]}

    tiny = load_gpt2(_variant(hf, "with_head", add_head))
    hub_wte = load_tensors(hf[3]["hub"] / "model.safetensors")["wte.weight"]
    np.testing.assert_array_equal(tiny.wte.weight.detach().numpy(), hub_wte)


# ------------------------------------------------------------------ tinylora -> HF
def test_save_gpt2_loads_in_transformers(hf, tmp_path):
    torch, transformers, _, _ = hf
    tinylora.manual_seed(3)
    tiny = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=16, dropout=0.0)).eval()
    for p in tiny.parameters():  # GPT-2's init leaves biases at 0; randomise so the biases are checked too
        p.data[...] += np.random.default_rng(p.size).normal(0, 0.1, p.shape).astype(np.float32)
    save_gpt2(tiny, tmp_path)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    idx = _tokens(vocab=50, length=10)
    assert_close(_hf_logits(torch, reference, idx), _tiny_logits(tiny, idx), rtol=0, atol=1e-5, what="logits")
    again = load_gpt2(tmp_path)
    for (name, p), (_, q) in zip(tiny.named_parameters(), again.named_parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy(), err_msg=name)


def test_save_gpt2_of_a_merged_lora_model(hf, tmp_path):
    torch, transformers, base, dirs = hf
    tiny = apply_lora(load_gpt2(dirs["hub"]), r=2, alpha=4, targets=("q", "v", "fc")).eval()
    for _, layer in lora_layers(tiny):  # a nonzero ΔW = (α/r) B A, as after fine-tuning
        layer.lora_B.data[...] = np.random.default_rng(layer.out_features).normal(0, 0.1, layer.lora_B.shape)
    with pytest.raises(ValueError, match="not merged"):
        save_gpt2(tiny, tmp_path)  # would silently drop ΔW
    expected = _tiny_logits(tiny, _tokens())
    assert np.abs(expected - _hf_logits(torch, base, _tokens())).max() > 1e-3  # ΔW matters: dropping it would fail
    save_gpt2(merge_lora(tiny), tmp_path)  # W0 + ΔW, written as a plain GPT-2
    reference = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert_close(_hf_logits(torch, reference, _tokens()), expected, rtol=0, atol=1e-5, what="merged logits")


# ------------------------------------------------------------------ clear errors
def test_missing_tensor_is_named(hf):
    def drop(t):
        return {k: v for k, v in t.items() if k != "transformer.h.1.mlp.c_fc.bias"}

    with pytest.raises(KeyError, match=r"h\.1\.mlp\.c_fc\.bias"):
        load_gpt2(_variant(hf, "missing", drop))


def test_misshaped_tensor_names_key_and_both_shapes(hf):
    def shrink(t):
        return {**t, "transformer.h.0.attn.c_attn.weight": t["transformer.h.0.attn.c_attn.weight"][:, :95]}

    with pytest.raises(ValueError, match=r"h\.0\.attn\.c_attn\.weight.*\(32, 95\).*\(32, 96\)"):
        load_gpt2(_variant(hf, "misshaped", shrink))


def test_untied_lm_head_is_refused(hf):
    def other_head(t):
        return {**t, "lm_head.weight": t["transformer.wte.weight"] + 1}

    with pytest.raises(ValueError, match="lm_head"):
        load_gpt2(_variant(hf, "untied", other_head))


def test_integer_weights_are_refused(hf):
    def as_int(t):
        return {**t, "transformer.ln_f.bias": t["transformer.ln_f.bias"].astype(np.int32)}

    with pytest.raises(ValueError, match=r"ln_f\.bias.*int32"):
        load_gpt2(_variant(hf, "integer", as_int))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_reported(hf, tmp_path, damage):
    _, _, _, dirs = hf
    shutil.copy(dirs["hub"] / "config.json", tmp_path / "config.json")
    good = (dirs["hub"] / "model.safetensors").read_bytes()
    bad = b"this is not a safetensors file" if damage == "garbage" else good[: len(good) - 100]
    (tmp_path / "model.safetensors").write_bytes(bad)
    with pytest.raises(FileFormatError, match="model.safetensors"):
        load_gpt2(tmp_path)


def test_missing_directory_and_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gpt2(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text('{"n_layer": 1, "n_head": 1, "n_embd": 4, "vocab_size": 5, "n_positions": 8}')
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_gpt2(tmp_path)


def test_unsupported_config_is_refused(hf, tmp_path):
    _, _, model, _ = hf
    cfg = model.config.to_dict()
    cfg["activation_function"] = "relu"
    shutil.copy(hf[3]["hub"] / "model.safetensors", tmp_path / "model.safetensors")
    write_json_atomic(tmp_path / "config.json", cfg)
    with pytest.raises(ValueError, match="activation_function"):
        load_gpt2(tmp_path)
