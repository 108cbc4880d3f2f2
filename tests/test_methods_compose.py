"""Methods compose where the math allows: LoRA+ with every LoRA-like method, rsLoRA with DoRA / PiSSA /
OLoRA, LoRA + BitFit (trainable biases) with DoRA; unsupported pairings are one clear error.
(DoRA or AdaLoRA on an NF4-quantized base needs the QLoRA code, not in main yet: not tested here.)"""

from __future__ import annotations

import numpy as np
import pytest

import tinylora
from tinylora.lora import lora_layers, mark_only_lora_as_trainable
from tinylora.methods.adalora import apply_adalora
from tinylora.methods.dora import apply_dora
from tinylora.methods.glora import apply_glora
from tinylora.methods.loraplus import loraplus_optimizer
from tinylora.methods.pissa import apply_olora, apply_pissa
from tinylora.methods.rslora import apply_rslora, make_rslora
from tinylora.model.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
IDX = tinylora.tensor(np.arange(12).reshape(2, 6))
LORA_LIKE = {
    "rslora": lambda m: apply_rslora(m, r=2),
    "dora": lambda m: apply_dora(m, r=2),
    "dora+rslora": lambda m: apply_dora(m, r=2, rslora=True),
    "pissa": lambda m: apply_pissa(m, r=2),
    "olora+rslora": lambda m: apply_olora(m, r=2, rslora=True),
    "adalora": lambda m: apply_adalora(m, init_r=3),
}


@pytest.mark.parametrize("method", sorted(LORA_LIKE))
def test_loraplus_with_every_lora_like_method(method):
    """The B of each method (DoRA's B, PiSSA's B, AdaLoRA's P) takes λ·lr; one Adam step moves it λ× as far."""
    model = LORA_LIKE[method](GPT(CONFIG))
    for _, layer in lora_layers(model):  # make every factor's gradient nonzero (AdaLoRA: Λ ≠ 0)
        for p in layer.adapter_parameters():
            p.data += np.random.default_rng(0).normal(0, 0.5, p.shape).astype(p.dtype)
    opt = loraplus_optimizer(model, lr=1e-4, ratio=16)
    layer = model.blocks[0].attn.q
    a0, b0 = layer.lora_A.data.copy(), layer.lora_B.data.copy()
    model(IDX, IDX)[1].backward()
    opt.step()
    big_a, big_b = np.abs(layer.lora_A.grad.numpy()) > 1e-6, np.abs(layer.lora_B.grad.numpy()) > 1e-6  # >> ε = 1e-8
    assert big_a.any() and big_b.any()
    np.testing.assert_allclose(np.abs(layer.lora_A.data - a0)[big_a], 1e-4, rtol=2e-2)
    np.testing.assert_allclose(np.abs(layer.lora_B.data - b0)[big_b], 16e-4, rtol=2e-2)


def test_dora_with_bitfit_trains_biases_and_magnitudes(tmp_path):
    model = mark_only_lora_as_trainable(apply_dora(GPT(CONFIG), r=2), bias="all")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "blocks.0.attn.q.magnitude" in trainable and "blocks.0.attn.k.bias" in trainable
    assert "blocks.0.attn.q.base.bias" in trainable
    before = model.blocks[0].attn.k.bias.data.copy()
    opt = loraplus_optimizer(model, lr=1e-3, ratio=1.0)
    model(IDX, IDX)[1].backward()
    opt.step()
    assert np.abs(model.blocks[0].attn.k.bias.data - before).max() > 0


def test_unsupported_pairings_are_clear_errors():
    with pytest.raises(ValueError, match="already has an adapter"):  # no DoRA on AdaLoRA (PEFT refuses too)
        apply_dora(apply_adalora(GPT(CONFIG), init_r=3), r=2)
    with pytest.raises(ValueError, match="already has an adapter"):  # adapters are not stacked
        apply_pissa(apply_dora(GPT(CONFIG), r=2), r=2)
    glora = apply_glora(GPT(CONFIG), r=2)
    with pytest.raises(ValueError, match="no LoRA-like layer"):  # GLoRA has no A/B pair for LoRA+
        loraplus_optimizer(glora, lr=1e-3)
    with pytest.raises(TypeError, match="GLoRA"):  # nor an α/r to rescale
        make_rslora(glora.blocks[0].attn.q)
    with pytest.raises(ValueError, match="already has an adapter"):
        apply_glora(apply_dora(GPT(CONFIG), r=2), r=2)
