"""The Hugging Face and PEFT conversion algebra, checked without torch (a plain `[test]` install runs these).

tests/test_hf_gpt2.py and tests/test_peft_interop.py compare with transformers and
PEFT themselves and skip without them; these properties check the same algebra
against its definition, in float64, on shapes hypothesis draws:

- HF's Conv1D computes x @ W + b with W stored (in, out), and c_attn's output
  columns are [q | k | v]: converting a checkpoint must give every tinylora Linear
  (x @ W.T + b, W (out, in)) exactly that output, and GPT-2 written against HF's
  layout (a NumPy forward below) must give tinylora's logits;
- converting HF -> tinylora -> HF is the identity, bit for bit;
- PEFT's update of a module is (α/r) B A with r and α read from `r`, `lora_alpha`
  and the `rank_pattern` / `alpha_pattern` entries matching the module's name:
  export must reproduce tinylora's ΔW of every adapted Linear (q, k, v as the row
  blocks of c_attn's), for any ranks, alphas and targets; LoRA on q and v of rank r
  is one c_attn LoRA of rank 2r with lora_alpha 2α;
- import gives q, k, v the row blocks of a c_attn LoRA (B_t, the same A, the same
  scaling, α/sqrt(R) under use_rslora), and export followed by import keeps every ΔW.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds

from tinylora import no_grad, tensor
from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora import apply_lora
from tinylora.lora.apply import lora_layers
from tinylora.lora.peft import CONFIG_FILE, HF_MODULE, TENSOR_FILE, _pattern_value, export_peft, import_peft
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.model.hf_gpt2 import expected_hf_shapes, hf_to_tinylora, tinylora_to_hf

TOL = dict(rtol=1e-12, atol=1e-12)  # float64 on both sides, the same products in another order
FILE_EXAMPLES = settings(max_examples=10)  # these write an adapter folder per example


@st.composite
def gpt_configs(draw, max_layers=3):
    n_head = draw(st.integers(1, 2))
    return GPTConfig(vocab_size=draw(st.integers(5, 20)), block_size=draw(st.integers(2, 6)),
                     n_layer=draw(st.integers(1, max_layers)), n_head=n_head,
                     n_embd=n_head * draw(st.integers(2, 4)), dropout=0.0, bias=True)


def random_hf_tensors(config, seed) -> dict:
    """A GPT-2 checkpoint of `config` (HF names without the `transformer.` prefix), random float64 values."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) * (0.3 if len(shape) > 1 else 1.0)
            for name, shape in expected_hf_shapes(config).items()}


def tinylora_gpt(config, hf) -> GPT:
    model = GPT(config, dtype="float64")
    model.load_state_dict(hf_to_tinylora(hf, config))
    return model.eval()


