"""The LoRA paper's claims as properties, checked by hypothesis over random model sizes, ranks, α,
targets, layer subsets and seeds (tiny GPTs built here, eval mode so dropout is off):

1. zero init:   with B = 0 the adapted model computes exactly the base model (bitwise), and at
                init ∂L/∂A = 0 while ∂L/∂B ≠ 0;
2. merging:     W = W0 + (α/r) B A gives the same outputs as the two-path forward, unmerging
                restores W0, greedy generation is unchanged (no inference latency, same model);
3. counting:    each adapted d×k matrix adds r(d + k) trainable parameters; for square attention
                matrices |Θ| = 2 × L̂ × d_model × r (L̂ = number of adapted matrices); GPT-2 small
                with r = 4 on W_q, W_v trains 147,456 of 124,439,808 parameters (0.12%);
4. freezing:    only A and B (and the chosen biases) get gradients; SGD leaves W0 bitwise unchanged;
5. causality:   logits at position t do not depend on tokens after t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given
from hypothesis import strategies as st

import tinylora
from tinylora.model.generate import generate
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.lora import (
    apply_lora,
    lora_layers,
    mark_only_lora_as_trainable,
    merge_lora,
    parameter_report,
    unmerge_lora,
)

TARGET_NAMES = ("q", "k", "v", "o", "fc", "proj")


@dataclass
class Setup:
    config: GPTConfig
    r: int
    alpha: float | None
    targets: tuple
    layers: list | None
    init: str
    seed: int
    batch: int
    length: int

    def adapted(self) -> list:
        """(block index, target) of every matrix apply_lora should adapt."""
        blocks = range(self.config.n_layer) if self.layers is None else sorted(set(self.layers))
        return [(i, t) for i in blocks for t in self.targets]


@st.composite
def setups(draw, min_length=1):
    n_layer = draw(st.integers(1, 3))
    n_head = draw(st.integers(1, 2))
    n_embd = n_head * draw(st.integers(2, 6))
    block_size = draw(st.integers(max(min_length, 2), 10))
    config = GPTConfig(vocab_size=draw(st.integers(5, 30)), block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=0.1, bias=draw(st.booleans()))
    return Setup(
        config=config,
        r=draw(st.integers(1, n_embd)),  # r <= min(d, k) = n_embd for every target
        alpha=draw(st.none() | st.floats(0.5, 64.0)),
        targets=tuple(draw(st.lists(st.sampled_from(TARGET_NAMES), min_size=1, max_size=6, unique=True))),
        layers=draw(st.none() | st.lists(st.integers(0, n_layer - 1), min_size=1, max_size=n_layer, unique=True)),
        init=draw(st.sampled_from(["kaiming", "gaussian"])),
        seed=draw(st.integers(0, 2**16)),
        batch=draw(st.integers(1, 2)),
        length=draw(st.integers(min_length, block_size)),
    )


def _build(s: Setup, dtype="float32"):
    tinylora.manual_seed(s.seed)
    return GPT(s.config, dtype=dtype).eval()  # eval: dropout off


def _apply(model, s: Setup):
    return apply_lora(model, r=s.r, alpha=s.alpha, targets=s.targets, layers=s.layers, dropout=0.1, init=s.init)


def _data(s: Setup, seed_offset=0):
    rng = np.random.default_rng(s.seed + seed_offset)
    shape = (s.batch, s.length)
    return (tinylora.tensor(rng.integers(0, s.config.vocab_size, size=shape)),
            tinylora.tensor(rng.integers(0, s.config.vocab_size, size=shape)))


def _randomise_b(model, seed):
    """Nonzero B, scaled so that ΔW = (α/r) B A has the spread of W0 (std 0.02): a real, well-sized update."""
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = rng.standard_normal(layer.lora_B.shape)
        layer.lora_B.data *= 0.02 / float(layer.delta_weight().std())


# ---------------------------------------------------------------- 1. zero init
@given(setups(min_length=2))
def test_zero_init_is_exactly_the_base_model(s):
    model = _build(s)
    idx, targets = _data(s)
    with tinylora.no_grad():
        base_logits, base_loss = model(idx, targets=targets)
    _apply(model, s)
    logits, loss = model(idx, targets=targets)
    np.testing.assert_array_equal(logits.detach().numpy(), base_logits.numpy())
    np.testing.assert_array_equal(loss.detach().numpy(), base_loss.numpy())

    loss.backward()
    layers = dict(lora_layers(model))
    assert len(layers) == len(s.adapted())
    for name, layer in layers.items():
        assert not np.any(layer.lora_A.grad.numpy()), f"{name}: ∂L/∂A = (α/r) B^T ... must be 0 while B = 0"
        assert np.any(layer.lora_B.grad.numpy()), f"{name}: ∂L/∂B must be nonzero at init (T >= 2)"


# ---------------------------------------------------------------- 2. merging
# Tolerances, relative to the logits' largest magnitude. The merged and two-path forwards differ
# only by rounding: the merged weight rounds W0 + ΔW, and the sums run in another order. Over 300
# random setups like these the largest difference was 5e-16 in float64 and 5e-7 in float32 (24-bit
# mantissa); we allow 1e-10 and 1e-5 (the error grows with d and depth, so bigger models need more).
MERGE_RTOL = {"float64": 1e-10, "float32": 1e-5}


@given(setups(), st.sampled_from(["float32", "float64"]))
def test_merged_equals_unmerged_and_unmerge_restores_w0(s, dtype):
    model = _apply(_build(s, dtype), s)
    _randomise_b(model, s.seed)
    idx, _ = _data(s)
    w0 = {name: layer.base.weight.data.copy() for name, layer in lora_layers(model)}
    with tinylora.no_grad():
        two_path = model(idx)[0].numpy()
        merge_lora(model)
        merged = model(idx)[0].numpy()
        assert all(layer.merged for _, layer in lora_layers(model))
        merged_w = {name: layer.base.weight.data.copy() for name, layer in lora_layers(model)}
        unmerge_lora(model)
        restored = model(idx)[0].numpy()
        for name, layer in lora_layers(model):
            delta = layer.scaling * layer.lora_B.data @ layer.lora_A.data  # ΔW = (α/r) B A, (d, k)
            assert np.abs(delta).max() > 0
            atol = 4 * np.finfo(dtype).eps * np.abs(merged_w[name]).max()  # a few roundings of the sum
            assert_close(merged_w[name], w0[name] + delta, rtol=0, atol=atol, what=f"{name}: merged W = W0 + (α/r) B A")
            # (W0 ⊕ ΔW) ⊖ ΔW: two roundings, each at most half an ulp of the larger magnitude
            bound = 2 * np.finfo(dtype).eps * max(np.abs(w0[name]).max(), np.abs(merged_w[name]).max())
            assert_close(layer.base.weight.data, w0[name], rtol=0, atol=bound, what=f"{name}: W0 after unmerge")
    scale = np.abs(two_path).max()
    assert_close(merged, two_path, rtol=0, atol=MERGE_RTOL[dtype] * scale, what=f"merged vs two-path ({dtype})")
    assert_close(restored, two_path, rtol=0, atol=MERGE_RTOL[dtype] * scale, what=f"unmerged vs two-path ({dtype})")


@given(setups())
def test_greedy_generation_is_unchanged_by_merging(s):
    model = _apply(_build(s, "float64"), s)
    _randomise_b(model, s.seed)
    for p in model.parameters():  # sharper logits than GPT-2's init, so argmax ties are out of the question
        p.data *= 4.0
    prompt, _ = _data(s)
    before = generate(model, prompt, 4, greedy=True).numpy()
    merge_lora(model)
    after = generate(model, prompt, 4, greedy=True).numpy()
    np.testing.assert_array_equal(after, before)


# ---------------------------------------------------------------- 3. counting
D_K = {"q": (1, 1), "k": (1, 1), "v": (1, 1), "o": (1, 1), "fc": (4, 1), "proj": (1, 4)}  # (d, k) in units of C


@given(setups())
def test_each_adapted_matrix_adds_r_times_d_plus_k(s):
    model = _build(s)
    base_total = sum(p.size for p in model.parameters())
    _apply(model, s)
    counted = sum(p.size for p in model.parameters() if p.requires_grad)  # counted on the built model
    c = s.config.n_embd
    expected = sum(s.r * (D_K[t][0] * c + D_K[t][1] * c) for _, t in s.adapted())  # Σ r(d + k)
    assert counted == expected
    assert sum(p.size for p in model.parameters()) == base_total + expected  # nothing else was added
    for name, layer in lora_layers(model):
        d, k = layer.base.weight.shape
        assert layer.lora_A.size + layer.lora_B.size == s.r * (d + k), name
    if set(s.targets) <= {"q", "k", "v", "o"}:  # square W ∈ R^{d_model × d_model}
        l_hat = len(s.adapted())  # L̂_LoRA: the number of adapted weight matrices
        assert counted == 2 * l_hat * c * s.r  # |Θ| = 2 × L̂_LoRA × d_model × r
    report = parameter_report(model)
    assert (report["trainable"], report["lora"], report["total"]) == (counted, counted, base_total + expected)
    assert report["percent_trainable"] == pytest.approx(100 * counted / (base_total + expected))


@pytest.mark.slow  # builds and initialises the real 124M-parameter model (0.5 GB)
def test_gpt2_small_r4_on_q_and_v_trains_147456_parameters():
    """The paper's GPT-2 setting on the real 124M model, built once (no forward pass needed)."""
    model = GPT(GPTConfig.gpt2())
    base_total = sum(p.size for p in model.parameters())
    assert base_total == 124_439_808  # GPT-2 small, tied head counted once
    apply_lora(model, r=4, targets=("q", "v"))
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    assert trainable == 147_456 == 2 * (2 * 12) * 768 * 4  # |Θ| = 2 × L̂ × d_model × r, L̂ = 24
    assert round(100 * trainable / base_total, 2) == 0.12
    report = parameter_report(model)
    assert report["trainable"] == 147_456 and report["total"] == base_total + 147_456
    assert "147,456" in report["text"]
    del model, report


