"""Named adapters on one base: switching is exact, the base is never touched, bad input changes nothing."""

from __future__ import annotations

import numpy as np
import pytest

import tinylora
from tinylora.lora import (
    active_adapter, adapter_report, adapters_disabled, add_adapter, apply_lora, delete_adapter, list_adapters,
    load_named_adapter, merge_lora, save_adapter, set_adapter, unmerge_lora,
)
from tinylora.lora.apply import lora_layers
from tinylora.model.gpt import GPT, GPTConfig


def _model(dtype=None):
    model = GPT(GPTConfig.tiny(dropout=0.0), dtype=dtype)
    model.eval()
    return model


def _randomize(model, name, seed):
    """Give adapter `name` a random, nonzero B (fresh adapters start at B = 0, i.e. the base)."""
    rng = np.random.default_rng(seed)
    before = active_adapter(model)
    set_adapter(model, name)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = rng.normal(0, 0.5, layer.lora_B.shape).astype(layer.lora_B.dtype)
    set_adapter(model, before)


def _two_adapters(dtype=None):
    model = _model(dtype)
    add_adapter(model, "a", r=4, targets=("q", "v"))
    add_adapter(model, "b", r=2, alpha=8, targets=("q", "v"))
    _randomize(model, "a", 1)
    _randomize(model, "b", 2)
    return model


def _logits(model, idx):
    with tinylora.no_grad():
        return model(idx)[0].numpy().copy()


def _base_weights(model):
    return {n: p.data.copy() for n, p in model.named_parameters() if "lora_" not in n}


IDX = np.arange(24).reshape(2, 12) % 256


def test_switching_a_b_a_gives_a_back_bitwise_and_never_touches_the_base():
    model = _two_adapters()
    base = _base_weights(model)
    set_adapter(model, "a")
    first = _logits(model, IDX)
    set_adapter(model, "b")
    other = _logits(model, IDX)
    set_adapter(model, "a")
    again = _logits(model, IDX)
    assert np.array_equal(first, again)  # bitwise: the same arrays, the same operations
    assert not np.allclose(first, other)  # and B really is a different adapter
    for name, value in _base_weights(model).items():
        assert np.array_equal(value, base[name]), name


