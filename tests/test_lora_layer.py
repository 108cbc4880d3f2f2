"""tinylora.lora: the LoRALinear layer (shapes, init, the forward formula, gradients against central
differences and PEFT, merge / unmerge / disable semantics, clear errors) and the model-level API
(apply_lora, mark_only_lora_as_trainable, lora_state_dict, merge/disable, parameter_report)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, require
from gradcheck import gradcheck

import tinylora
from tinylora import nn
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.lora import (
    LoRALinear,
    apply_lora,
    disable_lora,
    enable_lora,
    lora_disabled,
    lora_layers,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_lora,
    parameter_report,
    unmerge_lora,
)


def _linear(k=6, d=5, dtype="float64", bias=True, device=None):
    return nn.Linear(k, d, bias=bias, dtype=dtype, device=device)


def _randomise_b(layer, seed=0):
    """Give B nonzero values (at init B = 0, so the LoRA path would contribute nothing)."""
    layer.lora_B.data[...] = np.random.default_rng(seed).standard_normal(layer.lora_B.shape)
    return layer


def _x(shape, seed=1, dtype="float64"):
    return tinylora.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


# ---------------------------------------------------------------- construction
def test_shapes_defaults_and_what_is_frozen():
    base = _linear(k=6, d=5)
    layer = LoRALinear(base, r=3)
    assert layer.base is base  # wrapped, not copied
    assert layer.lora_A.shape == (3, 6) and layer.lora_B.shape == (5, 3)  # A (r, k), B (d, r)
    assert (layer.in_features, layer.out_features) == (6, 5)
    assert layer.alpha == 3 and layer.scaling == 1.0  # alpha=None means alpha = r
    assert not np.any(layer.lora_B.data)  # B = 0
    assert np.any(layer.lora_A.data)
    assert not base.weight.requires_grad and layer.lora_A.requires_grad and layer.lora_B.requires_grad
    assert layer.merged is False and layer.enabled is True
    assert LoRALinear(_linear(), r=4, alpha=16).scaling == 4.0
    names = [n for n, _ in layer.named_parameters()]
    assert sorted(names) == ["base.bias", "base.weight", "lora_A", "lora_B"]


def test_kaiming_and_gaussian_init_of_a():
    k, r = 400, 8
    kaiming = LoRALinear(_linear(k=k, d=300), r=r).lora_A.data
    bound = 1 / math.sqrt(k)  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(k), 1/sqrt(k))
    assert np.abs(kaiming).max() <= bound and np.abs(kaiming).max() > 0.95 * bound
    assert abs(kaiming.std() / (bound / math.sqrt(3)) - 1) < 0.05  # the std of U(-b, b) is b / sqrt(3)
    gaussian = LoRALinear(_linear(k=k, d=300), r=r, init="gaussian").lora_A.data
    assert abs(gaussian.std() / (1 / r) - 1) < 0.05  # N(0, (1/r)^2), PEFT's "gaussian"
    assert np.abs(gaussian).max() > bound  # not uniform on the Kaiming interval


def test_lora_parameters_follow_the_base_dtype_and_device():
    layer = LoRALinear(_linear(dtype="float32", device="fake"), r=2)
    for p in (layer.lora_A, layer.lora_B):
        assert p.dtype == np.float32 and p.device.name == "fake"
    layer64 = LoRALinear(_linear(dtype="float64"), r=2)
    assert layer64.lora_A.dtype == np.float64 and layer64.lora_B.dtype == np.float64


@pytest.mark.parametrize("r", [0, -1, 6])
def test_rank_out_of_range_is_a_clear_error(r):
    with pytest.raises(ValueError, match=r"1 <= r <= min\(d, k\) = 5"):
        LoRALinear(_linear(k=6, d=5), r=r)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match="must be an int"):
        LoRALinear(_linear(), r=2.0)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.LayerNorm(4), r=1)
    with pytest.raises(ValueError, match="alpha"):
        LoRALinear(_linear(), r=2, alpha=0)
    with pytest.raises(ValueError, match="init"):
        LoRALinear(_linear(), r=2, init="xavier")
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(_linear(), r=2, dropout=1.0)


# ---------------------------------------------------------------- forward and gradients
def test_forward_is_w0x_plus_scaled_bax():
    layer = _randomise_b(LoRALinear(_linear(k=6, d=5), r=2, alpha=7))
    x = _x((3, 4, 6))
    h = layer(x).detach().numpy()
    w0, b = layer.base.weight.data, layer.base.bias.data
    a, bb = layer.lora_A.data, layer.lora_B.data
    expected = x.numpy() @ w0.T + b + (7 / 2) * x.numpy() @ (bb @ a).T  # h = W0 x + b + (α/r) B A x
    assert_close(h, expected, rtol=1e-12, atol=1e-12, what="LoRA forward")


def test_gradients_match_central_differences():
    layer = _randomise_b(LoRALinear(_linear(k=4, d=3), r=2, alpha=3))
    x = _x((2, 3, 4))
    x.requires_grad_(True)

    def fn(x, a, b):
        return layer(x)

    worst = gradcheck(fn, [x, layer.lora_A, layer.lora_B])
    assert worst < 1e-6
    assert layer.base.weight.grad is None  # frozen W0 gets nothing


def test_zero_b_means_the_base_output_exactly_and_no_gradient_for_a():
    base = _linear(k=6, d=5, dtype="float32")
    layer = LoRALinear(base, r=3, alpha=5)
    x = _x((2, 6), dtype="float32")
    with tinylora.no_grad():
        expected = base(x).numpy()
    h = layer(x)
    np.testing.assert_array_equal(h.detach().numpy(), expected)
    h.backward(np.random.default_rng(0).standard_normal(h.shape).astype(np.float32))
    assert not np.any(layer.lora_A.grad.numpy())  # dA = (α/r) B^T dy x^T = 0 while B = 0
    assert np.any(layer.lora_B.grad.numpy())


@pytest.mark.ref
def test_matches_peft_forward_and_gradients():
    torch, peft = require("torch"), require("peft")
    k, d, r, alpha = 6, 5, 3, 12
    layer = _randomise_b(LoRALinear(_linear(k=k, d=d), r=r, alpha=alpha))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(k, d, dtype=torch.float64)

    net = Net()
    with torch.no_grad():
        net.lin.weight.copy_(torch.tensor(layer.base.weight.numpy()))
        net.lin.bias.copy_(torch.tensor(layer.base.bias.detach().numpy()))
    net = peft.get_peft_model(net, peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"], lora_dropout=0.0))
    lin = net.base_model.model.lin
    with torch.no_grad():
        lin.lora_A["default"].weight.copy_(torch.tensor(layer.lora_A.detach().numpy()))  # PEFT's A: Linear(k, r), weight (r, k)
        lin.lora_B["default"].weight.copy_(torch.tensor(layer.lora_B.detach().numpy()))  # B: Linear(r, d), weight (d, r)
    x = np.random.default_rng(1).standard_normal((2, 4, k))
    upstream = np.random.default_rng(2).standard_normal((2, 4, d))

    y_ref = lin(torch.tensor(x))
    (y_ref * torch.tensor(upstream)).sum().backward()
    y = layer(tinylora.tensor(x))
    y.backward(upstream)
    assert_close(y.detach().numpy(), y_ref.detach().numpy(), rtol=1e-12, atol=1e-12, what="forward vs PEFT")
    assert_close(layer.lora_A.grad.numpy(), lin.lora_A["default"].weight.grad.numpy(), rtol=1e-10, atol=1e-12, what="dA")
    assert_close(layer.lora_B.grad.numpy(), lin.lora_B["default"].weight.grad.numpy(), rtol=1e-10, atol=1e-12, what="dB")


def test_dropout_acts_on_the_lora_input_only():
    layer = _randomise_b(LoRALinear(_linear(k=6, d=5), r=2, dropout=0.5))
    x = _x((4, 6))
    delta = layer.scaling * layer.lora_B.data @ layer.lora_A.data  # ΔW (d, k)
    with tinylora.no_grad():
        base_out = layer.base(x).numpy()
        train_a, train_b = layer(x).numpy(), layer(x).numpy()
        layer.eval()
        eval_out = layer(x).numpy()
        layer.lora_B.data[...] = 0  # with ΔW = 0 in train mode, dropout has nothing to act on
        layer.train()
        np.testing.assert_array_equal(layer(x).numpy(), base_out)
    assert not np.array_equal(train_a, train_b)  # a new mask each call
    assert not np.allclose(train_a, base_out + x.numpy() @ delta.T)
    assert_close(eval_out, base_out + x.numpy() @ delta.T, rtol=1e-12, atol=1e-12, what="eval: no dropout")


# ---------------------------------------------------------------- merge / unmerge / disable
def test_merge_and_unmerge_are_explicit_idempotent_and_exact_enough():
    layer = _randomise_b(LoRALinear(_linear(k=6, d=5), r=2, alpha=4))
    w0 = layer.base.weight.data.copy()
    x = _x((3, 6))
    with tinylora.no_grad():
        before = layer(x).numpy()
        layer.merge()
        assert layer.merged
        merged_w = layer.base.weight.data.copy()
        assert_close(merged_w, w0 + 2.0 * layer.lora_B.data @ layer.lora_A.data, rtol=1e-14, atol=1e-15, what="W0 + ΔW")
        layer.merge()  # idempotent: no second ΔW
        np.testing.assert_array_equal(layer.base.weight.data, merged_w)
        assert_close(layer(x).numpy(), before, rtol=1e-12, atol=1e-13, what="merged output")
        layer.unmerge()
        layer.unmerge()
        assert not layer.merged
        assert_close(layer.base.weight.data, w0, rtol=0, atol=1e-15, what="W0 restored")
        assert_close(layer(x).numpy(), before, rtol=1e-12, atol=1e-13, what="unmerged output")


def test_disable_on_a_merged_layer_unmerges_first_and_merge_while_disabled_raises():
    layer = _randomise_b(LoRALinear(_linear(k=6, d=5), r=2))
    w0 = layer.base.weight.data.copy()
    x = _x((3, 6))
    with tinylora.no_grad():
        base_out = layer.base(x).numpy()
        adapted = layer(x).numpy()
        layer.merge().disable()
        assert not layer.merged and not layer.enabled
        assert_close(layer.base.weight.data, w0, rtol=0, atol=1e-15, what="W0 after disable")
        assert_close(layer(x).numpy(), base_out, rtol=1e-13, atol=1e-14, what="disabled = base")
        with pytest.raises(RuntimeError, match="disabled"):
            layer.merge()
        layer.enable()
        assert_close(layer(x).numpy(), adapted, rtol=1e-12, atol=1e-13, what="re-enabled")  # W0 up to rounding
    assert not np.allclose(adapted, base_out)


def test_repr_shows_the_state():
    text = repr(LoRALinear(_linear(k=6, d=5), r=2, alpha=8))
    assert "r=2" in text and "alpha=8" in text and "scaling=4" in text and "merged=False" in text


# ---------------------------------------------------------------- apply_lora and the model-level API
def _gpt(dtype="float32", **overrides):
    config = dict(vocab_size=20, block_size=8, n_layer=3, n_head=2, n_embd=8, dropout=0.0)
    config.update(overrides)
    return GPT(GPTConfig(**config), dtype=dtype)


def test_apply_lora_replaces_the_chosen_linears_in_place():
    model = _gpt()
    w_q1 = model.blocks[1].attn.q.weight
    out = apply_lora(model, r=2, targets=("q", "fc"), layers=[1, 2])
    assert out is model
    assert isinstance(model.blocks[1].attn.q, LoRALinear) and isinstance(model.blocks[2].mlp.fc, LoRALinear)
    assert model.blocks[1].attn.q.base.weight is w_q1  # the same frozen W0, not a copy
    assert isinstance(model.blocks[0].attn.q, nn.Linear) and isinstance(model.blocks[1].attn.v, nn.Linear)
    names = dict(model.named_parameters())
    for key in ("blocks.1.attn.q.base.weight", "blocks.1.attn.q.base.bias", "blocks.1.attn.q.lora_A",
                "blocks.1.attn.q.lora_B", "blocks.2.mlp.fc.lora_A"):
        assert key in names, key
    assert names["blocks.2.mlp.fc.lora_B"].shape == (32, 2)  # (d, r) with d = 4C
    order = list(names)  # a replaced module keeps its place: q still comes before k
    assert order.index("blocks.1.attn.q.lora_A") < order.index("blocks.1.attn.k.weight")
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable == sorted(f"blocks.{i}.{m}.lora_{ab}" for i in (1, 2) for m in ("attn.q", "mlp.fc") for ab in "AB")


def test_apply_lora_defaults_and_passes_options():
    model = apply_lora(_gpt(dtype="float64"), r=3, dropout=0.2, init="gaussian")
    layers = dict(lora_layers(model))
    assert sorted(layers) == sorted(f"blocks.{i}.attn.{m}" for i in range(3) for m in "qv")  # the paper's W_q, W_v
    for layer in layers.values():
        assert layer.r == 3 and layer.scaling == 1.0 and layer.lora_dropout.p == 0.2 and layer.init == "gaussian"
        assert layer.lora_A.dtype == np.float64
    assert apply_lora(_gpt(), r=4, alpha=32, targets="o").blocks[0].attn.o.scaling == 8.0


def test_apply_lora_keeps_an_eval_model_in_eval_mode():
    model = apply_lora(_gpt().eval(), r=2, dropout=0.5)
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("targets,message", [
    (("wte",), "tied to wte"), (("lm_head",), "tied to wte"), (("q", "c_attn"), "unknown target 'c_attn'"), ((), "empty"),
])
def test_apply_lora_rejects_bad_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        apply_lora(_gpt(), r=2, targets=targets)


def test_apply_lora_other_errors():
    with pytest.raises(ValueError, match=r"layer index 3 is not a block of this model \(0..2\)"):
        apply_lora(_gpt(), layers=[0, 3], r=2)
    model = apply_lora(_gpt(), r=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model, r=2)
    with pytest.raises(ValueError, match=r"1 <= r <= min\(d, k\) = 8"):
        apply_lora(_gpt(), r=9)
    with pytest.raises(TypeError, match="blocks"):
        apply_lora(nn.Linear(4, 4), r=2)
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_as_trainable(_gpt())
    with pytest.raises(ValueError, match="bias must be one of"):
        mark_only_lora_as_trainable(model, bias="some")


def test_bias_modes_choose_biases_by_module_type():
    model = apply_lora(_gpt(), r=2, targets=("q",), layers=[0])
    mark_only_lora_as_trainable(model, bias="lora_only")
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == [
        "blocks.0.attn.q.base.bias", "blocks.0.attn.q.lora_A", "blocks.0.attn.q.lora_B"]
    mark_only_lora_as_trainable(model, bias="all")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}  # Linear and LayerNorm biases
    assert trainable == biases | {"blocks.0.attn.q.lora_A", "blocks.0.attn.q.lora_B"}
    assert "ln_f.bias" in trainable and "wte.weight" not in trainable
    assert set(lora_state_dict(model, bias="all")) == trainable
    assert list(lora_state_dict(model)) == ["blocks.0.attn.q.lora_A", "blocks.0.attn.q.lora_B"]


def test_model_level_merge_disable_and_context_manager():
    model = apply_lora(_gpt(dtype="float64"), r=2, targets=("q", "v", "fc"))
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = np.random.default_rng(0).standard_normal(layer.lora_B.shape) * 0.1
    idx = tinylora.tensor(np.random.default_rng(1).integers(0, 20, size=(2, 6)))
    with tinylora.no_grad():
        adapted = model(idx)[0].numpy()
        disable_lora(model)
        base = model(idx)[0].numpy()
        enable_lora(model)
        assert not np.allclose(adapted, base)
        merge_lora(model)
        with lora_disabled(model):
            assert all(not layer.enabled and not layer.merged for _, layer in lora_layers(model))
            assert_close(model(idx)[0].numpy(), base, rtol=0, atol=1e-13, what="base inside lora_disabled")
        assert all(layer.enabled and layer.merged for _, layer in lora_layers(model))  # state restored
        assert_close(model(idx)[0].numpy(), adapted, rtol=0, atol=1e-12, what="merged after the context")
        unmerge_lora(model)
        assert not any(layer.merged for _, layer in lora_layers(model))


def test_parameter_report_rows_and_text():
    model = apply_lora(_gpt(), r=2, targets=("q",))
    report = parameter_report(model)
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["wte"]["params"] == 20 * 8 and rows["wte"]["trainable"] == 0
    assert rows["blocks.0.attn.q"] == {"name": "blocks.0.attn.q", "type": "LoRALinear", "params": 2 * 8 + 8 * 2,
                                       "trainable": 32, "quantized": 0}
    assert rows["blocks.0.attn.q.base"]["params"] == 8 * 8 + 8
    assert report["trainable"] == report["lora"] == 3 * 32
    assert report["total"] == sum(p.size for p in model.parameters())
    assert sum(row["params"] for row in report["rows"]) == report["total"]
    assert f"trainable: 96 of {report['total']:,} parameters" in report["text"] and "blocks.2.attn.q" in report["text"]


def test_merge_and_unload_gives_a_plain_model_with_the_same_outputs():
    import numpy as np

    import tinylora
    from tinylora.model.gpt import GPT, GPTConfig
    from tinylora.lora import apply_lora, lora_layers, merge_and_unload

    tinylora.manual_seed(1)
    model = GPT(GPTConfig.tiny(dropout=0.0), dtype="float64").eval()
    apply_lora(model, r=2, targets=("q", "v", "fc"))
    for _, layer in lora_layers(model):  # a nonzero update, so merging really changes W
        layer.lora_B.data[...] = np.random.default_rng(0).normal(size=layer.lora_B.shape)
    idx = tinylora.tensor(np.arange(12).reshape(2, 6) % 200)
    with tinylora.no_grad():
        before = model(idx)[0].numpy()
        plain = merge_and_unload(model)
        after = plain(idx)[0].numpy()
    assert not list(lora_layers(plain))
    assert not any("lora" in name for name, _ in plain.named_parameters())
    np.testing.assert_allclose(after, before, rtol=1e-10, atol=1e-12)
