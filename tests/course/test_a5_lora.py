"""A5 the LoRA layer: zero init, forward, merge/unmerge, freezing, and the rank-2r PEFT export."""

import math

import numpy as np
import pytest

import tinylora
from tinylora import nn
from tinylora.lora import LoRALinear, apply_lora, lora_layers, mark_only_lora_as_trainable
from tinylora.engine.backend import memory
from tinylora.lora.peft import _fuse


def lora64(d=6, k=8, r=2, alpha=4.0, init="kaiming"):
    base = nn.Linear(k, d, dtype="float64")
    return LoRALinear(base, r=r, alpha=alpha, init=init)


def randomize_b(layer, seed=1):
    layer.lora_B.data[...] = np.random.default_rng(seed).standard_normal(layer.lora_B.shape)


def tiny_gpt():
    return tinylora.GPT(tinylora.GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=8),
                        dtype="float64")


# ------------------------------------------------------------------ task 1: zero init
@pytest.mark.a5_task1
def test_b_starts_at_zero_and_a_is_random_within_kaimings_bound():
    layer = lora64(k=50, d=40, r=4)
    assert not layer.lora_B.detach().numpy().any(), "B must start at 0 so that ΔW = BA = 0"
    a = layer.lora_A.detach().numpy()
    assert np.abs(a).max() <= 1 / math.sqrt(50) + 1e-12, "Kaiming-uniform(a=√5) keeps |A| <= 1/sqrt(k)"
    assert np.unique(a).size == a.size, "A must be random (all entries different)"


@pytest.mark.a5_task1
def test_gaussian_init_has_std_one_over_r():
    layer = lora64(k=400, d=300, r=4, init="gaussian")
    assert not layer.lora_B.detach().numpy().any(), "B must start at 0 so that ΔW = BA = 0"
    assert abs(layer.lora_A.detach().numpy().std() - 1 / 4) < 0.02, "gaussian init: A ~ N(0, (1/r)²)"


# ------------------------------------------------------------------ task 2: forward
@pytest.mark.a5_task2
def test_forward_is_w0x_plus_scaled_bax():
    layer = lora64()
    randomize_b(layer)
    x = np.random.default_rng(2).standard_normal((3, 5, 8))
    W0, b0 = layer.base.weight.detach().numpy(), layer.base.bias.detach().numpy()
    A, B = layer.lora_A.detach().numpy(), layer.lora_B.detach().numpy()
    expected = x @ W0.T + b0 + (4.0 / 2) * x @ A.T @ B.T
    np.testing.assert_allclose(layer(tinylora.tensor(x)).detach().numpy(), expected, rtol=1e-12, atol=1e-12,
                               err_msg="h = W0 x + b + (α/r) B A x")


@pytest.mark.a5_task2
def test_at_init_the_layer_is_the_base_and_a_gets_no_gradient():
    layer = lora64()
    x = tinylora.tensor(np.random.default_rng(3).standard_normal((4, 8)))
    y = layer(x)
    np.testing.assert_array_equal(y.detach().numpy(), layer.base(x).detach().numpy(),
                                  err_msg="with B = 0 the LoRA layer computes exactly the base layer")
    y.backward(tinylora.tensor(np.random.default_rng(4).standard_normal((4, 6))))
    assert not layer.lora_A.grad.detach().numpy().any(), "with B = 0, dL/dA = (α/r) Bᵀ dy xᵀ is exactly 0"
    assert layer.lora_B.grad.detach().numpy().any(), "B gets a gradient (A x) from the first step"


@pytest.mark.a5_task2
def test_disabled_layer_is_the_base_alone():
    layer = lora64()
    randomize_b(layer)
    x = tinylora.tensor(np.ones((2, 8)))
    layer.enabled = False  # what disable() does once it has unmerged (task 3), written out here
    np.testing.assert_array_equal(layer(x).detach().numpy(), layer.base(x).detach().numpy(),
                                  err_msg="a disabled adapter adds nothing: the base layer alone")


# ------------------------------------------------------------------ task 3: merge and unmerge
@pytest.mark.a5_task3
def test_merge_adds_delta_w_and_unmerge_restores_w0():
    layer = lora64()
    randomize_b(layer)
    W0 = layer.base.weight.detach().numpy().copy()
    delta = (4.0 / 2) * layer.lora_B.detach().numpy() @ layer.lora_A.detach().numpy()
    np.testing.assert_allclose(layer.delta_weight(), delta, rtol=1e-12, err_msg="ΔW = (α/r) B A")
    layer.merge()
    layer.merge()  # idempotent: the second call changes nothing
    assert layer.merged, "merge sets the merged flag"
    np.testing.assert_allclose(layer.base.weight.detach().numpy(), W0 + delta, rtol=1e-12,
                               err_msg="merge adds ΔW into W0 once, however often it is called")
    layer.unmerge()
    layer.unmerge()
    assert not layer.merged, "unmerge clears the merged flag"
    np.testing.assert_allclose(layer.base.weight.detach().numpy(), W0, rtol=0, atol=1e-12,
                               err_msg="unmerge restores W0, however often it is called")


