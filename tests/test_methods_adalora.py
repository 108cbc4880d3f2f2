"""tinylora.methods.adalora: the budget schedule, masking, importance, the regulariser, and a task whose
answer is known (one matrix needs rank 1, the other much more)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from gradcheck import gradcheck

import tinylora
from tinylora import nn
from tinylora.methods.adalora import (
    AdaLoRALinear,
    RankAllocator,
    adalora_layers,
    apply_adalora,
    budget_schedule,
    orthogonal_regulariser,
)
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.optim import Adam

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)


def test_schedule_values_at_known_steps():
    """A worked example of PEFT's schedule: 4 matrices, init_r 12 -> target_r 8, tinit 10, tfinal 20, T 100."""
    def b(t):
        return budget_schedule(t, 48, 32, total_step=100, tinit=10, tfinal=20)[0]

    assert [b(t) for t in (0, 10, 11, 20, 45, 79, 80, 81, 100)] == [48, 48, 47, 42, 34, 32, 32, 32, 32]
    assert budget_schedule(10, 48, 32, 100, tinit=10, tfinal=20, delta_t=5)[1] is False  # no mask in warm-up
    assert budget_schedule(15, 48, 32, 100, tinit=10, tfinal=20, delta_t=5)[1] is True
    assert budget_schedule(16, 48, 32, 100, tinit=10, tfinal=20, delta_t=5)[1] is False
    assert budget_schedule(90, 48, 32, 100, tinit=10, tfinal=20, delta_t=5)[1] is True  # final phase: every step


def _layer(seed=0):
    layer = AdaLoRALinear(nn.Linear(6, 5, dtype="float64"), r=4, alpha=2.0)
    layer.lora_E.data[...] = np.random.default_rng(seed).normal(size=4)
    return layer


def test_zero_lambda_at_init_is_the_base_and_masked_triplets_contribute_nothing():
    layer = AdaLoRALinear(nn.Linear(6, 5, dtype="float64"), r=4)
    x = tinylora.tensor(np.random.default_rng(1).normal(size=(3, 6)), dtype="float64")
    assert_close(layer(x).detach().numpy(), layer.base(x).detach().numpy(), rtol=0, atol=0, what="Λ = 0")

    layer = _layer()
    layer.lora_E.data[[1, 3]] = 0.0  # triplets 1 and 3 masked
    before = layer(x).detach().numpy()
    layer.lora_A.data[[1, 3]] += 5.0  # whatever P and Q hold there ...
    layer.lora_B.data[:, [1, 3]] -= 7.0
    assert_close(layer(x).detach().numpy(), before, rtol=0, atol=1e-14, what="masked triplets")  # ... adds nothing
    assert layer.rank() == 2
    assert_close(layer.delta_weight(), (layer.lora_B.data * layer.lora_E.data) @ layer.lora_A.data * 2.0 / 4,
                 rtol=1e-14, atol=0, what="ΔW = s P Λ Q")


def test_forward_gradients_and_merge():
    layer = _layer()
    x = tinylora.tensor(np.random.default_rng(1).normal(size=(3, 6)), dtype="float64")
    gradcheck(lambda A, B, E: layer(x), [layer.lora_A, layer.lora_B, layer.lora_E])
    expected = layer(x).detach().numpy()
    layer.merge()
    assert_close(layer(x).detach().numpy(), expected, rtol=0, atol=1e-14, what="merged")


@pytest.mark.parametrize("squared", [False, True])
def test_orthogonal_regulariser(squared):
    model = apply_adalora(GPT(CONFIG, dtype="float64"), init_r=3, targets=("q",))
    layers = [layer for _, layer in adalora_layers(model)]
    for layer in layers:  # orthonormal P columns and Q rows: R = 0
        q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 3)))
        layer.lora_B.data[...], layer.lora_A.data[...] = q, q.T
    assert orthogonal_regulariser(model, squared).item() == pytest.approx(0.0, abs=1e-14)
    layers[0].lora_A.data[0] *= 2.0  # ‖QQᵀ − I‖_F = |4 − 1| = 3 for that one Q; mean over 4 matrices
    assert orthogonal_regulariser(model, squared).item() == pytest.approx((9.0 if squared else 3.0) / 4)
    layers[1].lora_A.data += 0.1  # away from the minimum, where the non-squared norm has no gradient
    layers[1].lora_B.data -= 0.1
    gradcheck(lambda A, B: orthogonal_regulariser(model, squared), [layers[1].lora_A, layers[1].lora_B])