# ------------------------------------------------------------------ GPT-2 as HF lays it out, in NumPy
def _layer_norm(x, weight, bias, eps):
    centered = x - x.mean(-1, keepdims=True)
    return centered / np.sqrt((centered**2).mean(-1, keepdims=True) + eps) * weight + bias


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def hf_layout_logits(hf, config, idx):
    """GPT-2's forward on HF's own tensors: every Conv1D is x @ W + b with W (in, out); c_attn gives [q | k | v]."""
    B, T = idx.shape
    C, nh, eps = config.n_embd, config.n_head, config.layer_norm_eps
    hs = C // nh

    def conv1d(name, x):
        return x @ hf[name + ".weight"] + hf[name + ".bias"]

    def heads(t):  # (B, T, C) -> (B, nh, T, hs)
        return t.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)

    x = hf["wte.weight"][idx] + hf["wpe.weight"][:T]  # (B, T, C)
    for i in range(config.n_layer):
        h = f"h.{i}."
        q, k, v = np.split(conv1d(h + "attn.c_attn", _layer_norm(x, hf[h + "ln_1.weight"], hf[h + "ln_1.bias"], eps)), 3, -1)
        scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / math.sqrt(hs)  # (B, nh, T, T)
        scores[..., np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = x + conv1d(h + "attn.c_proj", (att @ heads(v)).transpose(0, 2, 1, 3).reshape(B, T, C))
        m = _layer_norm(x, hf[h + "ln_2.weight"], hf[h + "ln_2.bias"], eps)
        x = x + conv1d(h + "mlp.c_proj", _gelu_tanh(conv1d(h + "mlp.c_fc", m)))
    return _layer_norm(x, hf["ln_f.weight"], hf["ln_f.bias"], eps) @ hf["wte.weight"].T  # (B, T, V), tied head


# ------------------------------------------------------------------ checkpoints
@given(config=gpt_configs(), seed=seeds)
def test_hf_to_tinylora_and_back_is_the_identity(config, seed):
    hf = random_hf_tensors(config, seed)
    back = tinylora_to_hf(hf_to_tinylora(hf, config), config)
    assert set(back) == {"transformer." + name for name in hf}
    for name, value in hf.items():
        np.testing.assert_array_equal(back["transformer." + name], value, err_msg=name)


@given(config=gpt_configs(), seed=seeds)
@no_grad()
def test_every_linear_computes_what_its_conv1d_computed(config, seed):
    hf = random_hf_tensors(config, seed)
    model = tinylora_gpt(config, hf)
    x = np.random.default_rng(seed + 1).standard_normal((2, config.n_embd))
    for i, block in enumerate(model.blocks):
        h = f"h.{i}."
        fused = x @ hf[h + "attn.c_attn.weight"] + hf[h + "attn.c_attn.bias"]  # (2, 3C): [q | k | v]
        ours = np.concatenate([getattr(block.attn, t)(tensor(x)).numpy() for t in ("q", "k", "v")], axis=-1)
        np.testing.assert_allclose(ours, fused, **TOL)
        for hf_name, module in [("attn.c_proj", block.attn.o), ("mlp.c_fc", block.mlp.fc)]:
            expected = x @ hf[h + hf_name + ".weight"] + hf[h + hf_name + ".bias"]
            np.testing.assert_allclose(module(tensor(x)).numpy(), expected, **TOL)
        wide = np.random.default_rng(seed + 2).standard_normal((2, 4 * config.n_embd))
        expected = wide @ hf[h + "mlp.c_proj.weight"] + hf[h + "mlp.c_proj.bias"]
        np.testing.assert_allclose(block.mlp.proj(tensor(wide)).numpy(), expected, **TOL)


@given(config=gpt_configs(), seed=seeds)
@no_grad()
def test_the_converted_gpt_gives_the_logits_of_gpt2_written_against_hf_layout(config, seed):
    hf = random_hf_tensors(config, seed)
    idx = np.random.default_rng(seed).integers(0, config.vocab_size, size=(2, config.block_size))
    logits, _ = tinylora_gpt(config, hf)(idx)
    np.testing.assert_allclose(logits.numpy(), hf_layout_logits(hf, config, idx), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ PEFT
def peft_updates(folder) -> dict:
    """{(block, HF module): ΔW (out, in)} as PEFT computes it from an adapter folder."""
    config = read_json(os.path.join(folder, CONFIG_FILE))
    tensors = load_tensors(os.path.join(folder, TENSOR_FILE))
    updates = {}
    for key, A in tensors.items():
        if ".lora_A." not in key:
            continue
        B = tensors[key.replace(".lora_A.", ".lora_B.")]
        module_name = key[len("base_model.model."):-len(".lora_A.weight")]  # transformer.h.{i}.{module}
        r = _pattern_value(config["rank_pattern"], module_name, config["r"])
        alpha = _pattern_value(config["alpha_pattern"], module_name, config["lora_alpha"])
        assert A.shape[0] == B.shape[1] == r, f"{module_name}: A {A.shape}, B {B.shape}, r = {r}"
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        i, module = module_name.split(".", 3)[2], module_name.split(".", 3)[3]
        updates[(int(i), module)] = scaling * (B @ A)
    return updates


def tinylora_updates(model) -> dict:
    """{(block, HF module): ΔW (out, in)} of a tinylora model, q, k, v stacked as c_attn's row blocks (0 if absent)."""
    deltas = {name: layer.delta_weight() for name, layer in lora_layers(model)}
    C, updates = model.config.n_embd, {}
    for name, delta in deltas.items():
        _, i, _, target = name.split(".")
        module = HF_MODULE[target]
        if module == "attn.c_attn":
            stacked = updates.setdefault((int(i), module), np.zeros((3 * C, C)))
            row = ("q", "k", "v").index(target)
            stacked[row * C:(row + 1) * C] = delta
        else:
            updates[(int(i), module)] = delta
    return updates


def with_random_lora(config, seed, plans):
    """A float64 GPT with LoRA per plan (r, alpha, targets, layers), every B random (so ΔW != 0)."""
    model = GPT(config, dtype="float64")
    for r, alpha, targets, layers in plans:
        apply_lora(model, r=r, alpha=alpha, targets=targets, layers=layers)
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = rng.standard_normal(layer.lora_B.shape)
    return model


def assert_same_updates(ours: dict, theirs: dict) -> None:
    assert set(ours) == set(theirs)
    for key in ours:
        np.testing.assert_allclose(theirs[key], ours[key], **TOL, err_msg=str(key))


@given(r=st.integers(1, 4), alpha=st.sampled_from([None, 1, 2.5, 16]), seed=seeds)
def test_lora_on_q_and_v_exports_as_one_c_attn_lora_of_rank_2r(r, alpha, seed):
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=2, n_head=1, n_embd=4, dropout=0.0)
    model = with_random_lora(config, seed, [(r, alpha, ("q", "v"), None)])
    with tempfile.TemporaryDirectory() as folder:
        export_peft(model, folder)
        peft_config = read_json(os.path.join(folder, CONFIG_FILE))
        assert peft_config["r"] == 2 * r and peft_config["lora_alpha"] == 2 * (alpha or r)
        assert peft_config["target_modules"] == ["h.0.attn.c_attn", "h.1.attn.c_attn"]
        assert peft_config["fan_in_fan_out"] is True  # GPT-2's Conv1D: PEFT transposes ΔW when it merges
        updates = peft_updates(folder)
    assert_same_updates(tinylora_updates(model), updates)
    for (_, _), delta in updates.items():
        assert not delta[4:8].any()  # k's rows: no LoRA on k


@FILE_EXAMPLES
@given(parts=st.lists(st.tuples(st.integers(1, 3), st.sampled_from([0.5, 1, 3, 8]), st.booleans()), min_size=2,
                      max_size=3), seed=seeds)
def test_q_k_v_with_their_own_ranks_alphas_and_scalings_in_one_c_attn(parts, seed):
    """Two or three α/r (or rsLoRA's α/√r) in ONE fused block: an export that gave c_attn one part's
    scaling for all of them would compute another update for the others."""
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=1, n_embd=4, dropout=0.0)
    model = GPT(config, dtype="float64")
    for target, (r, alpha, rslora) in zip(("q", "k", "v"), parts):
        apply_lora(model, r=r, alpha=alpha, targets=(target,), layers=[0], rslora=rslora)
    rng = np.random.default_rng(seed)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = rng.standard_normal(layer.lora_B.shape)
    with tempfile.TemporaryDirectory() as folder:
        export_peft(model, folder)
        updates = peft_updates(folder)
    assert_same_updates(tinylora_updates(model), updates)


