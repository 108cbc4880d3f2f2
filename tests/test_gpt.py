"""tinylora.model.gpt: configs, parameter names, GPT-2 init, the forward math (against Hugging Face, logits and
every gradient), the tied embedding, the KV cache, and clear errors."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from conftest import assert_close, require

import tinylora
import tinylora.functional as F
from tinylora import nn
from tinylora.model.gpt import GPT, GPTConfig, KVCache

SMALL = dict(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


def _tokens(shape, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, size=shape)


# ---------------------------------------------------------------- config
def test_presets_have_the_published_sizes():
    expected = {
        "gpt2": (12, 12, 768), "gpt2-medium": (24, 16, 1024), "gpt2-large": (36, 20, 1280),
        "gpt2-xl": (48, 25, 1600), "tiny": (2, 2, 64), "mini": (4, 4, 128),
    }
    for name, (n_layer, n_head, n_embd) in expected.items():
        c = GPTConfig.from_preset(name)
        assert (c.n_layer, c.n_head, c.n_embd) == (n_layer, n_head, n_embd), name
        assert c.dropout == 0.1 and c.layer_norm_eps == 1e-5 and c.bias
    assert GPTConfig.gpt2().vocab_size == 50257 and GPTConfig.gpt2().block_size == 1024
    assert (GPTConfig.tiny().vocab_size, GPTConfig.tiny().block_size) == (256, 64)
    assert (GPTConfig.mini().vocab_size, GPTConfig.mini().block_size) == (256, 128)


def test_from_preset_overrides_and_errors():
    c = GPTConfig.from_preset("gpt2", dropout=0.0)
    assert c.dropout == 0.0 and c.n_embd == 768
    with pytest.raises(ValueError, match="unknown GPT preset 'gpt3'"):
        GPTConfig.from_preset("gpt3")
    with pytest.raises(TypeError, match="n_embed"):
        GPTConfig.from_preset("tiny", n_embed=32)
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)
    with pytest.raises(ValueError, match="n_layer"):
        GPTConfig(n_layer=0)


# ---------------------------------------------------------------- structure and init
def test_parameter_names_follow_the_spec_and_the_head_is_tied():
    model = GPT(GPTConfig(**SMALL))
    names = [n for n, _ in model.named_parameters()]
    expected = ["wte.weight", "wpe.weight"]
    for i in range(2):
        expected += [f"blocks.{i}.ln_1.weight", f"blocks.{i}.ln_1.bias"]
        for m in "qkvo":
            expected += [f"blocks.{i}.attn.{m}.weight", f"blocks.{i}.attn.{m}.bias"]
        expected += [f"blocks.{i}.ln_2.weight", f"blocks.{i}.ln_2.bias"]
        expected += [f"blocks.{i}.mlp.fc.weight", f"blocks.{i}.mlp.fc.bias"]
        expected += [f"blocks.{i}.mlp.proj.weight", f"blocks.{i}.mlp.proj.bias"]
    expected += ["ln_f.weight", "ln_f.bias"]
    assert sorted(names) == sorted(expected)
    assert list(model.state_dict()) == names  # the tied weight is stored once, no head entry
    c = SMALL["n_embd"]
    assert model.blocks[0].attn.q.weight.shape == (c, c)
    assert model.blocks[0].mlp.fc.weight.shape == (4 * c, c)  # (out, in)
    assert model.blocks[0].mlp.proj.weight.shape == (c, 4 * c)


def test_config_without_bias_has_no_linear_biases():
    model = GPT(GPTConfig(**{**SMALL, "bias": False}))
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Linear))


def test_gpt2_init_statistics():
    config = GPTConfig.mini()
    model = GPT(config)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            assert not np.any(m.bias.data), "Linear biases start at 0"
        if isinstance(m, nn.LayerNorm):
            assert np.all(m.weight.data == 1) and not np.any(m.bias.data)
    block = model.blocks[1]
    # 16k-65k samples each: the sample std is within about 1% of the true std
    for w in (model.wte.weight, model.wpe.weight, block.attn.q.weight, block.mlp.fc.weight):
        assert abs(float(w.data.std()) / 0.02 - 1) < 0.03
    residual = 0.02 / math.sqrt(2 * config.n_layer)
    for w in (block.attn.o.weight, block.mlp.proj.weight):
        assert abs(float(w.data.std()) / residual - 1) < 0.03


def test_same_seed_same_model_and_dtype_device_are_respected():
    tinylora.manual_seed(3)
    a = GPT(GPTConfig(**SMALL))
    tinylora.manual_seed(3)
    b = GPT(GPTConfig(**SMALL), dtype="float64")
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert p.dtype == np.float32 and q.dtype == np.float64, name
        np.testing.assert_array_equal(p.data, q.data.astype(np.float32), err_msg=name)
    fake = GPT(GPTConfig(**SMALL), device="fake")
    assert all(p.device.name == "fake" for p in fake.parameters())


# ---------------------------------------------------------------- forward
def test_forward_shapes_and_loss_with_ignore_index():
    config = GPTConfig(**SMALL)
    model = GPT(config, dtype="float64").eval()
    idx = _tokens((3, 7), config.vocab_size)
    targets = _tokens((3, 7), config.vocab_size, seed=1)
    targets[0, :4] = -100  # e.g. a prompt the loss should skip
    logits, loss = model(tinylora.tensor(idx), targets=tinylora.tensor(targets))
    assert logits.shape == (3, 7, config.vocab_size)
    z = logits.detach().numpy()
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets != -100
    expected = -logp[keep, targets[keep]].mean()
    assert_close(loss.item(), expected, rtol=1e-12, atol=0, what="loss")
    assert model(tinylora.tensor(idx))[1] is None


def test_bad_idx_gives_clear_errors():
    config = GPTConfig(**SMALL)
    model = GPT(config)
    with pytest.raises(ValueError, match="exceeds block_size=16"):
        model(tinylora.tensor(_tokens((1, 17), config.vocab_size)))
    with pytest.raises(TypeError, match="integer token ids"):
        model(tinylora.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model(tinylora.tensor([1, 2, 3]))
    with pytest.raises(IndexError, match="out of range"):
        model(tinylora.tensor([[config.vocab_size]]))
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"n_layer": 2})


def test_dropout_is_active_in_train_mode_only():
    config = GPTConfig(**{**SMALL, "dropout": 0.5})
    model = GPT(config)
    idx = tinylora.tensor(_tokens((2, 5), config.vocab_size))
    with tinylora.no_grad():
        train_a, train_b = model(idx)[0].numpy(), model(idx)[0].numpy()
        model.eval()
        eval_a, eval_b = model(idx)[0].numpy(), model(idx)[0].numpy()
    assert not np.array_equal(train_a, train_b)
    np.testing.assert_array_equal(eval_a, eval_b)


def test_attention_saves_only_what_backward_needs():
    """Frozen W_q, W_k, W_v, W_o and an input that needs a gradient (as under LoRA further down):
    the nodes keep q, k, v (B, T, C) and the attention weights (B, nh, T, T) once (the fused causal
    softmax needs no mask in backward); no frozen weight's input, and no second copy of the weights."""
    from tinylora.engine.backend import memory
    from tinylora.model.gpt import CausalSelfAttention

    config = GPTConfig(**SMALL)
    attn = CausalSelfAttention(config, 0, dtype="float64").eval()
    attn.requires_grad_(False)
    b, t, c, nh = 2, 6, config.n_embd, config.n_head
    x = tinylora.tensor(np.random.default_rng(0).standard_normal((b, t, c)), requires_grad=True)
    gc.collect()
    before = memory.stats()["current"]["saved"]
    y = attn(x)
    saved = memory.stats()["current"]["saved"] - before
    expected = 8 * (3 * b * t * c + b * nh * t * t)  # float64 q, k, v and the attention weights
    assert expected <= saved <= expected + 64, f"saved {saved} bytes, expected {expected} (+ a few scalars)"
    y.backward(np.ones(y.shape))
    assert x.grad is not None and all(p.grad is None for p in attn.parameters())
    with tinylora.no_grad():  # no graph at all when nothing needs a gradient
        assert attn(x)._ctx is None


