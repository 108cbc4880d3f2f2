"""tinylora.methods.glora: GLoRA's known answers: the base at init, merged == unmerged for every kind of
every support, LoRA and row scaling as special cases, |Θ| per kind, gradients, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import assert_close
from gradcheck import gradcheck

import tinylora
from tinylora import nn
from tinylora.lora import LoRALinear
from tinylora.methods.glora import (
    KINDS,
    GLoRALinear,
    apply_glora,
    glora_layers,
    merge_and_unload_glora,
    parameter_count,
)
from tinylora.model.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
ALL_CONFIGS = [dict(zip("ABCDE", kinds)) for kinds in itertools.product(*(KINDS[n] for n in "ABCDE"))]  # 432


def _x(k=6, seed=1):
    return tinylora.tensor(np.random.default_rng(seed).normal(size=(3, k)), dtype="float64")


def _randomise(layer, seed=0):
    rng = np.random.default_rng(seed)
    for p in layer.adapter_parameters():
        p.data[...] = rng.normal(0.0, 0.3, p.shape)
    return layer


def test_every_config_is_the_base_at_init_and_merges_exactly():
    """All 4·4·3·3·3 = 432 combinations (the paper's search space for one layer)."""
    assert len(ALL_CONFIGS) == 432
    x = _x()
    for i, config in enumerate(ALL_CONFIGS):
        layer = GLoRALinear(nn.Linear(6, 5, dtype="float64"), r=2, config=config)
        base = layer.base(x).detach().numpy()
        assert_close(layer(x).detach().numpy(), base, rtol=0, atol=0, what=f"init {config}")
        _randomise(layer, seed=i)
        unmerged = layer(x).detach().numpy()
        w0, b0 = layer.base.weight.data.copy(), layer.base.bias.data.copy()
        layer.merge()
        assert_close(layer(x).detach().numpy(), unmerged, rtol=0, atol=1e-13, what=f"merged {config}")
        layer.unmerge()
        assert_close(layer.base.weight.data, w0, rtol=0, atol=1e-13, what=f"unmerged W0 {config}")
        assert_close(layer.base.bias.data, b0, rtol=0, atol=1e-13, what=f"unmerged b0 {config}")


def test_the_formula_on_one_example():
    layer = _randomise(GLoRALinear(nn.Linear(6, 5, dtype="float64"), r=2,
                                   config={"A": "lora", "B": "vector", "C": "lora", "D": "vector", "E": "scalar"}))
    W0, b0 = layer.base.weight.data, layer.base.bias.data
    A = layer.A_down.data @ layer.A_up.data  # (d, k)
    B = layer.B.data  # (d, 1), broadcast over the row
    C = layer.C_down.data @ layer.C_up.data  # (k, 1)
    W = W0 + W0 * A + B
    b = b0 + layer.D.data * b0 + layer.E.data + (W0 @ C)[:, 0]
    x = _x()
    assert_close(layer(x).detach().numpy(), x.numpy() @ W.T + b, rtol=0, atol=1e-13, what="eq. 10")


def test_b_as_lora_alone_is_a_lora_layer():
    config = {"A": "none", "B": "lora", "C": "none", "D": "none", "E": "none"}
    glora = _randomise(GLoRALinear(nn.Linear(6, 5, dtype="float64"), r=2, config=config))
    lora = LoRALinear(nn.Linear(6, 5, dtype="float64"), r=2)  # α = r: scaling 1
    lora.base.weight.data[...], lora.base.bias.data[...] = glora.base.weight.data, glora.base.bias.data
    lora.lora_B.data[...], lora.lora_A.data[...] = glora.B_down.data, glora.B_up.data
    x = _x()
    assert_close(glora(x).detach().numpy(), lora(x).detach().numpy(), rtol=0, atol=1e-14, what="GLoRA(B) = LoRA")


def test_a_as_vector_scales_rows():
    layer = _randomise(GLoRALinear(nn.Linear(6, 5, dtype="float64"), r=2,
                                   config={"A": "vector", "B": "none", "C": "none", "D": "none", "E": "none"}))
    W = (1 + layer.A.data) * layer.base.weight.data  # diag(1 + a) W0
    x = _x()
    assert_close(layer(x).detach().numpy(), x.numpy() @ W.T + layer.base.bias.data, rtol=0, atol=1e-14, what="rows")


@pytest.mark.parametrize("config", [ALL_CONFIGS[0], ALL_CONFIGS[100], ALL_CONFIGS[431], {}])
def test_parameter_count_formula(config):
    layer = GLoRALinear(nn.Linear(7, 5), r=3, config=config)
    assert sum(p.size for p in layer.adapter_parameters()) == parameter_count(5, 7, 3, config)


def test_gradients():
    layer = _randomise(GLoRALinear(nn.Linear(6, 5, dtype="float64"), r=2,
                                   config={"A": "lora", "B": "scalar", "C": "vector", "D": "scalar", "E": "vector"}))
    x = _x()
    gradcheck(lambda *ps: layer(x), layer.adapter_parameters())


def test_model_level_merge_and_unload_leaves_plain_linears():
    model = apply_glora(GPT(CONFIG, dtype="float64").eval(), r=2, targets=("q", "v", "fc"),
                        configs={"blocks.1.mlp.fc": {"A": "none", "C": "none"}})
    assert model.blocks[1].mlp.fc.config["A"] == "none" and model.blocks[0].mlp.fc.config["A"] == "lora"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for _, layer in glora_layers(model) for p in layer.adapter_parameters()}
    for i, (_, layer) in enumerate(glora_layers(model)):
        _randomise(layer, seed=i)
    idx = tinylora.tensor(np.arange(12).reshape(2, 6))
    with tinylora.no_grad():
        expected = model(idx)[0].numpy()
        merge_and_unload_glora(model)
        assert type(model.blocks[0].attn.q) is nn.Linear  # zero extra inference cost: the base layer alone
        assert_close(model(idx)[0].numpy(), expected, rtol=0, atol=1e-12, what="merged model")


