"""tinylora.model.generate: cached and uncached generation agree, sampling filters keep the right tokens,
sampling follows the probabilities, eos stops, modes are restored, bad arguments are named."""

from __future__ import annotations

import numpy as np
import pytest

import tinylora
from tinylora.model.generate import filter_top_k, filter_top_p, generate, sample_next
from tinylora.model.gpt import GPT, GPTConfig

CONFIG = dict(vocab_size=40, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.1)


def _model(dtype="float64", seed=0):
    tinylora.manual_seed(seed)
    model = GPT(GPTConfig(**CONFIG), dtype=dtype)
    for p in model.parameters():  # larger weights than GPT-2's init, so greedy choices are not near-ties
        p.data *= 5.0
    return model


def _prompt(shape=(2, 5), seed=0):
    return tinylora.tensor(np.random.default_rng(seed).integers(0, CONFIG["vocab_size"], size=shape))


def test_cached_and_uncached_greedy_generation_agree_past_block_size():
    model = _model()
    prompt = _prompt((2, 5))
    n = 12  # 5 + 12 > block_size = 8: the context gets cropped and the cache rebuilt
    fed = []  # how many tokens each forward call gets
    forward = model.forward
    model.forward = lambda idx, **kw: fed.append(idx.shape[1]) or forward(idx, **kw)
    cached = generate(model, prompt, n, greedy=True, use_cache=True).numpy()
    del model.forward
    assert fed[:4] == [5, 1, 1, 1] and set(fed[4:]) == {8}  # prompt, one token at a time, then full windows
    uncached = generate(model, prompt, n, greedy=True, use_cache=False).numpy()
    assert cached.shape == (2, 17)
    np.testing.assert_array_equal(cached[:, :5], prompt.numpy())
    np.testing.assert_array_equal(cached, uncached)
    assert len(np.unique(cached[:, 5:])) > 1  # not a degenerate constant continuation


def test_greedy_is_the_argmax_of_the_model_at_every_step():
    model = _model()
    out = generate(model, _prompt((1, 3)), 4, greedy=True).numpy()
    model.eval()
    with tinylora.no_grad():
        for t in range(3, 7):
            logits, _ = model(tinylora.tensor(out[:, :t]))
            assert out[0, t] == int(np.argmax(logits.numpy()[0, -1]))


def test_temperature_zero_and_top_k_one_mean_greedy():
    model = _model()
    prompt = _prompt()
    greedy = generate(model, prompt, 6, greedy=True).numpy()
    np.testing.assert_array_equal(generate(model, prompt, 6, temperature=0).numpy(), greedy)
    np.testing.assert_array_equal(generate(model, prompt, 6, top_k=1).numpy(), greedy)
    np.testing.assert_array_equal(generate(model, prompt, 6, top_p=1e-9).numpy(), greedy)


def test_sampling_is_reproducible_from_the_seed_and_cache_independent():
    model = _model()
    prompt = _prompt()
    tinylora.manual_seed(5)
    a = generate(model, prompt, 10, temperature=1.5).numpy()
    tinylora.manual_seed(5)
    b = generate(model, prompt, 10, temperature=1.5, use_cache=False).numpy()
    tinylora.manual_seed(6)
    c = generate(model, prompt, 10, temperature=1.5).numpy()
    np.testing.assert_array_equal(a, b)  # same seed, same draws; cache or not, same distributions
    assert not np.array_equal(a, c)


def test_one_dimensional_prompt_gives_one_dimensional_output():
    out = generate(_model(), [1, 2, 3], 2, greedy=True)
    assert out.shape == (5,) and out.dtype == np.int64
    assert out.tolist()[:3] == [1, 2, 3]


def test_eos_stops_generation_and_pads_finished_rows():
    model = _model()
    prompt = _prompt((2, 4))
    free = generate(model, prompt, 6, greedy=True).numpy()
    eos = int(free[0, 4])  # row 0 produces this token first
    out = generate(model, prompt, 6, greedy=True, eos_token=eos).numpy()
    row1 = list(free[1, 4:])
    if eos in row1:  # both rows finish: generation stops as soon as the later one does
        stop = row1.index(eos) + 1
        assert out.shape == (2, 4 + stop)
    else:
        assert out.shape == (2, 10)
        np.testing.assert_array_equal(out[1], free[1])
    assert np.all(out[0, 4:] == eos)  # row 0 is padded with eos after it finished


def test_generate_restores_modes_and_builds_no_graph():
    model = _model()
    model.train()
    model.blocks[0].eval()  # a mixed state, restored exactly
    out = generate(model, _prompt(), 3, temperature=0.7, top_k=5, top_p=0.9)
    assert not out.requires_grad
    assert model.training and not model.blocks[0].training and model.blocks[1].training


def test_bad_arguments_are_named():
    model = _model()
    with pytest.raises(ValueError, match="temperature"):
        generate(model, _prompt(), 2, temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        generate(model, _prompt(), 2, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, _prompt(), 2, top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, _prompt(), -1)
    with pytest.raises(TypeError, match="integer token ids"):
        generate(model, [[0.5, 1.5]], 2)


# ---------------------------------------------------------------- sampling helpers
def test_top_k_keeps_the_k_largest():
    logits = np.array([[0.1, 3.0, -1.0, 2.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    kept = np.isfinite(filter_top_k(logits, 2))
    np.testing.assert_array_equal(kept, [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]])
    assert np.isfinite(filter_top_k(logits, 5)).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = np.array([[0.05, 0.5, 0.1, 0.3, 0.05]])
    logits = np.log(probs)
    # sorted: 0.5, 0.3, 0.1, 0.05, 0.05 -> cumulative 0.5, 0.8, 0.9, ...
    for p, expected in [(0.4, [0, 1, 0, 0, 0]), (0.5, [0, 1, 0, 0, 0]), (0.6, [0, 1, 0, 1, 0]),
                        (0.85, [0, 1, 1, 1, 0]), (1.0, [1, 1, 1, 1, 1])]:
        np.testing.assert_array_equal(np.isfinite(filter_top_p(logits, p))[0], expected, err_msg=f"p={p}")


def test_samples_follow_the_softmax_probabilities():
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    logits = np.tile(np.log(probs), (20000, 1))  # 20000 independent rows
    ids = sample_next(logits)
    freq = np.bincount(ids, minlength=4) / len(ids)
    np.testing.assert_allclose(freq, probs, atol=0.015)  # about 4 standard errors
    hot = np.bincount(sample_next(logits, temperature=0.25), minlength=4) / len(ids)
    assert hot[3] > 0.6  # a low temperature sharpens towards the most likely token
    top2 = np.bincount(sample_next(logits, top_k=2), minlength=4) / len(ids)
    assert top2[0] == 0 and top2[1] == 0
    np.testing.assert_allclose(top2[2:], [3 / 7, 4 / 7], atol=0.015)
