"""tinylora.methods.pissa: PiSSA and OLoRA initialisations (known answers) and the conversion to plain LoRA.

PEFT equality (A, B, W_res; logits on GPT-2; the converted adapter loaded by PEFT) is in
tests/test_methods_peft.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import tinylora
from tinylora import nn
from tinylora.lora import lora_layers
from tinylora.methods.pissa import PiSSALinear, apply_olora, apply_pissa, pissa_to_lora
from tinylora.model.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
IDX = tinylora.tensor(np.arange(12).reshape(2, 6))


def _logits(model):
    with tinylora.no_grad():
        return model.eval()(IDX)[0].numpy()


@pytest.mark.parametrize("apply", [apply_pissa, apply_olora])
@pytest.mark.parametrize("alpha", [None, 3.0])
def test_model_is_unchanged_at_init(apply, alpha):
    model = GPT(CONFIG, dtype="float64")
    before = _logits(model)
    apply(model, r=4, alpha=alpha, targets=("q", "v", "fc", "proj"))
    assert_close(_logits(model), before, rtol=0, atol=1e-13, what="W_res + sBA vs W0")  # float64 rounding


@pytest.mark.parametrize("d,k", [(12, 8), (8, 12)])
def test_pissa_residual_norm_is_the_next_singular_value(d, k):
    W0 = np.random.default_rng(0).normal(size=(d, k))
    linear = nn.Linear(k, d, dtype="float64")
    linear.weight.data[...] = W0
    layer = PiSSALinear(linear, r=3, alpha=2.0)
    sigma = np.linalg.svd(W0, compute_uv=False)
    assert_close(np.linalg.norm(layer.base.weight.data, 2), sigma[3], rtol=1e-12, atol=0, what="‖W_res‖₂ = σ_4")
    # s B A is the best rank-3 approximation: its singular values are σ_1..σ_3
    top = np.linalg.svd(layer.delta_weight(), compute_uv=False)[:3]
    assert_close(top, sigma[:3], rtol=1e-12, atol=0, what="σ(sBA)")
    assert_close(layer.base.weight.data + layer.delta_weight(), W0, rtol=0, atol=1e-13, what="W_res + sBA = W0")


def test_olora_b_has_orthonormal_columns_and_a_is_upper_triangular():
    layer = PiSSALinear(nn.Linear(10, 14, dtype="float64"), r=4, alpha=8.0, init="olora")
    B, A = layer.lora_B.data, layer.lora_A.data
    assert_close(B.T @ B, np.eye(4), rtol=0, atol=1e-13, what="BᵀB = I")
    assert not np.tril(A[:, :4], -1).any()  # the first r columns of R[:r] are upper triangular


def test_reset_returns_to_the_initial_factors():
    layer = PiSSALinear(nn.Linear(6, 5, dtype="float64"), r=2)
    a0 = layer.lora_A.data.copy()
    layer.lora_A.data += 1.0
    layer.reset_lora_parameters()
    np.testing.assert_array_equal(layer.lora_A.data, a0)


@pytest.mark.parametrize("apply", [apply_pissa, apply_olora])
@pytest.mark.parametrize("rslora", [False, True])
def test_conversion_to_plain_lora_keeps_the_function_on_the_original_base(apply, rslora):
    original = GPT(CONFIG, dtype="float64")
    w0 = original.blocks[0].attn.q.weight.data.copy()
    model = apply(original, r=2, alpha=4.0, targets=("q", "fc"), rslora=rslora)
    for _, layer in lora_layers(model):  # "train": move A and B away from A0, B0
        layer.lora_A.data += 0.05
        layer.lora_B.data -= 0.05
    trained = _logits(model)
    pissa_to_lora(model)
    q = model.blocks[0].attn.q
    assert type(q).__name__ == "LoRALinear" and q.r == 4
    assert_close(q.base.weight.data, w0, rtol=0, atol=1e-13, what="the original W0 is back")
    assert_close(_logits(model), trained, rtol=0, atol=1e-13, what="converted vs trained")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        f"blocks.{i}.{m}.{ab}" for i in range(2) for m in ("attn.q", "mlp.fc") for ab in ("lora_A", "lora_B")}


def test_bad_init_is_an_error():
    with pytest.raises(ValueError, match="init must be one of"):
        PiSSALinear(nn.Linear(4, 4), r=2, init="svd")
