"""Combining adapters, on constructed adapters whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

import tinylora
from tinylora.lora import add_adapter, combine_adapters, set_adapter
from tinylora.lora.adapters import adapter_state
from tinylora.lora.apply import lora_layers
from tinylora.lora.combine import concat_update, linear_update, relative_error, svd_update, weighted_delta
from tinylora.model.gpt import GPT, GPTConfig

D, K = 12, 10
rng = np.random.default_rng(0)


def _adapter(r, scale=1.0):
    """(A (r, K), B (D, r), s) in float64."""
    return rng.normal(size=(r, K)), rng.normal(size=(D, r)), scale


def test_concat_is_exactly_the_weighted_sum_even_with_different_ranks():
    (a1, b1, s1), (a2, b2, s2) = _adapter(2, 0.5), _adapter(5, 2.0)
    parts = [(0.7, a1, b1, s1), (-0.3, a2, b2, s2)]
    a, b = concat_update(parts)
    assert a.shape == (7, K) and b.shape == (D, 7)
    expected = 0.7 * 0.5 * b1 @ a1 - 0.3 * 2.0 * b2 @ a2
    np.testing.assert_allclose(b @ a, expected, rtol=0, atol=1e-12)  # float64: exact up to rounding


def test_svd_is_exact_when_the_rank_suffices_and_the_eckart_young_best_otherwise():
    (a1, b1, _), (a2, b2, _) = _adapter(2), _adapter(3)
    parts = [(1.0, a1, b1, 1.0), (0.5, a2, b2, 1.0)]
    target = weighted_delta(parts)  # rank 5
    a, b = svd_update(parts, rank=5)
    np.testing.assert_allclose(b @ a, target, rtol=0, atol=1e-10)
    sigma = np.linalg.svd(target, compute_uv=False)
    for k in (1, 2, 4):
        a, b = svd_update(parts, rank=k)
        error = np.linalg.norm(b @ a - target)
        assert np.isclose(error, np.sqrt(np.sum(sigma[k:] ** 2)), rtol=1e-10)  # the Eckart–Young optimum


def test_single_adapter_with_weight_one_reproduces_itself_and_weight_minus_one_negates_it():
    a1, b1, s1 = _adapter(3, 2.0)
    delta = s1 * b1 @ a1
    for update in (concat_update, linear_update, lambda p: svd_update(p, 3)):
        a, b = update([(1.0, a1, b1, s1)])
        np.testing.assert_allclose(b @ a, delta, rtol=0, atol=1e-10)
        a, b = update([(-1.0, a1, b1, s1)])
        np.testing.assert_allclose(b @ a, -delta, rtol=0, atol=1e-10)


def test_linear_is_not_the_weighted_sum_and_its_error_is_measured():
    """Two random rank-4 adapters, w = 0.7 / 0.3: B'A' carries cross terms (median 0.86 over 200 random draws, as the README reports)."""
    (a1, b1, _), (a2, b2, _) = _adapter(4), _adapter(4)
    parts = [(0.7, a1, b1, 1.0), (0.3, a2, b2, 1.0)]
    a, b = linear_update(parts)
    cross = np.sqrt(0.7 * 0.3) * (b1 @ a2 + b2 @ a1)  # the terms that should not be there
    np.testing.assert_allclose(b @ a, weighted_delta(parts) + cross, rtol=0, atol=1e-10)
    error = relative_error(a, b, parts)
    assert 0.3 < error < 1.5, error  # large: of the order of the cross terms, not rounding
    with pytest.raises(ValueError, match="same rank"):
        linear_update([(1.0, *_adapter(2)), (1.0, *_adapter(3))])


def test_combine_adapters_on_a_model_gives_the_weighted_sum_per_layer():
    model = GPT(GPTConfig.tiny(dropout=0.0), dtype=tinylora.float64)
    add_adapter(model, "a", r=2, alpha=4)
    add_adapter(model, "b", r=4, alpha=4)
    for name in ("a", "b"):
        set_adapter(model, name)
        for _, layer in lora_layers(model):
            layer.lora_B.data[...] = rng.normal(size=layer.lora_B.shape)
    combine_adapters(model, {"a": 0.25, "b": 1.5}, "cat", method="concat")
    combine_adapters(model, {"a": 0.25, "b": 1.5}, "svd6", method="svd", rank=6)
    for _, layer in lora_layers(model):
        expected = sum(w * adapter_state(layer, n).scaling * adapter_state(layer, n).lora_B.data
                       @ adapter_state(layer, n).lora_A.data for n, w in (("a", 0.25), ("b", 1.5)))
        for name in ("cat", "svd6"):
            s = adapter_state(layer, name)
            assert s.scaling == 1.0
            np.testing.assert_allclose(s.lora_B.data @ s.lora_A.data, expected, rtol=0, atol=1e-10)
    set_adapter(model, "cat")
    assert dict(lora_layers(model))["blocks.0.attn.q"].r == 6
    with pytest.raises(KeyError, match="no adapter named"):
        combine_adapters(model, {"zzz": 1.0}, "x")
    with pytest.raises(ValueError, match="same rank"):
        combine_adapters(model, {"a": 1.0, "b": 1.0}, "lin", method="linear")
    assert "lin" not in model.blocks[0].attn.q.stored_adapters
