"""The LoRA paper's baselines (tinylora/methods/): counts, identities, freezing, errors, files.

1. counting:  on built GPTs of random sizes, the trainable count of each method equals its formula
              (adapters: L̂_Adpt (2dr + r + d) + 2 L̂_LN d; PreEmbed d (l_p + l_i); PreLayer L d (l_p + l_i);
              BitFit L·11d + d; FT^Top-n n (12d² + 13d)); GPT-2 small BitFit trains 102,144; the paper's
              own numbers for GPT-3 and RoBERTa shapes as plain arithmetic;
2. identity:  adapters (W_up = 0) compute exactly the base model; l_p = l_i = 0 does too;
3. freezing:  after a few AdamW steps every declared parameter changed and no other one did;
4. prefixes:  the special tokens use up sequence positions; KV-cache generation equals uncached;
              inserting them into batches keeps every target;
5. errors:    bad sizes and a second method are refused with one clear error, the model unchanged;
6. files:     save_method / load_method onto a fresh base reproduce the trained model's logits.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinylora
from tinylora.data import PairDataset
from tinylora.lora import apply_lora, parameter_report
from tinylora.methods import (
    VirtualTokenData,
    apply_adapter_h,
    apply_adapter_l,
    apply_bitfit,
    apply_full_ft,
    apply_prefix_embed,
    apply_prefix_layer,
    apply_top_layers,
    load_method,
    save_method,
)
from tinylora.methods.bottleneck_adapters import adapter_count
from tinylora.methods.prefix import prefix_count
from tinylora.model.generate import generate
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.optim import AdamW
from tinylora.tokenizers import ByteTokenizer

V = 64  # vocabulary of the test models


@st.composite
def configs(draw):
    n_head = draw(st.integers(1, 2))
    return GPTConfig(vocab_size=V, block_size=draw(st.integers(8, 16)), n_layer=draw(st.integers(1, 3)),
                     n_head=n_head, n_embd=n_head * draw(st.integers(2, 8)), dropout=0.0)


def logits_of(model, ids):
    with tinylora.no_grad():
        return model(tinylora.tensor(ids))[0].numpy()


def random_ids(config, batch=2, length=None, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, config.vocab_size, size=(batch, length or config.block_size))


# ------------------------------------------------------------------ 1. counting
@settings(max_examples=6)
@given(config=configs(), r_fraction=st.floats(0.01, 1.0), lp=st.integers(0, 3), li=st.integers(0, 3),
       n_top=st.integers(1, 3))
def test_trainable_counts_equal_the_formulas(config, r_fraction, lp, li, n_top):
    d, L = config.n_embd, config.n_layer
    r = max(1, int(r_fraction * d))
    n_top = min(n_top, L)
    expected = {
        apply_adapter_h: ({"r": r}, adapter_count(2 * L, 0, d, r)),
        apply_adapter_l: ({"r": r}, adapter_count(L, L, d, r)),
        apply_prefix_embed: ({"prefix_len": lp, "infix_len": li}, prefix_count(d, lp, li)),
        apply_prefix_layer: ({"prefix_len": lp, "infix_len": li}, prefix_count(d, lp, li, n_layer=L)),
        apply_bitfit: ({}, L * 11 * d + d),
        apply_top_layers: ({"n": n_top}, n_top * (12 * d * d + 13 * d)),
    }
    for apply, (kwargs, count) in expected.items():
        model = GPT(config)
        total = parameter_report(model)["total"]
        apply(model, **kwargs)
        report = parameter_report(model)
        assert report["trainable"] == count, (apply.__name__, kwargs, report["trainable"], count)
        assert report["total"] == total + (count if apply not in (apply_bitfit, apply_top_layers) else 0)
    model = apply_full_ft(GPT(config))
    assert parameter_report(model)["trainable"] == parameter_report(model)["total"]


@pytest.mark.slow  # builds GPT-2 small (124M parameters): ~5-20 s here
def test_bitfit_on_gpt2_small_trains_102144():
    model = apply_bitfit(GPT(GPTConfig.gpt2()))
    assert parameter_report(model)["trainable"] == 102_144  # the paper's |Θ| for BitFit: 12 · 8,448 + 768 (ln_f included)


def test_the_papers_counts_as_arithmetic():
    # GPT-3 175B: L = 96, d = 12288; Adapter^H has two adapters per layer and no trainable LayerNorm
    assert adapter_count(2 * 96, 0, 12288, 8) == 40_109_568  # "40.1M" (Table 4)
    assert adapter_count(2 * 96, 0, 12288, 1) == 7_078_080  # "7.1M"
    assert prefix_count(12288, 256, 8) == 3_244_032  # PreEmbed l_p = 256, l_i = 8: "3.2M"
    # RoBERTa-large: L = 24, d = 1024; LoRA on W_q, W_v: |Θ| = 2 · L̂_LoRA · d · r with L̂_LoRA = 48 matrices
    assert 2 * 48 * 1024 * 8 == 786_432  # "0.8M" (Table 2)
    assert adapter_count(48, 0, 1024, 8) == 835_968  # Adapter^H r = 8: "0.8M"
    # and LoRA's own count on a built model agrees with the formula (RoBERTa-large width, one layer)
    model = apply_lora(GPT(GPTConfig(vocab_size=8, block_size=4, n_layer=1, n_head=16, n_embd=1024)), r=8)
    assert parameter_report(model)["trainable"] == 2 * 2 * 1024 * 8


# ------------------------------------------------------------------ 2. identity at init
@settings(max_examples=8)
@given(config=configs(), r=st.integers(1, 4), seed=st.integers(0, 100))
def test_adapters_start_as_the_base_model(config, r, seed):
    tinylora.manual_seed(seed)
    ids = random_ids(config, seed=seed)
    for apply in (apply_adapter_h, apply_adapter_l):
        model = GPT(config).eval()
        base = logits_of(model, ids)
        apply(model, r=min(r, config.n_embd))
        np.testing.assert_array_equal(logits_of(model, ids), base)  # exactly: W_up = 0, b_up = 0


@settings(max_examples=6)
@given(config=configs(), seed=st.integers(0, 100))
def test_empty_prefix_is_the_base_model(config, seed):
    ids = random_ids(config, seed=seed)
    for apply in (apply_prefix_embed, apply_prefix_layer):
        model = GPT(config).eval()
        base = logits_of(model, ids)
        apply(model, prefix_len=0, infix_len=0)
        np.testing.assert_array_equal(logits_of(model, ids), base)


# ------------------------------------------------------------------ 3. freezing
def _train_steps(model, data, steps=3):
    optimizer = AdamW(model.trainable_parameters(), lr=1e-2)
    for step in range(steps):
        x, y = data.get_batch(np.arange(4)) if not hasattr(data, "starts") else data.get_batch(4, np.random.default_rng(step))
        _, loss = model(tinylora.tensor(x), tinylora.tensor(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


PAIRS = [{"prompt": f"p{i}:", "completion": f" answer {i}"} for i in range(6)]
METHODS = [
    (apply_full_ft, {}), (apply_top_layers, {"n": 1}), (apply_bitfit, {}),
    (apply_prefix_embed, {"prefix_len": 2, "infix_len": 1}), (apply_prefix_layer, {"prefix_len": 2, "infix_len": 1}),
    (apply_adapter_h, {"r": 2}), (apply_adapter_l, {"r": 2}),
]


def _model_and_data(apply, kwargs):
    config = GPTConfig.tiny(vocab_size=ByteTokenizer().vocab_size, n_layer=2, block_size=32, dropout=0.0)
    model = apply(GPT(config), **kwargs)
    virtual = model.virtual_tokens
    n = virtual.n_tokens if virtual is not None else 0
    data = PairDataset(PAIRS, ByteTokenizer(), config.block_size - n)
    return model, (VirtualTokenData(data, virtual) if virtual is not None else data)


@pytest.mark.parametrize("apply,kwargs", METHODS, ids=[m[0].__name__ for m in METHODS])
def test_only_the_declared_parameters_change(apply, kwargs):
    model, data = _model_and_data(apply, kwargs)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    _train_steps(model, data)
    for name, p in model.named_parameters():
        changed = not np.array_equal(p.data, before[name])
        assert changed == p.requires_grad, f"{name}: trainable={p.requires_grad} but changed={changed}"


# ------------------------------------------------------------------ 4. prefixes
def test_the_special_tokens_use_up_positions():
    config = GPTConfig.tiny(block_size=16, dropout=0.0)
    model = apply_prefix_embed(GPT(config), prefix_len=3, infix_len=2)
    prompt = model.virtual_tokens.wrap([1] * 11)  # 3 + 11 + 2 = 16 positions: fits
    logits_of(model, [prompt])
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        logits_of(model, [model.virtual_tokens.wrap([1] * 12)])


@pytest.mark.parametrize("apply", [apply_prefix_embed, apply_prefix_layer])
def test_kv_cache_generation_with_a_prefix_equals_uncached(apply):
    config = GPTConfig.tiny(block_size=32, dropout=0.0)
    model = apply(GPT(config), prefix_len=3, infix_len=2)
    model.virtual_tokens.weight.data[...] += np.random.default_rng(0).normal(0, 1.0, model.virtual_tokens.weight.shape)
    prompt = np.asarray([model.virtual_tokens.wrap([5, 6, 7])])
    cached = generate(model, prompt, 10, greedy=True, use_cache=True).numpy()
    uncached = generate(model, prompt, 10, greedy=True, use_cache=False).numpy()
    np.testing.assert_array_equal(cached, uncached)


def test_inserting_special_tokens_keeps_every_target():
    config = GPTConfig.tiny(vocab_size=ByteTokenizer().vocab_size, block_size=40, dropout=0.0)
    model = apply_prefix_layer(GPT(config), prefix_len=2, infix_len=3)
    data = PairDataset(PAIRS, ByteTokenizer(), config.block_size - 5)
    x, y = data.get_batch(np.arange(3))
    new_x, new_y = VirtualTokenData(data, model.virtual_tokens).get_batch(np.arange(3))
    for row in range(3):
        assert list(new_y[row][new_y[row] != -100]) == list(y[row][y[row] != -100])
        p = len(ByteTokenizer().encode(PAIRS[row]["prompt"]))
        assert list(new_x[row, :2]) == model.virtual_tokens.prefix_ids()
        assert list(new_x[row, 2 + p : 5 + p]) == model.virtual_tokens.infix_ids()
        first = int(np.argmax(new_y[row] != -100))
        assert first == 2 + p + 3 - 1  # the last infix position predicts the completion's first token


# ------------------------------------------------------------------ 5. errors
BAD = [
    (apply_prefix_embed, {"prefix_len": 10, "infix_len": 6}, "must be < block_size"),
    (apply_prefix_layer, {"prefix_len": -1}, "prefix_len"),
    (apply_adapter_h, {"r": 0}, "bottleneck r"),
    (apply_adapter_l, {"r": 65}, "bottleneck r"),
    (apply_adapter_h, {"r": 2, "layers": [5]}, "not a block"),
    (apply_top_layers, {"n": 3}, "top blocks"),
]


@pytest.mark.parametrize("apply,kwargs,message", BAD, ids=[b[2] for b in BAD])
def test_bad_input_is_refused_and_the_model_is_unchanged(apply, kwargs, message):
    model = GPT(GPTConfig.tiny(block_size=16))
    before = {n: p.data.copy() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=message):
        apply(model, **kwargs)
    _assert_untouched(model, before)


@pytest.mark.parametrize("second", [apply_bitfit, apply_adapter_l, apply_prefix_embed, apply_full_ft])
def test_a_second_method_is_refused(second):
    for first in (lambda m: apply_adapter_h(m, r=2), lambda m: apply_lora(m, r=2)):
        model = first(GPT(GPTConfig.tiny()))
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        with pytest.raises(ValueError, match="already has"):
            second(model)
        assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable


def _assert_untouched(model, before):
    assert {n: p.data for n, p in model.named_parameters()}.keys() == before.keys()
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
        assert p.requires_grad
    assert model.virtual_tokens is None and getattr(model, "finetune_method", None) is None
    assert all(b.after_attn is None and b.after_mlp is None for b in model.blocks)


# ------------------------------------------------------------------ 6. files
@pytest.mark.parametrize("apply,kwargs", METHODS[1:], ids=[m[0].__name__ for m in METHODS[1:]])
def test_save_and_load_reproduce_the_trained_model(apply, kwargs, tmp_path):
    model, data = _model_and_data(apply, kwargs)
    base_state = {n: p.data.copy() for n, p in model.named_parameters()}  # the base as it was (hash-checked)
    _train_steps(model, data, steps=2)
    save_method(model, tmp_path / "m")
    x, _ = data.get_batch(np.arange(2))
    fresh = GPT(model.config)
    fresh.load_state_dict({n: a for n, a in base_state.items() if n in dict(fresh.named_parameters())},
                          strict=False)
    load_method(fresh, tmp_path / "m")
    np.testing.assert_array_equal(logits_of(fresh.eval(), x), logits_of(model.eval(), x))