def test_errors():
    with pytest.raises(ValueError, match="support C cannot be 'scalar'"):
        GLoRALinear(nn.Linear(4, 4), config={"C": "scalar"})
    with pytest.raises(ValueError, match="has none"):
        GLoRALinear(nn.Linear(4, 4, bias=False))
    with pytest.raises(ValueError, match="not adapted"):
        apply_glora(GPT(CONFIG), targets=("q",), configs={"blocks.0.attn.v": {"A": "none"}})
    layer = GLoRALinear(nn.Linear(4, 4), config={"A": "scalar"})
    layer.A.data[...] = -1.0  # W = W0 + W0·(−1) + B: W0 is lost
    layer.merge()
    with pytest.raises(ValueError, match="cannot be recovered"):
        layer.unmerge()


# ------------------------------------------------------------------ against PEFT's GLoRA tuner
PEFT_KINDS = {"lora": "lora", "vector": "vector", "scalar": "constant", "none": "none"}  # tinylora -> PEFT names


@pytest.mark.ref
@pytest.mark.parametrize("ab, c, de", [("lora", "lora", "scalar"), ("vector", "vector", "vector"),
                                       ("scalar", "none", "scalar"), ("lora", "none", "none")])
def test_glora_equals_peft_glora_on_a_linear(ab, c, de):
    """PEFT's `tuners/glora` is the same method on nn.Linear (not GPT-2's Conv1D): the same five supports and
    kinds, with one kind for A and B together and one for D and E (tinylora chooses each support's kind
    alone, and calls PEFT's "constant" "scalar"). Same weights and supports: outputs, merged weight and bias
    equal in float64."""
    from conftest import require

    torch, peft = require("torch"), require("peft")
    d, k, r = 6, 5, 2
    torch.manual_seed(0)
    holder = torch.nn.Sequential()
    holder.add_module("lin", torch.nn.Linear(k, d).double())
    config = peft.GloraConfig(r=r, target_modules=["lin"], config_A_B=PEFT_KINDS[ab], config_C=PEFT_KINDS[c],
                              config_D_E=PEFT_KINDS[de])
    theirs = peft.get_peft_model(holder, config).eval()
    ours = GLoRALinear(nn.Linear(k, d, dtype="float64"), r=r, config={"A": ab, "B": ab, "C": c, "D": de, "E": de})
    ours.base.weight.data[...] = holder.lin.weight.detach().numpy()
    ours.base.bias.data[...] = holder.lin.bias.detach().numpy()
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for support in "ABCDE":
            path = getattr(theirs.base_model.model.lin, f"glora_{support}")["default"]
            if hasattr(path, "Xd"):  # a low-rank support: down (rows, r) @ up (r, cols)
                down, up = rng.normal(0, 0.3, tuple(path.Xd.shape)), rng.normal(0, 0.3, tuple(path.Xu.shape))
                path.Xd.copy_(torch.tensor(down))
                path.Xu.copy_(torch.tensor(up))
                getattr(ours, f"{support}_down").data[...] = down
                getattr(ours, f"{support}_up").data[...] = up
            elif hasattr(path, "X"):  # a vector or a scalar
                value = rng.normal(0, 0.3, tuple(path.X.shape))
                path.X.copy_(torch.tensor(value))
                getattr(ours, support).data[...] = value.reshape(getattr(ours, support).shape)
    x = rng.normal(size=(3, k))
    with torch.no_grad():
        expected = theirs(torch.tensor(x)).numpy()
    with tinylora.no_grad():
        got = ours(tinylora.tensor(x, dtype="float64")).numpy()
    assert_close(got, expected, rtol=0, atol=1e-12, what="forward")
    theirs.merge_adapter()
    ours.merge()
    assert_close(ours.base.weight.data, holder.lin.weight.detach().numpy(), rtol=0, atol=1e-12, what="merged W")
    assert_close(ours.base.bias.data, holder.lin.bias.detach().numpy(), rtol=0, atol=1e-12, what="merged b")