def lora_plans(max_rank=3):
    """1 to 3 plans (r, alpha, targets); each becomes one apply_lora call on its own blocks."""
    return st.lists(
        st.tuples(st.integers(1, max_rank), st.none() | st.sampled_from([1, 3, 0.5, 8]),
                  st.lists(st.sampled_from(["q", "k", "v", "o", "fc", "proj"]), min_size=1, max_size=3, unique=True)),
        min_size=1, max_size=3,
    )


@FILE_EXAMPLES
@given(plans=lora_plans(), n_layer=st.integers(1, 12), seed=seeds)
def test_export_gives_peft_every_update_for_any_ranks_alphas_and_targets(plans, n_layer, seed):
    """Plan j adapts blocks j, j + len(plans), ...: up to 12 blocks, so 'h.1.' must not match 'h.11.'."""
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=n_layer, n_head=1, n_embd=4, dropout=0.0)
    layered = [(r, alpha, targets, list(range(j, n_layer, len(plans))))
               for j, (r, alpha, targets) in enumerate(plans) if j < n_layer]
    model = with_random_lora(config, seed, layered)
    with tempfile.TemporaryDirectory() as folder:
        export_peft(model, folder)
        updates = peft_updates(folder)
    assert_same_updates(tinylora_updates(model), updates)