# ---------------------------------------------------------------- Hugging Face reference
def _hf_pair(torch, transformers, dtype):
    """A random HF GPT2LMHeadModel and a tinylora GPT holding the same weights (c_attn split, Conv1D transposed)."""
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(
        vocab_size=SMALL["vocab_size"], n_positions=SMALL["block_size"], n_embd=SMALL["n_embd"],
        n_layer=SMALL["n_layer"], n_head=SMALL["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=None, eos_token_id=None,
    )
    hf = transformers.GPT2LMHeadModel(hf_config).to(getattr(torch, dtype)).eval()
    with torch.no_grad():  # randomise everything, so a wrong bias or LayerNorm mapping shows
        for name, p in hf.named_parameters():
            p.normal_(0.0, 0.1)
            if ".ln_" in name and name.endswith("weight"):
                p.add_(1.0)
    sd = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    c = SMALL["n_embd"]
    state = {"wte.weight": sd["transformer.wte.weight"], "wpe.weight": sd["transformer.wpe.weight"],
             "ln_f.weight": sd["transformer.ln_f.weight"], "ln_f.bias": sd["transformer.ln_f.bias"]}
    for i in range(SMALL["n_layer"]):
        h = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            state[f"blocks.{i}.{ln}.weight"], state[f"blocks.{i}.{ln}.bias"] = sd[h + ln + ".weight"], sd[h + ln + ".bias"]
        w, b = sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"]  # (C, 3C), (3C,)
        for j, m in enumerate("qkv"):
            state[f"blocks.{i}.attn.{m}.weight"] = w[:, j * c:(j + 1) * c].T
            state[f"blocks.{i}.attn.{m}.bias"] = b[j * c:(j + 1) * c]
        for ours, theirs in (("attn.o", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            state[f"blocks.{i}.{ours}.weight"] = sd[h + theirs + ".weight"].T
            state[f"blocks.{i}.{ours}.bias"] = sd[h + theirs + ".bias"]
    model = GPT(GPTConfig(**SMALL), dtype=dtype).eval()
    model.load_state_dict(state)
    return hf, model


@pytest.mark.ref
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-12)])
def test_logits_match_hugging_face(dtype, tol):
    torch, transformers = require("torch"), require("transformers")
    hf, model = _hf_pair(torch, transformers, dtype)
    idx = _tokens((2, SMALL["block_size"]), SMALL["vocab_size"])
    with torch.no_grad():
        expected = hf(torch.tensor(idx)).logits.numpy()
    with tinylora.no_grad():
        logits, _ = model(tinylora.tensor(idx))
    assert_close(logits.numpy(), expected, rtol=0, atol=tol, what=f"logits vs HF ({dtype})")


