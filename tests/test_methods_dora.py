"""tinylora.methods.dora: DoRA's known answers (init, magnitude, merge, the detached norm, zero rows).

PEFT equality (logits, every gradient, training, merged weights) is in tests/test_methods_peft.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from gradcheck import gradcheck

import tinylora
from tinylora import nn
from tinylora.lora import lora_layers, merge_lora, parameter_report, unmerge_lora
from tinylora.methods.dora import DoRALinear, apply_dora
from tinylora.model.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _layer(k=6, d=5, r=2, seed=0, dropout=0.0):
    """A float64 DoRALinear with nonzero B and a magnitude moved off ‖W0‖, so every term matters."""
    layer = DoRALinear(nn.Linear(k, d, dtype="float64"), r, alpha=3, dropout=dropout)
    rng = np.random.default_rng(seed)
    layer.lora_B.data[...] = rng.normal(size=layer.lora_B.shape)
    layer.magnitude.data[...] *= 1 + 0.5 * rng.random(d)
    return layer


def _x(shape=(3, 6), seed=1):
    return tinylora.tensor(np.random.default_rng(seed).normal(size=shape), dtype="float64")


def test_init_magnitude_is_row_norm_and_model_is_unchanged():
    model = GPT(CONFIG, dtype="float64").eval()
    idx = tinylora.tensor(np.arange(12).reshape(2, 6))
    with tinylora.no_grad():
        before = model(idx)[0].numpy()
        apply_dora(model, r=4, targets=("q", "v", "fc"))
        after = model(idx)[0].numpy()
    assert_close(after, before, rtol=0, atol=1e-14, what="DoRA at init vs base")  # m/n = 1 exactly up to rounding
    fc = model.blocks[0].mlp.fc
    assert fc.magnitude.shape == (4 * CONFIG.n_embd,)  # one per output feature (d,)
    assert_close(fc.magnitude.data, np.linalg.norm(fc.base.weight.data, axis=1), rtol=1e-15, atol=0, what="m = ‖W0‖_c")


def test_forward_is_magnitude_times_direction():
    layer = _layer()
    W = layer.base.weight.data + layer.delta_weight()  # W0 + sBA (d, k)
    W_prime = layer.magnitude.data[:, None] * W / np.linalg.norm(W, axis=1, keepdims=True)
    x = _x()
    expected = x.numpy() @ W_prime.T + layer.base.bias.data
    assert_close(layer(x).detach().numpy(), expected, rtol=0, atol=1e-13, what="m V/‖V‖")


def test_magnitude_gradient_is_exact_and_A_B_gradients_hold_the_norm_constant():
    layer = _layer()
    x = _x()
    gradcheck(lambda m: layer(x), [layer.magnitude])  # n does not depend on m: the full derivative

    n = layer._row_norms()
    full = layer._row_norms
    layer._row_norms = lambda add_delta=True: n  # hold n fixed, as backward does (paper §4.3)
    gradcheck(lambda A, B: layer(x), [layer.lora_A, layer.lora_B])
    layer._row_norms = full  # the real function: n moves with A and B, and backward ignores that on purpose
    with pytest.raises(AssertionError, match="disagree"):
        gradcheck(lambda B: layer(x), [layer.lora_B])


def test_dropout_path_equals_the_plain_path_when_dropout_is_off():
    """With p > 0 in eval mode dropout is the identity; with p > 0 in training, the formula's other branch
    (W0 x + b + (m/n − 1) W0 x̃ + (m/n) s B A x̃) must agree with it for x̃ = x: force it by a no-op copy."""
    layer = _layer(dropout=0.5)
    x = _x()
    expected = layer.eval()(x).detach().numpy()
    layer.lora_dropout.forward = lambda t: t * 1.0  # a new tensor equal to x: takes the x̃ ≠ x branch
    assert_close(layer(x).detach().numpy(), expected, rtol=0, atol=1e-13, what="two branches of DoRA's forward")


def test_merge_then_unmerge_restores_w0_and_merged_output_matches():
    layer = _layer().eval()
    x = _x()
    expected, w0 = layer(x).detach().numpy(), layer.base.weight.data.copy()
    layer.merge()
    assert layer.merged and layer.merged_norm is not None
    assert_close(layer(x).detach().numpy(), expected, rtol=0, atol=1e-13, what="merged vs unmerged")
    layer.merge()  # idempotent
    layer.unmerge()
    assert_close(layer.base.weight.data, w0, rtol=0, atol=1e-14, what="unmerge(merge(W0))")
    assert layer.merged_norm is None


def test_unmerge_uses_the_norm_cached_at_merge_time():
    """After merging, ‖W' + sBA‖ is not the norm of the merge: recomputing it would give another W0."""
    layer = _layer()
    w0 = layer.base.weight.data.copy()
    layer.merge()
    wrong = np.linalg.norm(layer.base.weight.data + layer.delta_weight(), axis=1)
    assert np.abs(wrong - layer.merged_norm).max() > 1e-3
    layer.unmerge()
    assert_close(layer.base.weight.data, w0, rtol=0, atol=1e-14, what="W0 back")


def test_model_level_merge_and_parameter_count():
    model = apply_dora(GPT(CONFIG, dtype="float64").eval(), r=2, targets=("q", "v"))
    C, r = CONFIG.n_embd, 2
    per_matrix = r * (C + C) + C  # r(d + k) + d
    assert parameter_report(model)["trainable"] == CONFIG.n_layer * 2 * per_matrix
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = np.random.default_rng(0).normal(size=layer.lora_B.shape)
    idx = tinylora.tensor(np.arange(12).reshape(2, 6))
    with tinylora.no_grad():
        expected = model(idx)[0].numpy()
        merge_lora(model)
        assert_close(model(idx)[0].numpy(), expected, rtol=0, atol=1e-12, what="merged model")
        unmerge_lora(model)
        assert_close(model(idx)[0].numpy(), expected, rtol=0, atol=1e-12, what="unmerged model")


def test_zero_rows_are_errors_not_nans():
    linear = nn.Linear(4, 3, dtype="float64")
    linear.weight.data[1] = 0.0
    with pytest.raises(ValueError, match=r"rows \[1\] of W0 are zero"):
        DoRALinear(linear, r=1)

    layer = _layer(k=4, d=3, r=1)
    layer.lora_A.data[...] = 1.0  # make W0 + sBA exactly zero in row 0: B[0] A = -W0[0] / s
    layer.lora_B.data[...] = 0.0
    layer.base.weight.data[0] = 1.0
    layer.lora_B.data[0, 0] = -1.0 / layer.scaling
    with pytest.raises(ValueError, match=r"rows \[0\] of W0 \+ sBA are zero"):
        layer(_x((2, 4)))


def test_magnitude_trains_and_composes_with_rslora():
    model = apply_dora(GPT(CONFIG), r=4, alpha=2, targets=("q",), rslora=True)
    layer = model.blocks[0].attn.q
    assert layer.magnitude.requires_grad and layer.scaling == pytest.approx(2 / 4 ** 0.5)
    with pytest.raises(ValueError, match="already has an adapter"):
        apply_dora(model, r=2, targets=("q",))