@FILE_EXAMPLES
@given(R=st.integers(1, 3), alpha=st.sampled_from([1, 4, 6.5]), use_rslora=st.booleans(),
       pattern=st.booleans(), seed=seeds)
def test_import_gives_q_k_v_the_row_blocks_of_a_c_attn_lora(R, alpha, use_rslora, pattern, seed):
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=2, n_head=1, n_embd=4, dropout=0.0)
    C, rng = config.n_embd, np.random.default_rng(seed)
    ranks = {0: R, 1: R + 1 if pattern else R}  # rank_pattern gives block 1 another rank
    tensors = {}
    for i, rank in ranks.items():
        prefix = f"base_model.model.transformer.h.{i}."
        tensors[prefix + "attn.c_attn.lora_A.weight"] = rng.standard_normal((rank, C))
        tensors[prefix + "attn.c_attn.lora_B.weight"] = rng.standard_normal((3 * C, rank))
        tensors[prefix + "mlp.c_fc.lora_A.weight"] = rng.standard_normal((rank, C))
        tensors[prefix + "mlp.c_fc.lora_B.weight"] = rng.standard_normal((4 * C, rank))
    peft_config = {"peft_type": "LORA", "r": R, "lora_alpha": alpha, "use_rslora": use_rslora,
                   "rank_pattern": {"h.1.attn.c_attn": R + 1, "h.1.mlp.c_fc": R + 1} if pattern else {},
                   "alpha_pattern": {"h.1.mlp.c_fc": 2 * alpha} if pattern else {}, "lora_dropout": 0.0}
    model = GPT(config, dtype="float64")
    with tempfile.TemporaryDirectory() as folder:
        save_tensors(os.path.join(folder, TENSOR_FILE), tensors)
        write_json_atomic(os.path.join(folder, CONFIG_FILE), peft_config)
        import_peft(model, folder)
        expected = peft_updates(folder)
    assert_same_updates(tinylora_updates(model), expected)
    for block in model.blocks:  # the three row blocks use one A (equal values)
        np.testing.assert_array_equal(block.attn.q.lora_A.data, block.attn.k.lora_A.data)
        np.testing.assert_array_equal(block.attn.q.lora_A.data, block.attn.v.lora_A.data)


@FILE_EXAMPLES
@given(plans=lora_plans(max_rank=2), seed=seeds)
def test_export_then_import_keeps_every_update(plans, seed):
    """Import makes q, k, v each of the fused rank (up to 3r), which LoRALinear allows only up to n_embd:
    hence n_embd 8 and r <= 2 here (a q, k, v LoRA with 3r > n_embd exports, but does not import back)."""
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=3, n_head=1, n_embd=8, dropout=0.0)
    layered = [(r, alpha, targets, [j]) for j, (r, alpha, targets) in enumerate(plans)]
    model = with_random_lora(config, seed, layered)
    fresh = GPT(config, dtype="float64")
    with tempfile.TemporaryDirectory() as folder:
        export_peft(model, folder)
        import_peft(fresh, folder)
    assert_same_updates(tinylora_updates(model), tinylora_updates(fresh))
