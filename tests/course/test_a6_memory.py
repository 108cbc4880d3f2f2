"""A6 memory: NF4's code book, packing two 4-bit codes per byte, block-wise absmax quantization, and
LoRA-FA's frozen A (the branch then keeps A x, not x, for backward)."""

import numpy as np
import pytest

import tinylora
from tinylora.engine.backend import memory
from tinylora.model.gpt import GPT, GPTConfig


def nf4():
    from tinylora.quant import nf4 as module  # imported inside the tests: the module builds its code book on import

    return module


# ------------------------------------------------------------------ task 1: the code book
@pytest.mark.a6_task1
def test_code_book_has_16_sorted_values_from_minus_one_to_one_with_an_exact_zero():
    code = np.asarray(nf4().nf4_code_book())
    assert code.shape == (16,), f"NF4 has 16 values (4 bits), got {code.shape}"
    assert np.all(np.diff(code) > 0), "the values must be sorted ascending"
    assert code[0] == -1 and code[15] == 1 and code[7] == 0, "normalised into [-1, 1], with an exact 0 at index 7"
    assert (code > 0).sum() == 8 and (code < 0).sum() == 7, "8 positive and 7 negative quantiles (asymmetric)"


@pytest.mark.a6_task1
def test_code_book_matches_the_published_values():
    module = nf4()
    np.testing.assert_allclose(np.asarray(module.nf4_code_book()), np.asarray(module.PUBLISHED_NF4), rtol=0,
                               atol=1.1e-7, err_msg="the QLoRA paper's / bitsandbytes' NF4 table (float32 digits)")


# ------------------------------------------------------------------ task 2: two codes per byte
@pytest.mark.a6_task2
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_packing_round_trips_and_puts_the_first_code_in_the_high_nibble(n):
    module = nf4()
    codes = (np.arange(n) * 7 % 16).astype(np.uint8)
    packed = module.pack_nibbles(codes)
    assert packed.dtype == np.uint8 and packed.size == (n + 1) // 2, "ceil(n / 2) bytes"
    assert packed[0] >> 4 == codes[0], "the first code of each pair goes in the high nibble"
    np.testing.assert_array_equal(module.unpack_nibbles(packed, n), codes,
                                  err_msg="unpacking returns the n codes that were packed, in order")


# ------------------------------------------------------------------ task 3: block-wise absmax quantization
@pytest.mark.a6_task3
def test_each_block_is_scaled_by_its_absmax_and_the_error_is_bounded():
    module = nf4()
    rng = np.random.default_rng(0)
    values = rng.standard_normal(200).astype(np.float32)  # 4 blocks of 64, the last one short (8 values)
    values[70] = 50.0  # an outlier: only its own block gets a coarse scale
    packed, absmax = module.quantize_blocks(values, 64)
    assert absmax.shape == (4,), "one constant per block of 64 (the last block is short)"
    np.testing.assert_allclose(absmax, [np.abs(values[i:i + 64]).max() for i in range(0, 200, 64)],
                               err_msg="each block's constant is the absolute maximum of that block")
    restored = module.dequantize_blocks(packed, absmax, 200, 64)
    code = np.asarray(module.nf4_code_book())
    widest_gap = np.diff(code).max()
    for b in range(4):
        error = np.abs(restored[b * 64:(b + 1) * 64] - values[b * 64:(b + 1) * 64]).max()
        assert error <= widest_gap / 2 * absmax[b] + 1e-6, f"block {b}: error {error} above half the widest gap"
    assert restored[70] == pytest.approx(50.0), "the block's absmax itself is exact (code ±1)"


@pytest.mark.a6_task3
def test_an_all_zero_block_stays_zero():
    module = nf4()
    packed, absmax = module.quantize_blocks(np.zeros(64, dtype=np.float32), 64)
    assert absmax[0] == 0 and not module.dequantize_blocks(packed, absmax, 64, 64).any(), \
        "an all-zero block has absmax 0 and comes back as zeros (no division by 0)"


# ------------------------------------------------------------------ task 4: LoRA-FA
@pytest.mark.a6_task4
def test_lora_fa_freezes_a_and_trains_b_only():
    from tinylora.methods.lora_fa import apply_lora_fa

    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16))
    apply_lora_fa(model, r=2, targets=("q", "v"))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable and all(n.endswith("lora_B") for n in trainable), f"only B trains, got {trainable}"


@pytest.mark.a6_task4
def test_the_lora_fa_branch_keeps_ax_not_x():
    from tinylora import nn
    from tinylora.lora import LoRALinear
    from tinylora.methods.lora_fa import freeze_lora_A

    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = LoRALinear(nn.Linear(64, 64), r=2)

    model = One()
    model.layer.lora_A.requires_grad_(False)  # what task 4 does for every LoRA layer of a model...
    x = tinylora.randn(8, 64)  # N = 8 rows, k = 64: x itself needs no gradient
    memory.reset_peak()
    before = memory.stats()["current"]["saved"]
    y = model.layer(x)
    saved_lora_fa = memory.stats()["current"]["saved"] - before
    del y
    model.layer.lora_A.requires_grad_(True)
    y = model.layer(x)
    saved_lora = memory.stats()["current"]["saved"] - before
    del y
    assert saved_lora_fa < 8 * 64 * 4, f"with A frozen nothing of x's size is kept, got {saved_lora_fa} bytes"
    assert saved_lora - saved_lora_fa >= 8 * 64 * 4, "a trainable A keeps x (N·k floats) for dA = dzᵀ x"
    freeze_lora_A(model)  # ...and here is the function itself
    assert not model.layer.lora_A.requires_grad and model.layer.lora_A.grad is None, \
        "freeze_lora_A leaves A frozen with no gradient kept"
    with pytest.raises(ValueError, match="no LoRA layers"):
        freeze_lora_A(nn.Linear(4, 4))


@pytest.mark.a6_task1
@pytest.mark.parametrize("offset", [0.99, 0.95])
def test_code_book_is_computed_from_the_normal_quantiles_for_any_offset(offset):
    from statistics import NormalDist

    quantile = NormalDist().inv_cdf
    positive = [quantile(offset - i * (offset - 0.5) / 8) for i in range(8)]  # linspace(offset, 0.5, 9)[:-1]
    negative = [-quantile(offset - i * (offset - 0.5) / 7) for i in range(7)]  # linspace(offset, 0.5, 8)[:-1]
    values = np.sort(np.array(positive + negative + [0.0]))
    np.testing.assert_allclose(np.asarray(nf4().nf4_code_book(offset)), values / values.max(), rtol=1e-12,
                               atol=1e-12, err_msg="the code book comes from normal quantiles at the given "
                                                   "offset (copying the published table is not computing it)")
