"""tinylora.methods.rslora and .loraplus: the rank-stable first update and LoRA+'s learning-rate groups.

PEFT equality for rsLoRA (logits and every gradient) is in tests/test_methods_peft.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinylora
from tinylora import nn
from tinylora.lora import LoRALinear, apply_lora, lora_layers, mark_only_lora_as_trainable
from tinylora.methods.dora import apply_dora
from tinylora.methods.loraplus import loraplus_optimizer, loraplus_param_groups
from tinylora.methods.rslora import apply_rslora, make_rslora
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.optim import SGD, AdamW

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)


def _first_update_norm(r: int, rslora: bool, seed: int, k=96, d=48, alpha=4.0, lr=0.1) -> float:
    """‖ΔW x‖, the change of the layer's output on its one training input x, after one SGD step from
    B = 0 on L = y · g, for a fresh layer of rank r."""
    tinylora.manual_seed(seed)
    layer = LoRALinear(nn.Linear(k, d, dtype="float64"), r, alpha=alpha)
    if rslora:
        make_rslora(layer)
    rng = np.random.default_rng(seed)
    x = tinylora.tensor(rng.normal(size=(1, k)), dtype="float64")
    layer(x).backward(tinylora.tensor(rng.normal(size=(1, d)), dtype="float64"))
    SGD([layer.lora_A, layer.lora_B], lr=lr).step()
    return float(np.linalg.norm(layer.delta_weight() @ x.numpy().T))  # ΔW = s B' A (B was 0)


def test_rslora_first_update_size_does_not_depend_on_rank():
    """ΔW x = −η s² ‖A x‖² g, and ‖A x‖² is a sum of r positive terms (E = r‖x‖²/(3k)): the output
    moves ∝ s² r, i.e. 1/r for α/r and independent of r for α/√r. (‖ΔW‖_F itself grows like s² √r:
    the claim, in the paper too, is about the adapter's outputs.)"""
    def mean_norm(r, rslora):
        return np.mean([_first_update_norm(r, rslora, seed) for seed in range(64)])  # ‖Ax‖² at r = 2 is noisy: average

    rs = [mean_norm(r, True) for r in (2, 8, 32)]
    plain = [mean_norm(r, False) for r in (2, 8, 32)]
    assert max(rs) / min(rs) < 1.3, f"rsLoRA first-update norms {rs} vary with r"
    # plain LoRA: 16x smaller at r = 32 than at r = 2 (± the same 30%)
    assert 16 / 1.3 < plain[0] / plain[2] < 16 * 1.3, f"LoRA first-update norms {plain} should fall as 1/r"


def test_rslora_scaling_and_apply_only_touches_new_layers():
    model = apply_lora(GPT(CONFIG), r=4, alpha=8, targets=("q",))
    apply_rslora(model, r=9, alpha=6, targets=("v",))
    assert model.blocks[0].attn.q.scaling == 2.0  # α/r, untouched
    assert model.blocks[0].attn.v.scaling == 2.0  # α/√r = 6/3
    layer = model.blocks[1].attn.q.merge()
    with pytest.raises(RuntimeError, match="unmerge"):
        make_rslora(layer)


def _lora_model(bias="none"):
    model = apply_lora(GPT(CONFIG), r=2, targets=("q", "v"))
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = np.random.default_rng(0).normal(size=layer.lora_B.shape).astype(np.float32)
    return mark_only_lora_as_trainable(model, bias)


def test_loraplus_groups_have_the_stated_rates_and_peft_grouping():
    model = apply_dora(GPT(CONFIG), r=2, targets=("q",))
    mark_only_lora_as_trainable(model, bias="all")
    model.blocks[1].ln_2.weight.requires_grad_(True)  # a 1-D weight that is not a bias
    groups = loraplus_param_groups(model, lr=1e-3, ratio=16, weight_decay=0.1)
    by_key = {(g["lr"], g["weight_decay"]): {n for n, _ in g["params"]} for g in groups}
    assert by_key[(1e-3, 0.1)] == {f"blocks.{i}.attn.q.lora_A" for i in range(2)}
    assert by_key[(16e-3, 0.1)] == {f"blocks.{i}.attn.q.{n}" for i in range(2) for n in ("lora_B", "magnitude")}
    no_decay = by_key[(16e-3, 0.0)]  # every bias and LayerNorm weight, as PEFT's 1-D rule
    assert "blocks.0.attn.q.base.bias" in no_decay and "blocks.1.ln_2.weight" in no_decay and "ln_f.bias" in no_decay
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set().union(*by_key.values()) == trainable


def test_loraplus_first_adam_step_moves_b_lambda_times_further():
    """Adam's first step is lr · g/(|g| + ε) ≈ ±lr per element: so |ΔB| = λ·lr and |ΔA| = lr."""
    model = _lora_model()
    A, B = model.blocks[0].attn.q.lora_A, model.blocks[0].attn.q.lora_B
    a0, b0 = A.data.copy(), B.data.copy()
    opt = loraplus_optimizer(model, lr=1e-4, ratio=16)
    idx = tinylora.tensor(np.arange(12).reshape(2, 6))
    model(idx, idx)[1].backward()
    opt.step()
    dA, dB = np.abs(A.data - a0), np.abs(B.data - b0)
    big_a, big_b = np.abs(A.grad.numpy()) > 1e-5, np.abs(B.grad.numpy()) > 1e-5  # far above ε = 1e-8
    np.testing.assert_allclose(dA[big_a], 1e-4, rtol=1e-2)
    np.testing.assert_allclose(dB[big_b], 16e-4, rtol=1e-2)


def test_loraplus_with_ratio_one_is_plain_adamw_bit_for_bit():
    def train(make_opt):
        tinylora.manual_seed(0)
        model = _lora_model(bias="all")
        opt = make_opt(model)
        idx = tinylora.tensor(np.arange(12).reshape(2, 6))
        for _ in range(3):
            opt.zero_grad()
            model(idx, idx)[1].backward()
            opt.step()
        return [p.data.copy() for p in model.parameters()]

    plus = train(lambda m: loraplus_optimizer(m, lr=1e-3, ratio=1.0, weight_decay=0.0))
    plain = train(lambda m: AdamW([(n, p) for n, p in m.named_parameters() if p.requires_grad], lr=1e-3,
                                  weight_decay=0.0))
    for a, b in zip(plus, plain):
        np.testing.assert_array_equal(a, b)


def test_loraplus_errors():
    with pytest.raises(ValueError, match="no LoRA-like layer"):
        loraplus_param_groups(GPT(CONFIG), lr=1e-3)
    with pytest.raises(ValueError, match="ratio"):
        loraplus_param_groups(_lora_model(), lr=1e-3, ratio=0)


def test_loraplus_decays_the_1d_tensors_of_its_decaying_groups():
    """DoRA's magnitude m is 1-D and sits in group "B" with weight decay: it must decay (PEFT's torch AdamW
    decays every tensor of a group), though tinylora's AdamW skips vectors by default. With zero gradients
    Adam's step is 0, so one step is the decay alone: m <- m (1 - λ η wd)."""
    model = apply_dora(GPT(CONFIG, dtype="float64"), r=2)
    lr, ratio, wd = 1e-2, 4.0, 0.5
    optimizer = loraplus_optimizer(model, lr=lr, ratio=ratio, weight_decay=wd)
    layer = model.blocks[0].attn.q
    before = layer.magnitude.data.copy()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = tinylora.tensor(np.zeros(p.shape), dtype="float64")
    optimizer.step()
    np.testing.assert_allclose(layer.magnitude.data, before * (1 - lr * ratio * wd), rtol=1e-15, atol=0)
    assert all(g["decay_1d"] for g in optimizer.param_groups)


def test_loraplus_gives_adalora_lambda_a_learning_rate_as_peft_does():
    """PEFT stores Λ as (r, 1), so its 1-D rule never sends Λ to B's group: Λ learns at η, not λ η."""
    from tinylora.methods.adalora import apply_adalora

    model = apply_adalora(GPT(CONFIG), init_r=3)
    groups = loraplus_param_groups(model, lr=1e-3, ratio=16)
    rate = {name: g["lr"] for g in groups for name, _ in g["params"]}
    assert rate["blocks.0.attn.q.lora_E"] == 1e-3 and rate["blocks.0.attn.q.lora_A"] == 1e-3
    assert rate["blocks.0.attn.q.lora_B"] == 16e-3