# ---------------------------------------------------------------- 4. freezing
@given(setups(min_length=2), st.sampled_from(["none", "all", "lora_only"]))
def test_only_lora_and_chosen_biases_train_and_w0_stays_bitwise(s, bias):
    model = mark_only_lora_as_trainable(_apply(_build(s, "float64"), s), bias=bias)  # float64: tiny updates show
    _randomise_b(model, s.seed)  # so that A gets a gradient as well
    # the expected set, decided here by name (the library decides by module type): independent checks
    def trains(name):
        lora = name.endswith((".lora_A", ".lora_B"))
        return lora or (bias == "all" and name.endswith(".bias")) or (bias == "lora_only" and name.endswith(".base.bias"))

    params = dict(model.named_parameters())
    before = {n: p.data.copy() for n, p in params.items()}
    optimizer = tinylora.optim.SGD(model.trainable_parameters(), lr=0.5)
    idx, targets = _data(s)
    for _ in range(3):
        optimizer.zero_grad()
        _, loss = model(idx, targets=targets)
        loss.backward()
        for n, p in params.items():
            assert (p.grad is not None) == trains(n), f"{n}: grad {'missing' if trains(n) else 'present'} ({bias=})"
        optimizer.step()
    for n, p in params.items():
        if trains(n):
            if not n.endswith(".bias"):  # a bias may get no signal (e.g. W_k's bias cancels in softmax)
                assert not np.array_equal(p.data, before[n]), f"{n} should have been trained"
        else:
            np.testing.assert_array_equal(p.data, before[n], err_msg=f"{n} is frozen but changed")


# ---------------------------------------------------------------- 5. causality
@given(setups(min_length=2), st.data())
def test_logits_at_t_ignore_tokens_after_t(s, data):
    model = _apply(_build(s, "float64"), s)
    _randomise_b(model, s.seed)
    idx, _ = _data(s)
    t = data.draw(st.integers(0, s.length - 2), label="t")
    changed = idx.numpy().copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1 + np.arange(s.length - t - 1)) % s.config.vocab_size  # all differ
    with tinylora.no_grad():
        a = model(idx)[0].numpy()
        b = model(tinylora.tensor(changed))[0].numpy()
    np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
    assert not np.allclose(a[:, t + 1], b[:, t + 1])  # the changed token itself does matter
