"""QLoRA (tinylora.quant.nf4, tinylora.quant.linear, tinylora.methods.qlora): the NF4 code book derived from
normal quantiles, block-wise quantization with its error bound, packing, double quantization and its bits per
parameter, the quantized layer's forward and gradients, the model API and its errors, and bitsandbytes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import assert_close, require
from gradcheck import gradcheck
from hypothesis import given, settings
from hypothesis import strategies as st

import tinylora
from tinylora import nn
from tinylora.lora import LoRALinear, apply_lora, lora_layers, parameter_report
from tinylora.methods.qlora import (
    ALL_LINEAR,
    check_paged_optimizer,
    merge_qlora,
    quantize_model,
    quantized_layers,
    weight_report,
)
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.optim import AdamW
from tinylora.quant.linear import NF4Linear
from tinylora.quant.nf4 import (
    CODE,
    PUBLISHED_NF4,
    NF4Tensor,
    double_dequantize,
    double_quantize,
    expected_bits_per_parameter,
    nf4_code_book,
    pack_nibbles,
    quantize_blocks,
    unpack_nibbles,
)

MAX_GAP = float(np.max(np.diff(CODE)))  # -0.6961928 - (-1) = 0.3038072, the code book's widest gap
HALF_GAP = MAX_GAP / 2  # the worst rounding, as a fraction of the block's absmax


# ---------------------------------------------------------------- the code book
def test_code_book_is_derived_from_normal_quantiles_and_matches_the_published_table():
    derived = nf4_code_book()
    published = np.array(PUBLISHED_NF4)
    # the published values are float32 computed in float32 arithmetic; the exact derivation (float64)
    # differs from them by at most 1.08e-7 (at 0.7229568, two float32 spacings), so the bound is 1.1e-7
    assert_close(derived, published, rtol=0, atol=1.1e-7, what="NF4 code book vs bitsandbytes' table")
    assert derived[0] == -1.0 and derived[7] == 0.0 and derived[15] == 1.0  # exact ends and an exact zero
    assert np.all(np.diff(derived) > 0) and len(derived) == 16
    assert np.all(derived[8:] > 0) and np.all(derived[:7] < 0)  # 8 positive values, 7 negative


def test_quantization_uses_the_published_table_not_the_derivation():
    """Every NF4 checkpoint was written with the published float32 table; 10 of its entries are not the float32
    rounding of the exact quantiles, so quantizing with the derivation would give some weights other codes."""
    np.testing.assert_array_equal(CODE, np.array(PUBLISHED_NF4, dtype=np.float32))
    assert int((nf4_code_book().astype(np.float32) != CODE).sum()) == 10


def test_code_values_round_trip_exactly_and_zeros_map_to_code_7():
    values = np.concatenate([CODE, -CODE[::-1] * 0.5, np.zeros(32)]).astype(np.float32)  # 64 values, absmax 1
    q = NF4Tensor.quantize(values)
    np.testing.assert_array_equal(q.dequantize()[:16], CODE)
    indices = unpack_nibbles(q.packed, values.size)
    np.testing.assert_array_equal(indices[:16], np.arange(16))
    assert np.all(indices[32:] == 7)


# ---------------------------------------------------------------- quantization error and edge cases
@given(n=st.integers(1, 700), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
@settings(max_examples=25)
def test_round_trip_error_is_bounded_per_block(n, scale, seed):
    w = (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)
    q = NF4Tensor.quantize(w)
    w_hat = q.dequantize()
    assert w_hat.shape == w.shape
    blocks = -(-n // 64)
    padded_err = np.zeros(blocks * 64)
    padded_err[:n] = np.abs(w - w_hat)
    absmax = q.absmax
    # |W - Ŵ| <= ½ · max gap · absmax of the block (+ float32 rounding of the product)
    bound = HALF_GAP * absmax * (1 + 1e-6)
    assert np.all(padded_err.reshape(blocks, 64).max(axis=1) <= bound)
    # every block's absmax element is reproduced exactly (it normalises to ±1, a code value)
    for b in range(blocks):
        block = w[b * 64:(b + 1) * 64]
        i = int(np.argmax(np.abs(block)))
        assert w_hat[b * 64 + i] == block[i]


def test_all_zero_blocks_one_huge_outlier_and_short_last_block():
    rng = np.random.default_rng(0)
    w = rng.standard_normal(64 * 3 + 5).astype(np.float32)  # 197 values: the last block has 5
    w[:64] = 0.0  # block 0: all zeros
    w[64 + 10] = 1e6  # block 1: one huge outlier
    q = NF4Tensor.quantize(w)
    w_hat = q.dequantize()
    assert q.absmax.shape == (4,) and q.absmax[0] == 0.0
    np.testing.assert_array_equal(w_hat[:64], 0.0)  # zeros stay zeros (no 0/0)
    assert w_hat[74] == 1e6  # the outlier is exact ...
    assert np.all(np.abs(w_hat[64:128] - w[64:128]) <= HALF_GAP * 1e6)  # ... and the rest of its block
    np.testing.assert_array_equal(w_hat[np.r_[64:74, 75:128]], 0.0)  # rounds to 0 next to it
    other = np.r_[128:197]  # the outlier does not touch the other blocks
    assert np.all(np.abs(w_hat[other] - w[other]) <= HALF_GAP * np.repeat(q.absmax[2:], 64)[:69] * (1 + 1e-6))


def test_ties_at_a_midpoint_go_to_the_lower_code():
    mid = (CODE[8] + CODE[9]) / 2
    w = np.array([1.0, mid], dtype=np.float32)
    indices = unpack_nibbles(quantize_blocks(w)[0], 2)
    assert list(indices) == [15, 8]


@given(n=st.integers(1, 300))
@settings(max_examples=20)
def test_packing_first_value_in_the_high_nibble_and_sizes(n):
    indices = np.random.default_rng(n).integers(0, 16, size=n).astype(np.uint8)
    packed = pack_nibbles(indices)
    assert packed.dtype == np.uint8 and packed.nbytes == math.ceil(n / 2)
    assert packed[0] >> 4 == indices[0]
    np.testing.assert_array_equal(unpack_nibbles(packed, n), indices)
    q = NF4Tensor.quantize(np.ones(n, dtype=np.float32))
    assert q.code_bytes() == math.ceil(n / 2) and q.constant_bytes() == 4 * math.ceil(n / 64)


def test_nf4_beats_uniform_int4_on_gaussian_blocks():
    w = np.random.default_rng(0).standard_normal(64 * 512).astype(np.float32)
    mse_nf4 = float(np.mean((NF4Tensor.quantize(w).dequantize() - w) ** 2))
    blocks = w.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    uniform = np.round(blocks / absmax * 7) / 7 * absmax  # symmetric 15-level int4
    mse_uniform = float(np.mean((uniform - blocks) ** 2))
    assert mse_nf4 < mse_uniform
    assert 0.0075 < mse_nf4 < 0.0095  # QLoRA's code book: 0.00846 on N(0, 1), block 64 (measured)


# ---------------------------------------------------------------- double quantization
def test_double_quantization_error_bound_and_bits_per_parameter():
    d, k = 768, 768  # one GPT-2 small attention matrix
    w = (np.random.default_rng(0).standard_normal((d, k)) * 0.02).astype(np.float32)
    plain = NF4Tensor.quantize(w)
    dq = NF4Tensor.quantize(w, double_quant=True)
    n = d * k
    assert plain.bits_per_parameter() == 4.5 == expected_bits_per_parameter(n)  # 4 + 32/64
    bits = dq.bits_per_parameter()
    assert bits == expected_bits_per_parameter(n, double_quant=True)
    paper = 4 + 8 / 64 + 32 / (64 * 256)  # 4.126953...: the paper's 4 + 0.127
    assert abs(bits - paper) == pytest.approx(32 / n)  # + one float32 mean per tensor
    assert round(bits - 4, 3) == 0.127
    # the constants come back within s_g / 254 of the float32 absmax (s_g: the group's largest |c - μ|)
    c = plain.absmax
    codes, scale, mean = double_quantize(c)
    c_hat = double_dequantize(codes, scale, mean)
    group_bound = np.repeat(scale, 256)[:c.size] / 254
    assert np.all(np.abs(c_hat - c) <= group_bound * (1 + 1e-5) + 1e-9)
    assert np.abs(c_hat - c).max() > 0  # it is lossy: the test would notice a no-op
    # and the weights stay within the NF4 bound plus what the constant's error scales
    err = np.abs(dq.dequantize() - w).reshape(-1, 64).max(axis=1)
    assert np.all(err <= HALF_GAP * c + np.abs(c_hat - c) + 1e-7)


# ---------------------------------------------------------------- the quantized layer
def _nf4_layer(k=24, d=20, lora_dtype="float32", compute_dtype="float32", bias=True, seed=0):
    linear = nn.Linear(k, d, bias=bias)
    rng = np.random.default_rng(seed)
    linear.weight.data[...] = rng.standard_normal((d, k)) * 0.1
    if bias:
        linear.bias.data[...] = rng.standard_normal(d) * 0.1
    layer = NF4Linear.from_linear(linear, double_quant=True, compute_dtype=compute_dtype)
    layer.lora_dtype = tinylora.engine.backend.host.dtype(lora_dtype)
    return linear, layer


def test_qlora_layer_with_b_zero_is_the_dequantized_base_layer():
    _, base = _nf4_layer()
    layer = LoRALinear(base, r=4)
    x = tinylora.tensor(np.random.default_rng(1).standard_normal((3, 7, 24)), dtype="float32")
    w_hat = base.dequantized_weight()
    expected = x.numpy() @ w_hat.T + base.bias.data
    with tinylora.no_grad():
        assert_close(layer(x).numpy(), expected, rtol=1e-5, atol=1e-6, what="QLoRA(B=0) vs x Ŵ^T + b")
    assert layer.lora_A.dtype == np.float32 and layer.lora_B.dtype == np.float32


def test_gradients_of_a_b_and_x_through_the_dequantized_weight_float64():
    _, base = _nf4_layer(lora_dtype="float64", bias=False)
    layer = LoRALinear(base, r=3, alpha=6)
    layer.lora_B.data[...] = np.random.default_rng(2).standard_normal(layer.lora_B.shape)
    x = tinylora.tensor(np.random.default_rng(3).standard_normal((2, 5, 24)), dtype="float64", requires_grad=True)
    gradcheck(lambda x, a, b: layer(x), [x, layer.lora_A, layer.lora_B])
    # and nothing else of the layer trains: W0 is not a Parameter at all, the bias is frozen
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]


def test_the_quantized_matmul_keeps_no_activation_for_backward():
    from tinylora.engine.backend import memory

    _, base = _nf4_layer(k=64, d=48, bias=False)
    x = tinylora.tensor(np.random.default_rng(0).standard_normal((4, 32, 64)), dtype="float32", requires_grad=True)
    before = memory.stats()["current"]["saved"]
    y = base(x)
    assert y.requires_grad and memory.stats()["current"]["saved"] == before  # only the 4-bit weight, already counted
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert x.grad is not None


def test_bfloat16_compute_rounds_the_operands_and_accumulates_in_float32():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 compute needs ml_dtypes (the test extra has it)")
    _, base = _nf4_layer(bias=False, compute_dtype="bfloat16")
    x = np.random.default_rng(4).standard_normal((6, 24)).astype(np.float32)
    with tinylora.no_grad():
        y = base(tinylora.tensor(x)).numpy()
    bf16 = ml_dtypes.bfloat16
    w = base.dequantized_weight()
    emulated = x.astype(bf16).astype(np.float32) @ w.astype(bf16).astype(np.float32).T
    assert y.dtype == np.float32
    assert_close(y, emulated, rtol=1e-5, atol=1e-6, what="bf16 compute vs rounded operands in float32")
    assert np.abs(y - x @ w.T).max() > 0  # the rounding is real


# ---------------------------------------------------------------- the model API
def _tiny(dtype=None):
    return GPT(GPTConfig.tiny(dropout=0.0), dtype=dtype)


def _ids(config, b=2, t=16, seed=0):
    return np.random.default_rng(seed).integers(0, config.vocab_size, size=(b, t))


def test_quantized_model_logits_are_close_to_the_float_models():
    model = _tiny()
    x = _ids(model.config)
    with tinylora.no_grad():
        reference = model(x)[0].numpy()
    quantize_model(model, "nf4", double_quant=True)
    assert len(list(quantized_layers(model))) == 6 * model.config.n_layer
    with tinylora.no_grad():
        logits = model(x)[0].numpy()
    # NF4 moves each weight by up to 14% of its block's absmax; at this size the logits (|z| up to ~1)
    # move by about 0.05 (measured 0.052): tolerance 0.1 absolute, and far from what a broken dequant gives
    assert np.abs(logits - reference).max() < 0.1
    assert np.corrcoef(logits.ravel(), reference.ravel())[0, 1] > 0.99


def test_qlora_trains_end_to_end_and_the_4bit_weights_never_change():
    model = apply_lora(quantize_model(_tiny(), "nf4", double_quant=True), r=4, targets=ALL_LINEAR)
    packed = {n: layer.weight_nf4.packed.copy() for n, layer in quantized_layers(model)}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.endswith(("lora_A", "lora_B")) for n, _ in trainable)
    opt = AdamW(trainable, lr=1e-2)
    x = _ids(model.config)
    y = np.roll(x, -1, axis=1)
    losses = []
    for _ in range(6):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    for n, layer in quantized_layers(model):
        np.testing.assert_array_equal(layer.weight_nf4.packed, packed[n])


def test_weight_report_counts_codes_constants_and_float_weights_exactly():
    model = quantize_model(_tiny(), "nf4", double_quant=True)
    report = weight_report(model)
    c = model.config
    sizes = [c.n_embd * c.n_embd] * 4 + [4 * c.n_embd * c.n_embd] * 2  # q, k, v, o, fc, proj per block
    assert report["codes"] == c.n_layer * sum(math.ceil(n / 2) for n in sizes)
    constants = sum(math.ceil(n / 64) + 4 * math.ceil(math.ceil(n / 64) / 256) + 4 for n in sizes)
    assert report["constants"] == c.n_layer * constants
    assert report["total"] == report["codes"] + report["constants"] + report["float"]


def test_parameter_report_counts_the_4bit_weights_in_the_total():
    """NF4 weights are not Parameters, yet they are the model's: the total is the float model's plus A and B."""
    model = _tiny()
    float_total = sum(p.size for p in model.parameters())
    apply_lora(quantize_model(model, "nf4", double_quant=True), r=4, targets=("q", "v"))
    c = model.config
    quantized = c.n_layer * (4 * c.n_embd * c.n_embd + 2 * 4 * c.n_embd * c.n_embd)  # q, k, v, o, fc, proj weights
    lora = c.n_layer * 2 * 4 * (c.n_embd + c.n_embd)  # r (d + k) per adapted matrix
    report = parameter_report(model)
    assert (report["total"], report["trainable"], report["quantized"]) == (float_total + lora, lora, quantized)
    assert sum(row["params"] for row in report["rows"]) == report["total"]
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["blocks.0.attn.q.base"]["quantized"] == c.n_embd * c.n_embd  # W0 of q, frozen in NF4
    assert report["text"].splitlines()[-1].startswith(f"trainable: {lora:,} of {float_total + lora:,} parameters")
    assert f"{quantized:,} are stored in 4 bits (NF4)" in report["text"]


def test_merge_into_a_dequantized_copy_and_warn_when_requantized():
    model = apply_lora(quantize_model(_tiny(), "nf4", compute_dtype="float32"), r=4, targets=ALL_LINEAR)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = np.random.default_rng(0).standard_normal(layer.lora_B.shape) * 0.05
    x = _ids(model.config)
    with tinylora.no_grad():
        before = model(x)[0].numpy()
    merge_qlora(model)
    assert not list(lora_layers(model)) and not list(quantized_layers(model))
    with tinylora.no_grad():
        after = model(x)[0].numpy()
    assert_close(after, before, rtol=1e-5, atol=1e-5, what="merged float model vs QLoRA model")

    model = apply_lora(quantize_model(_tiny(), "nf4"), r=4)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = 0.05
    with pytest.warns(UserWarning, match=r"changes them by up to [0-9.]+e-0[0-9]"):
        merge_qlora(model, requantize=True)
    assert len(list(quantized_layers(model))) == 6 * model.config.n_layer


def test_clear_errors():
    model = quantize_model(_tiny(), "nf4")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, "nf4")
    with pytest.raises(TypeError, match="float64"):
        quantize_model(_tiny(dtype="float64"), "nf4")
    with pytest.raises(ValueError, match="power of two"):
        quantize_model(_tiny(), "nf4", block_size=48)
    with pytest.raises(ValueError, match="power of two"):
        quantize_model(_tiny(), "nf4", dq_block_size=100)
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_model(_tiny(), "int3")
    with pytest.raises(ValueError, match="quantize first"):
        quantize_model(apply_lora(_tiny(), r=2), "nf4")
    with pytest.raises(RuntimeError, match="merge_qlora"):
        next(iter(lora_layers(apply_lora(model, r=2))))[1].merge()
    with pytest.raises(ValueError, match="nothing to page"):
        check_paged_optimizer("cpu")


# ---------------------------------------------------------------- bitsandbytes
@pytest.mark.ref
@pytest.mark.slow  # importing bitsandbytes takes about 15 s here
@pytest.mark.parametrize("shape", [(96, 200), (768, 768), (768, 3072), (3072, 768), (96, 96)])
def test_matches_bitsandbytes_quantize_4bit(shape):
    """GPT-2's row lengths (768, 3072), an odd one (200) and 96. The reference dequantization is bitsandbytes'
    pure-torch path (backends/default): its CPU kernel (0.50.2) is wrong for rows whose length is a multiple
    of 16 but not of 64 (96 x 96: off by up to 0.09 here, several times the block's absmax error), so it is
    compared only where its row length is a multiple of 64 or not of 16."""
    torch = require("torch")
    bnb_functional = require("bitsandbytes.functional")
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code

    w = (np.random.default_rng(0).standard_normal(shape) * 0.05).astype(np.float32)
    w[3, 7] = 2.0  # an outlier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed, state = bnb_functional.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4",
                                                     compress_statistics=False)
        kernel_w = bnb_functional.dequantize_4bit(packed, state).numpy()
    ref_w = _dequantize_4bit_compute(packed.reshape(-1), state.absmax, _get_4bit_code("nf4", packed.device), 64,
                                     shape, torch.float32).numpy()
    q = NF4Tensor.quantize(w)
    np.testing.assert_array_equal(state.code.numpy(), CODE)  # its run-time code book is the published table
    np.testing.assert_array_equal(q.packed, packed.numpy().reshape(-1))  # identical 4-bit codes, same packing
    np.testing.assert_array_equal(q.absmax, state.absmax.numpy())  # identical constants
    assert_close(q.dequantize(), ref_w, rtol=0, atol=2e-7, what="dequantized weights (pure-torch path)")
    if shape[1] % 64 == 0 or shape[1] % 16:
        assert_close(q.dequantize(), kernel_w, rtol=0, atol=2e-7, what="dequantized weights (CPU kernel)")
    if shape != (96, 200):
        return
    # with double quantization bitsandbytes stores its constants in its 8-bit dynamic code, tinylora in
    # linear int8 (see DQ_NOTE): the weights agree to within both constant errors, far below NF4's own error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        packed, state = bnb_functional.quantize_4bit(torch.from_numpy(w), blocksize=64, quant_type="nf4",
                                                     compress_statistics=True)
        ref_dq = bnb_functional.dequantize_4bit(packed, state).numpy()
    ours_dq = NF4Tensor.quantize(w, double_quant=True).dequantize()
    nf4_error = np.abs(ref_w - w).max()
    assert np.abs(ours_dq - ref_dq).max() < 0.1 * nf4_error
