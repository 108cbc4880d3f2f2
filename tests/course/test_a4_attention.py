"""A4 attention and a GPT block: splitting heads, causal self-attention, the KV cache, the pre-LN block."""

import math

import numpy as np
import pytest

import tinylora
from tinylora.model.gpt import Block, CausalSelfAttention, GPTConfig, KVCache

CONFIG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=16, dropout=0.0)


def x64(shape, seed=0):
    return tinylora.tensor(np.random.default_rng(seed).standard_normal(shape), dtype="float64")


def host(t):
    return t.detach().numpy()


def numpy_attention(attn, x):
    """Causal multi-head attention written with NumPy from the module's weights (the graded answer's spec)."""
    b, t, c = x.shape
    nh, hs = attn.n_head, attn.head_size

    def proj(linear, v):
        return v @ host(linear.weight).T + host(linear.bias)

    def heads(v):
        return v.reshape(b, t, nh, hs).transpose(0, 2, 1, 3)

    q, k, v = heads(proj(attn.q, x)), heads(proj(attn.k, x)), heads(proj(attn.v, x))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
    scores = np.where(np.triu(np.ones((t, t), bool), k=1), -np.inf, scores)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = (weights @ v).transpose(0, 2, 1, 3).reshape(b, t, c)
    return proj(attn.o, y)


# ------------------------------------------------------------------ task 1: split into heads
@pytest.mark.a4_task1
def test_heads_split_the_channels_in_order():
    attn = CausalSelfAttention(CONFIG, 0, dtype="float64")
    x = x64((2, 5, 16))
    h = host(attn._heads(x))
    assert h.shape == (2, 4, 5, 4), f"(B, T, C) -> (B, nh, T, hs) should be (2, 4, 5, 4), got {h.shape}"
    np.testing.assert_array_equal(h[1, 2, 3], host(x)[1, 3, 8:12], err_msg="head 2 holds channels 8..11")


@pytest.mark.a4_task1
def test_heads_split_the_channels_in_order_when_head_count_and_size_differ():
    attn = CausalSelfAttention(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16), 0,
                               dtype="float64")
    x = x64((1, 3, 16), 9)
    h = host(attn._heads(x))
    assert h.shape == (1, 2, 3, 8), f"(B, T, C) -> (B, nh, T, hs) should be (1, 2, 3, 8), got {h.shape}"
    np.testing.assert_array_equal(h[0, 1, 2], host(x)[0, 2, 8:16],
                                  err_msg="with 2 heads of size 8, head 1 holds channels 8..15")


# ------------------------------------------------------------------ task 2: causal self-attention
@pytest.mark.a4_task2
def test_attention_matches_the_formula():
    attn = CausalSelfAttention(CONFIG, 0, dtype="float64").eval()
    x = x64((2, 6, 16), 1)
    np.testing.assert_allclose(host(attn(x)), numpy_attention(attn, host(x)), rtol=1e-10, atol=1e-12,
                               err_msg="softmax(q kᵀ / sqrt(hs)) v per head, causal, heads joined, then W_o")


@pytest.mark.a4_task2
def test_attention_is_causal():
    attn = CausalSelfAttention(CONFIG, 0, dtype="float64").eval()
    x = host(x64((1, 6, 16), 2))
    changed = x.copy()
    changed[0, 4] += 1.0  # change position 4 only
    a, b = host(attn(tinylora.tensor(x))), host(attn(tinylora.tensor(changed)))
    np.testing.assert_array_equal(a[0, :4], b[0, :4], err_msg="positions before 4 must not see position 4")
    assert not np.allclose(a[0, 4:], b[0, 4:]), "position 4 and later must see position 4"


class PastKeys:
    """A stand-in for the KV cache (task 4): it returns the given past keys and values, then the new ones."""

    def __init__(self, k, v):
        self.k, self.v = k, v

    def update(self, layer, k, v):
        return tinylora.functional.cat([self.k, k], axis=2), tinylora.functional.cat([self.v, v], axis=2)


@pytest.mark.a4_task2
def test_attention_after_past_positions_sees_them_all():
    attn = CausalSelfAttention(CONFIG, 0, dtype="float64").eval()
    x = x64((1, 6, 16), 10)
    full = host(attn(x))
    past = PastKeys(attn._heads(attn.k(x[:, :4])), attn._heads(attn.v(x[:, :4])))
    np.testing.assert_allclose(host(attn(x[:, 4:], kv_cache=past)), full[:, 4:], rtol=1e-10, atol=1e-12,
                               err_msg="query i of new tokens sits at position past + i: it sees keys 0..past + i")


# ------------------------------------------------------------------ task 4: the KV cache
@pytest.mark.a4_task4
def test_kv_cache_appends_along_the_time_axis():
    cache = KVCache()
    k1, v1 = x64((2, 4, 3, 4), 3), x64((2, 4, 3, 4), 4)
    k, v = cache.update(0, k1, v1)
    assert k.shape == (2, 4, 3, 4) and cache.length == 3, "the first update stores and returns the 3 given positions"
    k2, v2 = x64((2, 4, 1, 4), 5), x64((2, 4, 1, 4), 6)
    k, v = cache.update(0, k2, v2)
    assert k.shape == (2, 4, 4, 4) and cache.length == 4, "after one more token the cache holds 4 positions"
    np.testing.assert_array_equal(host(k), np.concatenate([host(k1), host(k2)], axis=2),
                                  err_msg="keys: the past positions, then the new ones, along the time axis (2)")
    np.testing.assert_array_equal(host(v), np.concatenate([host(v1), host(v2)], axis=2),
                                  err_msg="values: the past positions, then the new ones, along the time axis (2)")


@pytest.mark.a4_task4
def test_generation_with_the_cache_equals_generation_without():
    model = tinylora.GPT(CONFIG, dtype="float64").eval()
    idx = np.array([[3, 7, 1, 4, 4, 9]])
    with tinylora.no_grad():
        full, _ = model(tinylora.tensor(idx))
        cache = KVCache()
        first, _ = model(tinylora.tensor(idx[:, :4]), kv_cache=cache)
        second, _ = model(tinylora.tensor(idx[:, 4:]), kv_cache=cache)
    np.testing.assert_allclose(np.concatenate([host(first), host(second)], axis=1), host(full), atol=1e-12,
                               err_msg="feeding tokens through the cache in two steps must give the logits of one pass")


# ------------------------------------------------------------------ task 3: the pre-LN block
@pytest.mark.a4_task3
def test_block_is_pre_layer_norm_with_two_residual_adds():
    block = Block(CONFIG, 0, dtype="float64").eval()
    rng = np.random.default_rng(8)
    for norm in (block.ln_1, block.ln_2):  # distinct norms, so using one for the other shows
        norm.weight.data[...] = rng.uniform(0.5, 1.5, norm.weight.shape)
        norm.bias.data[...] = rng.standard_normal(norm.bias.shape)
    x = x64((2, 5, 16), 7)
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp(block.ln_2(h))
    np.testing.assert_allclose(host(block(x)), host(expected), rtol=1e-12, atol=1e-12,
                               err_msg="pre-LN: x + attn(ln_1(x)), then h + mlp(ln_2(h))")