# ------------------------------------------------------------------ task 4: freezing
@pytest.mark.a5_task4
@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_only_a_b_and_the_chosen_biases_train(bias):
    model = tiny_gpt()
    apply_lora(model, r=2, targets=("q", "v"))
    mark_only_lora_as_trainable(model, bias=bias)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if n.endswith(("lora_A", "lora_B"))}
    assert len(lora) == 2 * 2 * 2, f"A and B of q and v in 2 blocks should train, got {sorted(lora)}"
    others = trainable - lora
    if bias == "none":
        assert not others, f"nothing but A and B may train with bias='none', got {sorted(others)}"
    elif bias == "all":
        assert others == {n for n, _ in model.named_parameters() if n.endswith("bias")}, \
            "bias='all': every bias trains as well"
    else:
        assert others == {n for n in (n for n, _ in model.named_parameters()) if n.endswith("base.bias")}, \
            "bias='lora_only': the biases of the LoRA-wrapped layers train as well"


# ------------------------------------------------------------------ task 5: the rank-2r export
@pytest.mark.a5_task5
def test_q_and_v_fuse_into_one_c_attn_lora_of_rank_2r():
    model = tiny_gpt()
    apply_lora(model, r=2, alpha=4.0, targets=("q", "v"))
    layers = dict(lora_layers(model))
    q, v = layers["blocks.0.attn.q"], layers["blocks.0.attn.v"]
    for layer in (q, v):
        randomize_b(layer, seed=id(layer) % 100)
    A, B, alpha = _fuse([("v", v), ("q", q)], C=8)
    assert A.shape == (4, 8) and B.shape == (24, 4), f"A' (2r, C) and B' (3C, 2r), got {A.shape}, {B.shape}"
    scaling = alpha / 4
    assert math.isclose(scaling, q.scaling), "α' / (2r) must equal α / r"
    fused = scaling * B @ A  # (3C, C): the q, k, v row blocks

    def delta(layer):  # ΔW = (α/r) B A, written out (delta_weight is task 3)
        return layer.scaling * layer.lora_B.detach().numpy() @ layer.lora_A.detach().numpy()

    np.testing.assert_allclose(fused[:8], delta(q), rtol=1e-12, atol=1e-14, err_msg="rows 0..C of B'A' are q's ΔW")
    np.testing.assert_array_equal(fused[8:16], 0.0, err_msg="rows C..2C belong to k, which has no LoRA: 0")
    np.testing.assert_allclose(fused[16:], delta(v), rtol=1e-12, atol=1e-14, err_msg="rows 2C..3C are v's ΔW")


@pytest.mark.a5_task2
def test_a_merged_layer_adds_delta_w_once():
    layer = lora64()
    randomize_b(layer)
    x = tinylora.tensor(np.random.default_rng(5).standard_normal((3, 8)))
    unmerged = layer(x).detach().numpy()
    delta = layer.scaling * layer.lora_B.detach().numpy() @ layer.lora_A.detach().numpy()
    layer.base.weight.data[...] += delta  # what merge() does (task 3), written out here
    layer.merged = True
    np.testing.assert_allclose(layer(x).detach().numpy(), unmerged, rtol=1e-12, atol=1e-12,
                               err_msg="a merged layer's W0 already holds ΔW: its forward is the base layer alone")


@pytest.mark.a5_task2
def test_a_mixed_adapter_batch_uses_each_rows_own_branch():
    layer = lora64()
    randomize_b(layer)
    x = tinylora.tensor(np.random.default_rng(6).standard_normal((2, 8)))
    layer.per_example = lambda inputs: tinylora.tensor(np.full((2, 6), 3.0))  # each row's own ΔW x, set by a batch
    np.testing.assert_allclose(layer(x).detach().numpy(), layer.base(x).detach().numpy() + 3.0, rtol=1e-12,
                               err_msg="during a mixed-adapter batch (per_example set) the output is W0 x + "
                                       "per_example(x), not this layer's own B A x")


@pytest.mark.a5_task2
def test_the_forward_never_forms_the_d_by_k_matrix_ba():
    base = nn.Linear(128, 128, dtype="float64")
    layer = LoRALinear(base, r=2, alpha=4.0)
    x = tinylora.tensor(np.random.default_rng(7).standard_normal((4, 128)), requires_grad=True)
    before = memory.stats()["current"]["saved"]
    y = layer(x)
    saved = memory.stats()["current"]["saved"] - before
    del y
    assert saved < 128 * 128 * 8, f"the forward kept {saved} bytes for backward, as much as the 128×128 matrix " \
                                  "B A: compute B (A x) in r dimensions, never B A"