def test_importance_ema_on_a_constant_gradient_converges():
    model = apply_adalora(GPT(CONFIG, dtype="float64"), init_r=2, targets=("q",), layers=[0])
    layer = adalora_layers(model)[0][1]
    allocator = RankAllocator(model, target_r=1, total_step=100)
    for p in layer.adapter_parameters():
        p.grad = tinylora.tensor(np.full(p.shape, 0.5))
    layer.lora_E.data[...] = 2.0
    for _ in range(200):
        allocator.update_importance()
    assert_close(allocator.sensitivity["blocks.0.attn.q.lora_E"], np.full(2, 1.0), rtol=1e-12, atol=0, what="Ī -> |w g|")
    assert allocator.uncertainty["blocks.0.attn.q.lora_E"].max() < 1e-12  # Ū -> 0


class TwoMatrices(nn.Module):
    """y1 = L1 x, y2 = L2 x: two adapted matrices, trained to targets whose true updates have rank 1 and 6."""

    def __init__(self, k=12, r=6):
        super().__init__()
        self.one = AdaLoRALinear(nn.Linear(k, k, dtype="float64"), r)
        self.six = AdaLoRALinear(nn.Linear(k, k, dtype="float64"), r)

    def forward(self, x):
        return self.one(x), self.six(x)


def test_budget_goes_where_the_true_update_has_rank():
    rng = np.random.default_rng(0)
    k, T, tfinal = 12, 150, 30
    model = TwoMatrices(k)
    u, v = rng.normal(size=(k, 1)), rng.normal(size=(1, k))
    delta_one = u @ v / 4  # rank 1
    delta_six = rng.normal(size=(k, 6)) @ rng.normal(size=(6, k)) / 4  # rank 6
    params = [p for layer in (model.one, model.six) for p in layer.adapter_parameters()]
    opt = Adam(params, lr=2e-2)
    allocator = RankAllocator(model, target_r=3, total_step=T, tinit=10, tfinal=tfinal, delta_t=5)
    for t in range(1, T + 1):
        x = rng.normal(size=(32, k))
        y1, y2 = model(tinylora.tensor(x, dtype="float64"))
        target1 = tinylora.tensor(x @ (model.one.base.weight.data + delta_one).T)
        target2 = tinylora.tensor(x @ (model.six.base.weight.data + delta_six).T)
        loss = ((y1 - target1) ** 2).mean() + ((y2 - target2) ** 2).mean()
        for p in params:
            p.grad = None
        loss.backward()
        opt.step()
        budget = allocator.step(t)
        total = sum(allocator.rank_allocation().values())
        if t > T - tfinal:
            assert budget == 6 and total <= 6, f"step {t}: rank {total} over the final budget 6"
        elif t > 10 and t % 5 == 0:
            assert total <= budget  # right after a mask, at most b(t) triplets remain
    ranks = allocator.rank_allocation()
    assert ranks["six"] >= 4 and ranks["one"] <= 2, f"final allocation {ranks}"


def test_allocator_errors():
    model = apply_adalora(GPT(CONFIG), init_r=4, targets=("q",))
    with pytest.raises(ValueError, match="total_step"):
        RankAllocator(model, target_r=2)
    with pytest.raises(ValueError, match="tinit < total_step - tfinal"):
        RankAllocator(model, target_r=2, total_step=10, tinit=5, tfinal=5)
    with pytest.raises(ValueError, match="target_r"):
        RankAllocator(model, target_r=5, total_step=10)
    with pytest.raises(ValueError, match="no AdaLoRA layers"):
        RankAllocator(GPT(CONFIG), total_step=10)
