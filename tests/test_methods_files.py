"""tinylora.methods (table.py, files.py): every LoRA-family method applies by name, trains one step, saves and loads back exactly."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import tinylora
from tinylora.lora import lora_layers
from tinylora.methods import apply_method, load_method_adapter, save_method_adapter, training_hooks
from tinylora.methods.glora import glora_layers
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.optim import AdamW

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
IDX = tinylora.tensor(np.arange(12).reshape(2, 6))
SETTINGS = {"lora": {"r": 2}, "rslora": {"r": 4, "alpha": 2}, "loraplus": {"r": 2, "ratio": 8},
            "dora": {"r": 2, "rslora": True}, "pissa": {"r": 2}, "olora": {"r": 2, "alpha": 4},
            "adalora": {"init_r": 3, "target_r": 2, "targets": ["q", "v", "fc"]},
            "glora": {"r": 2, "config": {"B": "vector"}}}


def _logits(model):
    with tinylora.no_grad():
        return model.eval()(IDX)[0].numpy()


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_train_save_load_round_trip(method, tmp_path):
    tinylora.manual_seed(0)
    base_state = GPT(CONFIG).state_dict()

    def fresh():
        model = GPT(CONFIG)
        model.load_state_dict(base_state)
        return model

    model = apply_method(fresh(), method, SETTINGS[method])
    hooks = training_hooks(model, method, SETTINGS[method], lr=1e-2, total_steps=3)
    opt = AdamW(hooks.get("param_groups") or [p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(1, 4):
        opt.zero_grad()
        loss = model.train()(IDX, IDX)[1]
        if "extra_loss" in hooks:
            loss = loss + hooks["extra_loss"](model)
        loss.backward()
        opt.step()
        if "after_step" in hooks:
            hooks["after_step"](step)
    trained = _logits(model)
    assert np.abs(trained - _logits(fresh())).max() > 1e-4  # it trained
    save_method_adapter(model, tmp_path, method, SETTINGS[method])
    back = load_method_adapter(fresh(), tmp_path)
    assert_close(_logits(back), trained, rtol=0, atol=1e-6, what=f"{method} reloaded")  # float32, same math
    n_layers = len(list(lora_layers(back))) + len(list(glora_layers(back)))
    assert n_layers == len(list(lora_layers(model))) + len(list(glora_layers(model)))
    if method == "adalora":
        assert sum(layer.rank() for _, layer in lora_layers(back)) == 2 * 6  # the masks came back: target_r × 6


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'vera'"):
        apply_method(GPT(CONFIG), "vera", {})
    model = apply_method(GPT(CONFIG), "dora", {"r": 2})
    save_method_adapter(model, tmp_path, "dora", {"r": 2})
    other = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="different base model .n_layer: adapter 2 vs model 1"):
        load_method_adapter(other, tmp_path)