def test_named_adapters_are_listed_active_first_and_trained_one_at_a_time():
    model = _two_adapters()
    assert list_adapters(model) == ["a", "b"] and active_adapter(model) == "a"
    set_adapter(model, "b")
    assert list_adapters(model) == ["b", "a"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    layer = dict(lora_layers(model))["blocks.0.attn.q"]
    assert layer.r == 2 and layer.scaling == 4.0  # the active adapter's r and α/r
    assert len(trainable) == 2 * len(list(lora_layers(model)))  # only the active A, B are parameters


def test_a_fresh_adapter_is_the_base_model_and_the_base_matches_adapters_disabled():
    model = _model()
    base = _logits(model, IDX)
    add_adapter(model, "a", r=4)
    add_adapter(model, "fresh", r=8)
    _randomize(model, "a", 0)
    with adapters_disabled(model):
        assert np.array_equal(_logits(model, IDX), base)
    set_adapter(model, "fresh")
    np.testing.assert_allclose(_logits(model, IDX), base, atol=0, rtol=0)  # B = 0: ΔW x is exactly 0


def test_merge_a_unmerge_merge_b_returns_w0_within_float_rounding():
    """W0 -> W0 + ΔA -> (W0 + ΔA) - ΔA -> + ΔB -> - ΔB: four float32 roundings.

    Each add or subtract rounds its result to within half an ulp, |err| <= (ε/2)|result|, ε = 2^-23,
    so the final error is bounded by 4 · (ε/2) · max(|W0| + |ΔA| + |ΔB|); the test asserts that bound.
    """
    model = _two_adapters(dtype=tinylora.float32)
    w0 = {n: layer.base.weight.data.copy() for n, layer in lora_layers(model)}
    deltas = {}
    for name in ("a", "b"):
        set_adapter(model, name)
        deltas[name] = {n: layer.delta_weight() for n, layer in lora_layers(model)}
    set_adapter(model, "a")
    merge_lora(model)
    unmerge_lora(model)
    set_adapter(model, "b")
    merge_lora(model)
    for n, layer in lora_layers(model):
        np.testing.assert_allclose(layer.base.weight.data, w0[n] + deltas["b"][n], rtol=0, atol=1e-6)
    unmerge_lora(model)
    eps = np.finfo(np.float32).eps
    for n, layer in lora_layers(model):
        bound = 4 * (eps / 2) * np.max(np.abs(w0[n]) + np.abs(deltas["a"][n]) + np.abs(deltas["b"][n]))
        err = np.max(np.abs(layer.base.weight.data - w0[n]))
        assert err <= bound, f"{n}: |W - W0| = {err:.3e} > bound {bound:.3e}"


def test_load_named_adapter_without_reloading_the_base(tmp_path):
    model = _two_adapters()
    set_adapter(model, "b")
    expected = _logits(model, IDX)
    save_adapter(model, tmp_path / "b")
    other = _model()
    other.load_state_dict(dict((n, p.data) for n, p in _model_base_state(model)))
    add_adapter(other, "a", r=4)
    weight_id = id(other.blocks[0].attn.q.base.weight)
    load_named_adapter(other, tmp_path / "b", "b_loaded")
    assert id(other.blocks[0].attn.q.base.weight) == weight_id  # the base object was kept
    assert active_adapter(other) == "a"
    set_adapter(other, "b_loaded")
    assert np.array_equal(_logits(other, IDX), expected)
    # into a model without LoRA: it becomes the active adapter under the given name
    fresh = _model()
    fresh.load_state_dict(dict((n, p.data) for n, p in _model_base_state(model)))
    load_named_adapter(fresh, tmp_path / "b", "only")
    assert list_adapters(fresh) == ["only"]
    assert np.array_equal(_logits(fresh, IDX), expected)


def _model_base_state(model):
    """(name, parameter) of the base model's weights under their plain GPT names."""
    return [(n.replace(".base.", "."), p) for n, p in model.named_parameters() if "lora_" not in n]


def test_adapter_report_counts_bytes_per_adapter():
    model = _two_adapters()
    report = adapter_report(model)
    rows = {row["name"]: row for row in report["adapters"]}
    n_layers, c = 2, 64  # tiny: 2 blocks, q and v, C = 64
    assert rows["a"]["params"] == n_layers * 2 * 4 * (c + c)  # r (d + k) per adapted matrix
    assert rows["b"]["params"] == n_layers * 2 * 2 * (c + c)
    assert rows["a"]["bytes"] == 4 * rows["a"]["params"]  # float32
    assert report["base_bytes"] == 4 * _model().num_parameters()
    assert "b:" in report["text"]


# ------------------------------------------------------------------ bad input: one error, state unchanged
def _snapshot(model):
    layers = dict(lora_layers(model))
    return (list_adapters(model), {n: (layer.merged, id(layer.lora_A), layer.r) for n, layer in layers.items()},
            _base_weights(model))


def _assert_same(model, snap):
    names, layers, weights = _snapshot(model)
    assert names == snap[0] and layers == snap[1]
    assert all(np.array_equal(weights[n], snap[2][n]) for n in weights)


@pytest.mark.parametrize("call, error, words", [
    (lambda m: set_adapter(m, "nope"), KeyError, "no adapter named 'nope'"),
    (lambda m: delete_adapter(m, "nope"), KeyError, "no adapter named 'nope'"),
    (lambda m: add_adapter(m, "a", r=2), ValueError, "already holds an adapter named 'a'"),
    (lambda m: add_adapter(m, "base", r=2), ValueError, "reserved"),
    (lambda m: add_adapter(m, "c", r=2, targets=("q", "k")), ValueError, "same modules"),
    (lambda m: add_adapter(m, "c", r=2, layers=[0]), ValueError, "same modules"),
    (lambda m: add_adapter(m, "c", r=1000), ValueError, "rank r=1000"),
    (lambda m: delete_adapter(m, "a"), ValueError, "is the active adapter"),
])
def test_bad_input_raises_one_clear_error_and_changes_nothing(call, error, words):
    model = _two_adapters()
    snap = _snapshot(model)
    with pytest.raises(error, match=words):
        call(model)
    _assert_same(model, snap)


def test_switching_while_merged_is_refused_and_changes_nothing():
    model = _two_adapters()
    merge_lora(model)
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="is merged.*unmerge_lora"):
        set_adapter(model, "b")
    _assert_same(model, snap)


