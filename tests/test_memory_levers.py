"""Memory levers (tinylora.model.memory_levers): activation checkpointing and the chunked LM head + loss give the
same gradients as the plain model (float64, to rounding), and the engine's accounting shows what each saves."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close
from gradcheck import gradcheck, random_array

import tinylora
from tinylora import functional as F
from tinylora.engine.backend import memory
from tinylora.lora import apply_lora
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.model.memory_levers import chunked_lm_loss


def _model(seed=0, n_layer=2, dropout=0.0, lora=False, dtype="float64"):
    tinylora.manual_seed(seed)
    model = GPT(GPTConfig.tiny(n_layer=n_layer, dropout=dropout), dtype=dtype)
    return apply_lora(model, r=2, targets=("q", "v", "fc")) if lora else model


def _batch(config, b=2, t=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, size=(b, t))
    y = np.roll(x, -1, axis=1)
    y[0, :3] = -100  # some ignored targets
    return x, y


def _grads(model, x, y, seed=0):
    tinylora.manual_seed(seed)  # the same dropout masks for every variant
    _, loss = model(x, y)
    loss.backward()
    return loss.item(), {n: p.grad.numpy() for n, p in model.named_parameters() if p.requires_grad}


def assert_same_grads(variant, plain):
    loss_v, grads_v = variant
    loss_p, grads_p = plain
    assert loss_v == pytest.approx(loss_p, rel=1e-12)
    assert grads_v.keys() == grads_p.keys()
    for name in grads_p:
        assert_close(grads_v[name], grads_p[name], rtol=1e-9, atol=1e-12, what=name)


# ---------------------------------------------------------------- chunked loss
def test_chunked_loss_gradcheck_float64():
    h = tinylora.tensor(random_array((2, 5, 6), seed=1), dtype="float64", requires_grad=True)
    w = tinylora.tensor(random_array((11, 6), seed=2), dtype="float64", requires_grad=True)
    t = np.array([[1, 4, -100, 10, 0], [3, 3, 7, 2, -100]])
    gradcheck(lambda h, w: chunked_lm_loss(h, w, t, chunk_size=3), [h, w])  # 10 rows in chunks of 3, 3, 3, 1


def test_chunked_loss_equals_linear_then_cross_entropy():
    h = tinylora.tensor(random_array((3, 7, 8), seed=3), dtype="float64")
    w = tinylora.tensor(random_array((20, 8), seed=4), dtype="float64")
    t = np.random.default_rng(0).integers(0, 20, size=(3, 7))
    for chunk in (1, 5, 21, 1000):
        got = chunked_lm_loss(h, w, t, chunk_size=chunk).item()
        assert got == pytest.approx(F.cross_entropy(F.linear(h, w), t).item(), rel=1e-13)


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_loss_gives_the_same_gradients_in_a_model(lora):
    x, y = _batch(GPTConfig.tiny())
    plain = _grads(_model(lora=lora), x, y)
    chunked = _grads(_model(lora=lora).enable_memory_levers(loss_chunk_size=5), x, y)
    assert_same_grads(chunked, plain)


def test_chunked_loss_never_keeps_the_logits():
    model = _model(lora=True, dtype="float32")
    x, y = _batch(model.config, b=4, t=32)
    n, v, c = 4 * 32, model.config.vocab_size, model.config.n_embd
    saved = {}
    for name, chunk in (("plain", None), ("chunked", 16)):
        model.enable_memory_levers(loss_chunk_size=chunk)
        before = memory.stats()["current"]["saved"]
        logits, loss = model(x, y)
        saved[name] = memory.stats()["current"]["saved"] - before
        del logits, loss
    # the plain loss keeps the probabilities (N, V); the chunked one keeps h (N, C) instead
    assert saved["plain"] - saved["chunked"] == n * (v - c) * 4


# ---------------------------------------------------------------- activation checkpointing
@pytest.mark.parametrize("lora,dropout", [(False, 0.0), (True, 0.0), (True, 0.2)])
def test_checkpointing_gives_the_same_gradients(lora, dropout):
    x, y = _batch(GPTConfig.tiny())
    plain = _grads(_model(lora=lora, dropout=dropout), x, y)
    ckpt = _grads(_model(lora=lora, dropout=dropout).enable_memory_levers(checkpoint_activations=True), x, y)
    assert_same_grads(ckpt, plain)  # with dropout, the recomputation replays the same masks


def test_checkpointing_and_chunked_loss_together():
    x, y = _batch(GPTConfig.tiny())
    plain = _grads(_model(lora=True), x, y)
    both = _model(lora=True).enable_memory_levers(checkpoint_activations=True, loss_chunk_size=7)
    assert_same_grads(_grads(both, x, y), plain)


def _saved_after_forward(model, x, y):
    before = memory.stats()["current"]["saved"]
    _, loss = model(x, y)
    saved = memory.stats()["current"]["saved"] - before
    del loss
    return saved


def test_checkpointing_keeps_one_block_input_per_block():
    x, y = _batch(GPTConfig.tiny(), b=4, t=32)
    n, c = 4 * 32, GPTConfig.tiny().n_embd
    per_block = {}
    for ckpt in (False, True):
        saved = [_saved_after_forward(_model(n_layer=L, lora=True, dtype="float32")
                                      .enable_memory_levers(checkpoint_activations=ckpt), x, y) for L in (2, 3)]
        per_block[ckpt] = saved[1] - saved[0]  # what one more block adds
    assert per_block[True] == n * c * 4  # exactly its input x (N, C)
    assert per_block[False] > 5 * per_block[True]  # instead of q, k, v, attention weights, GELU input, ...


def test_checkpointing_lowers_the_step_peak():
    x, y = _batch(GPTConfig.tiny(), b=4, t=64)
    peaks = {}
    for ckpt in (False, True):
        model = _model(n_layer=4, lora=True, dtype="float32").enable_memory_levers(checkpoint_activations=ckpt)
        memory.reset_peak()
        start = memory.total()
        _, loss = model(x, y)
        loss.backward()
        peaks[ckpt] = memory.stats()["peak"] - start
        del loss
    assert peaks[True] < 0.7 * peaks[False]


def test_bad_chunk_size_and_checkpoint_is_off_without_a_graph():
    with pytest.raises(ValueError, match="loss_chunk_size"):
        _model().enable_memory_levers(loss_chunk_size=0)
    model = _model(lora=True).enable_memory_levers(checkpoint_activations=True)
    x, y = _batch(model.config)
    with tinylora.no_grad():  # evaluation: nothing to recompute, the blocks run as usual
        loss = model(x, y)[1]
    assert loss._ctx is None
