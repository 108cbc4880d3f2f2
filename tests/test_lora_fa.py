"""LoRA-FA (tinylora.methods.lora_fa): A stays bit-identical while B trains, B's gradient is LoRA's, and the
engine's accounting shows that the LoRA branch keeps A x (N, r) and not x (N, k)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import tinylora
from tinylora import nn
from tinylora.engine.backend import memory
from tinylora.lora import LoRALinear, apply_lora, lora_layers, merge_lora, parameter_report
from tinylora.methods.lora_fa import apply_lora_fa, freeze_lora_A
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.optim import AdamW


def _tiny_gpt(dtype=None):
    return GPT(GPTConfig.tiny(dropout=0.0), dtype=dtype)


def _batch(config, b=2, t=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, size=(b, t))
    return tinylora.tensor(x), tinylora.tensor(np.roll(x, -1, axis=1))


def test_only_b_trains_and_a_stays_bitwise_identical():
    model = apply_lora_fa(_tiny_gpt(), r=4, targets=("q", "v"))
    a_before = {name: layer.lora_A.data.copy() for name, layer in lora_layers(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(layer.lora_B) for _, layer in lora_layers(model)}
    c = model.config
    assert parameter_report(model)["trainable"] == c.n_layer * 2 * c.n_embd * 4  # |Θ| = d r per matrix (B only)
    opt = AdamW([(n, p) for n, p in model.named_parameters() if p.requires_grad], lr=1e-2)
    x, y = _batch(model.config)
    losses = []
    for _ in range(5):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # B learned something
    for name, layer in lora_layers(model):
        assert layer.lora_A.grad is None
        np.testing.assert_array_equal(layer.lora_A.data, a_before[name])  # bitwise
        assert np.any(layer.lora_B.data)


def test_b_gradient_equals_loras_for_the_same_a_b_x():
    rng = np.random.default_rng(0)
    base = nn.Linear(12, 10, dtype="float64")
    lora = LoRALinear(base, r=3, alpha=6)
    lora.lora_B.data[...] = rng.standard_normal(lora.lora_B.shape)
    fa = LoRALinear(nn.Linear(12, 10, dtype="float64"), r=3, alpha=6)
    for name in ("base.weight", "base.bias", "lora_A", "lora_B"):
        dict(fa.named_parameters())[name].data[...] = dict(lora.named_parameters())[name].data
    fa.lora_A.requires_grad_(False)
    x = rng.standard_normal((2, 5, 12))
    upstream = rng.standard_normal((2, 5, 10))
    for layer in (lora, fa):
        layer(tinylora.tensor(x, dtype="float64")).backward(upstream)
    np.testing.assert_array_equal(fa.lora_B.grad.numpy(), lora.lora_B.grad.numpy())
    assert fa.lora_A.grad is None and lora.lora_A.grad is not None


def _saved_bytes_of_one_call(layer, x):
    """Bytes the engine counts as 'saved' for backward while the output of layer(x) is alive."""
    before = memory.stats()["current"]["saved"]
    y = layer(x)
    after = memory.stats()["current"]["saved"]
    del y
    return after - before


@pytest.mark.parametrize("x_needs_grad", [False, True])
def test_lora_branch_saves_ax_not_x(x_needs_grad):
    b, s, k, d, r = 4, 32, 64, 48, 4
    itemsize = 4
    x = tinylora.tensor(np.random.default_rng(0).standard_normal((b, s, k)), dtype="float32", requires_grad=x_needs_grad)
    lora = LoRALinear(nn.Linear(k, d), r=r)
    fa = freeze_lora_A(LoRALinear(nn.Linear(k, d), r=r))
    saved_lora = _saved_bytes_of_one_call(lora, x)
    saved_fa = _saved_bytes_of_one_call(fa, x)
    # the multiply by the Python float α/r keeps that scalar (a 0-d float32 array, one itemsize) when
    # A x needs a gradient: always under LoRA (A trains), under LoRA-FA only when x needs one
    scalar = itemsize
    assert saved_fa == b * s * r * itemsize + (scalar if x_needs_grad else 0)
    assert saved_lora == b * s * (k + r) * itemsize + scalar  # LoRA also keeps x for ∂L/∂A
    assert saved_lora - saved_fa == b * s * k * itemsize + (0 if x_needs_grad else scalar)  # x (and the scalar)


def test_dropout_costs_its_own_mask_and_input():
    b, s, k, d, r = 4, 32, 64, 48, 4
    x = tinylora.tensor(np.random.default_rng(0).standard_normal((b, s, k)), dtype="float32", requires_grad=True)
    fa = freeze_lora_A(LoRALinear(nn.Linear(k, d), r=r, dropout=0.1))
    lora = LoRALinear(nn.Linear(k, d), r=r, dropout=0.1)
    # LoRA-FA with dropout: A x (float32) + the dropout mask (bool, 1 byte per input value) + the α/r scalar
    assert _saved_bytes_of_one_call(fa, x) == b * s * r * 4 + b * s * k * 1 + 4
    # LoRA with dropout: the dropped-out input (float32) for ∂L/∂A, its mask, A x and the scalar
    assert _saved_bytes_of_one_call(lora, x) == b * s * r * 4 + b * s * k * (4 + 1) + 4


def test_merge_is_loras_and_freeze_needs_lora_layers():
    model = apply_lora_fa(_tiny_gpt(dtype="float64"), r=2)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = np.random.default_rng(1).standard_normal(layer.lora_B.shape)
    x, _ = _batch(model.config)
    with tinylora.no_grad():
        before, _ = model(x)
    merge_lora(model)
    with tinylora.no_grad():
        after, _ = model(x)
    assert_close(after.numpy(), before.numpy(), rtol=1e-10, atol=1e-10, what="merged vs unmerged logits")
    with pytest.raises(ValueError, match="no LoRA layers"):
        freeze_lora_A(_tiny_gpt())


def test_lora_fa_and_lora_are_the_same_model_at_init():
    tinylora.manual_seed(3)
    fa = apply_lora_fa(_tiny_gpt(), r=4)
    tinylora.manual_seed(3)
    lora = apply_lora(_tiny_gpt(), r=4)
    for (_, a), (_, b) in zip(lora_layers(fa), lora_layers(lora)):
        np.testing.assert_array_equal(a.lora_A.data, b.lora_A.data)  # the same random A