@pytest.mark.ref
def test_every_gradient_matches_hugging_face():
    torch, transformers = require("torch"), require("transformers")
    hf, model = _hf_pair(torch, transformers, "float64")
    idx, targets = _tokens((2, 9), SMALL["vocab_size"]), _tokens((2, 9), SMALL["vocab_size"], seed=1)
    logits = hf(torch.tensor(idx)).logits
    torch.nn.functional.cross_entropy(logits.reshape(-1, SMALL["vocab_size"]), torch.tensor(targets).reshape(-1)).backward()
    hf_grads = {k: p.grad.numpy() for k, p in hf.named_parameters()}
    _, loss = model(tinylora.tensor(idx), targets=tinylora.tensor(targets))
    loss.backward()
    ours = {n: p.grad.numpy() for n, p in model.named_parameters()}
    c = SMALL["n_embd"]

    def check(name, expected):
        assert_close(ours[name], expected, rtol=1e-9, atol=1e-12, what=name)

    check("wte.weight", hf_grads["transformer.wte.weight"])  # lookup + tied head, summed in both
    check("wpe.weight", hf_grads["transformer.wpe.weight"])
    check("ln_f.weight", hf_grads["transformer.ln_f.weight"])
    for i in range(SMALL["n_layer"]):
        h = f"transformer.h.{i}."
        for j, m in enumerate("qkv"):
            check(f"blocks.{i}.attn.{m}.weight", hf_grads[h + "attn.c_attn.weight"][:, j * c:(j + 1) * c].T)
            check(f"blocks.{i}.attn.{m}.bias", hf_grads[h + "attn.c_attn.bias"][j * c:(j + 1) * c])
        for ours_name, theirs in (("attn.o", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            check(f"blocks.{i}.{ours_name}.weight", hf_grads[h + theirs + ".weight"].T)
            check(f"blocks.{i}.{ours_name}.bias", hf_grads[h + theirs + ".bias"])
        for ln in ("ln_1", "ln_2"):
            check(f"blocks.{i}.{ln}.weight", hf_grads[h + ln + ".weight"])
            check(f"blocks.{i}.{ln}.bias", hf_grads[h + ln + ".bias"])


# ---------------------------------------------------------------- tied embedding
def test_tied_embedding_gradient_is_the_sum_of_both_uses():
    """Against an untied copy: the same model, but the head reads its own copy of wte.weight."""
    config = GPTConfig(**SMALL)
    tinylora.manual_seed(1)
    tied = GPT(config, dtype="float64").eval()
    tinylora.manual_seed(1)
    untied = GPT(config, dtype="float64").eval()
    head = nn.Parameter(tinylora.tensor(untied.wte.weight.data))  # a separate (V, C) copy
    idx, targets = _tokens((2, 8), config.vocab_size), tinylora.tensor(_tokens((2, 8), config.vocab_size, seed=1))

    _, loss = tied(tinylora.tensor(idx), targets=targets)
    loss.backward()
    untied_logits = F.linear(untied.hidden_states(tinylora.tensor(idx)), head)  # (B, T, V)
    untied_loss = F.cross_entropy(untied_logits, targets)
    untied_loss.backward()

    assert loss.item() == untied_loss.item()
    lookup, output = untied.wte.weight.grad.numpy(), head.grad.numpy()
    assert np.abs(lookup).max() > 0 and np.abs(output).max() > 0  # both uses contribute
    assert_close(tied.wte.weight.grad.numpy(), lookup + output, rtol=1e-12, atol=1e-15, what="tied grad")
    assert sum(1 for p in tied.parameters() if p.shape == (config.vocab_size, config.n_embd)) == 1


# ---------------------------------------------------------------- KV cache
def test_kv_cache_forward_matches_the_full_forward():
    config = GPTConfig(**SMALL)
    model = GPT(config, dtype="float64").eval()
    idx = _tokens((2, 11), config.vocab_size)
    with tinylora.no_grad():
        full, _ = model(tinylora.tensor(idx))
        cache = KVCache()
        pieces = [model(tinylora.tensor(idx[:, :5]), kv_cache=cache)[0]]  # a prompt of 5, then one at a time
        assert cache.length == 5
        for t in range(5, 11):
            pieces.append(model(tinylora.tensor(idx[:, t:t + 1]), kv_cache=cache)[0])
        assert cache.length == 11 and len(cache.layers) == config.n_layer
    stepwise = np.concatenate([p.numpy() for p in pieces], axis=1)
    assert_close(stepwise, full.numpy(), rtol=0, atol=1e-12, what="cached vs full logits")


def test_kv_cache_errors():
    config = GPTConfig(**SMALL)
    model = GPT(config)
    cache = KVCache()
    with tinylora.no_grad():
        model(tinylora.tensor(_tokens((2, 10), config.vocab_size)), kv_cache=cache)
        with pytest.raises(ValueError, match="after the 10 positions in the kv_cache"):
            model(tinylora.tensor(_tokens((2, 7), config.vocab_size)), kv_cache=cache)
        with pytest.raises(ValueError, match="batch of 2"):
            model(tinylora.tensor(_tokens((3, 1), config.vocab_size)), kv_cache=cache)