def test_an_adapter_on_other_modules_loads_beside_the_others_and_each_keeps_its_function(tmp_path):
    """q, k beside adapters on q, v: the layers cover q, k, v; each adapter is exactly zero where it has no
    layer, so each computes what it computes alone, switched to or mixed in one batch."""
    from tinylora.lora import load_adapter, mixed_adapters

    state = _model().state_dict()

    def base():
        plain = _model()
        plain.load_state_dict(state)
        return plain

    other = apply_lora(base(), r=2, targets=("q", "k"))
    for _, layer in lora_layers(other):
        layer.lora_B.data[...] = 0.1
    save_adapter(other, tmp_path / "qk")
    model = base()
    add_adapter(model, "a", r=4, targets=("q", "v"))
    add_adapter(model, "b", r=2, alpha=8, targets=("q", "v"))
    _randomize(model, "a", 1)
    _randomize(model, "b", 2)
    idx = tinylora.tensor(np.arange(12).reshape(2, 6) % model.config.vocab_size)
    with tinylora.no_grad():
        a_before = model(idx[:1])[0].numpy()
        load_named_adapter(model, tmp_path / "qk", "qk")
        np.testing.assert_array_equal(model(idx[:1])[0].numpy(), a_before)  # the active adapter: unchanged
        alone = load_adapter(base(), tmp_path / "qk").eval()(idx[1:])[0].numpy()
        set_adapter(model, "qk")
        np.testing.assert_allclose(model(idx[1:])[0].numpy(), alone, rtol=0, atol=1e-6)
        set_adapter(model, "a")
        with mixed_adapters(model, ["a", "qk"]):
            mixed = model(idx)[0].numpy()
    np.testing.assert_allclose(mixed, np.concatenate([a_before, alone]), rtol=0, atol=1e-6)


def test_loading_an_adapter_that_does_not_fit_is_refused_and_changes_nothing(tmp_path):
    model = _two_adapters()
    snap = _snapshot(model)
    bigger = GPT(GPTConfig.tiny(n_embd=32, dropout=0.0))
    apply_lora(bigger, r=2)
    save_adapter(bigger, tmp_path / "small")
    with pytest.raises(ValueError, match="different base model"):
        load_named_adapter(model, tmp_path / "small", "small")
    _assert_same(model, snap)
    with_bias = _model()
    apply_lora(with_bias, r=4)
    from tinylora.lora import mark_only_lora_as_trainable

    mark_only_lora_as_trainable(with_bias, bias="lora_only")
    save_adapter(with_bias, tmp_path / "bias")
    with pytest.raises(ValueError, match="trained biases"):
        load_named_adapter(model, tmp_path / "bias", "bias")
    _assert_same(model, snap)


def test_named_adapters_refuse_other_layer_types():
    class Other(tinylora.lora.LoRALinear):
        pass

    model = _model()
    model.blocks[0].attn.q = Other(model.blocks[0].attn.q, r=2)
    with pytest.raises(TypeError, match="plain LoRALinear"):
        add_adapter(model, "x", r=2)
    assert model.blocks[0].attn.q.stored_adapters == {}
