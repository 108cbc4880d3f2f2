"""Hugging Face GPT-2 checkpoints in and out: `load_gpt2(path)` and `save_gpt2(model, path)`.

A Hugging Face GPT-2 directory holds `config.json` and `model.safetensors`.
Its tensor names and layouts differ from tinylora's in three ways:

    1. Names: HF's `h.{i}.attn.c_proj` is tinylora's `blocks.{i}.attn.o`, and so on
       (table below). Files saved by `save_pretrained` prefix every name with
       `transformer.`; the file on the hub has no prefix. Both load.
    2. Fused attention: HF keeps q, k and v in one layer `c_attn` of width 3C.
       tinylora has three Linear(C, C): column block 0 is q, 1 is k, 2 is v.
    3. Layout: HF's Conv1D stores a weight as (in, out) and computes x @ W;
       tinylora's Linear stores (out, in) and computes x @ W.T. So every
       Conv1D weight is transposed.

    HF (no prefix)                 shape (in, out)   tinylora                         shape
    wte.weight                     (V, C)            wte.weight                       (V, C)
    wpe.weight                     (T, C)            wpe.weight                       (T, C)
    h.{i}.ln_1.weight / .bias      (C,)              blocks.{i}.ln_1.weight / .bias   (C,)
    h.{i}.attn.c_attn.weight       (C, 3C)           blocks.{i}.attn.{q,k,v}.weight   (C, C) each, transposed
    h.{i}.attn.c_attn.bias         (3C,)             blocks.{i}.attn.{q,k,v}.bias     (C,) each
    h.{i}.attn.c_proj.weight       (C, C)            blocks.{i}.attn.o.weight         (C, C), transposed
    h.{i}.ln_2.weight / .bias      (C,)              blocks.{i}.ln_2.weight / .bias   (C,)
    h.{i}.mlp.c_fc.weight          (C, 4C)           blocks.{i}.mlp.fc.weight         (4C, C), transposed
    h.{i}.mlp.c_proj.weight        (4C, C)           blocks.{i}.mlp.proj.weight       (C, 4C), transposed
    ln_f.weight / .bias            (C,)              ln_f.weight / .bias              (C,)
    lm_head.weight (optional)      (V, C)            none: the LM head is tied to wte

`attn.bias` and `attn.masked_bias` in older files are the causal-mask buffers,
not weights; they are ignored. float16 and bfloat16 weights are upcast to
float32 (or to `dtype`). This is host-side file code, so it uses NumPy directly.
"""

from __future__ import annotations

import os

import numpy as np

from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic

_PREFIX = "transformer."
_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not weights
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # the tanh approximation tinylora's GELU uses
_FUSED = ("q", "k", "v")  # order of the column blocks of c_attn


# ------------------------------------------------------------------ config
def config_from_hf(hf: dict):
    """Map the fields of an HF GPT-2 `config.json` onto a GPTConfig; refuse variants tinylora cannot run."""
    from tinylora.model.gpt import GPTConfig

    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"config.json: model_type is '{hf['model_type']}', but load_gpt2 reads GPT-2 only")
    missing = [k for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions") if k not in hf]
    if missing:
        raise KeyError(f"config.json lacks the GPT-2 fields {missing}")
    C = hf["n_embd"]
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") not in _TANH_GELUS,
        "n_inner": hf.get("n_inner") not in (None, 4 * C),
        "scale_attn_weights": hf.get("scale_attn_weights", True) is not True,
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": hf.get("add_cross_attention", False),
    }
    bad = {k: hf.get(k) for k, is_bad in unsupported.items() if is_bad}
    if bad:
        raise ValueError(f"config.json: tinylora's GPT cannot run this GPT-2 variant: {bad}")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf["n_positions"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=C,
        dropout=hf.get("resid_pdrop", 0.1),
        bias=True,  # HF's GPT-2 always has biases
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )


def config_to_hf(config) -> dict:
    """The `config.json` fields transformers needs to rebuild this GPT as a GPT2LMHeadModel."""
    if not config.bias:
        raise ValueError("save_gpt2: HF's GPT-2 always has biases; this model was built with bias=False")
    hf = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # None means 4 * n_embd
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "tie_word_embeddings": True,
    }
    # GPT-2's <|endoftext|> (id 50256) exists only in its own vocabulary; None, not HF's default, elsewhere
    hf["bos_token_id"] = hf["eos_token_id"] = 50256 if config.vocab_size > 50256 else None
    return hf


# ------------------------------------------------------------------ tensor names and layouts
def expected_hf_shapes(config) -> dict:
    """{HF name (no prefix): shape} of every weight a GPT-2 with this config has."""
    C, V, T = config.n_embd, config.vocab_size, config.block_size
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(config.n_layer):
        h = f"h.{i}."
        shapes.update({
            h + "ln_1.weight": (C,), h + "ln_1.bias": (C,),
            h + "attn.c_attn.weight": (C, 3 * C), h + "attn.c_attn.bias": (3 * C,),
            h + "attn.c_proj.weight": (C, C), h + "attn.c_proj.bias": (C,),
            h + "ln_2.weight": (C,), h + "ln_2.bias": (C,),
            h + "mlp.c_fc.weight": (C, 4 * C), h + "mlp.c_fc.bias": (4 * C,),
            h + "mlp.c_proj.weight": (4 * C, C), h + "mlp.c_proj.bias": (C,),
        })
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    return shapes


# per block: HF Conv1D name -> tinylora Linear name (weights transposed, biases as they are)
_CONV1D = {"attn.c_proj": "attn.o", "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
_SAME = ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")


def hf_to_tinylora(hf: dict, config) -> dict:
    """Rename and re-lay-out checked HF tensors (no prefix) into tinylora's state dict."""
    state = {"wte.weight": hf["wte.weight"], "wpe.weight": hf["wpe.weight"]}
    for i in range(config.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        for name in _SAME:
            state[b + name] = hf[h + name]
        w_qkv = np.split(hf[h + "attn.c_attn.weight"], 3, axis=1)  # 3 x (C, C), each (in, out)
        b_qkv = np.split(hf[h + "attn.c_attn.bias"], 3)  # 3 x (C,)
        for name, w, bias in zip(_FUSED, w_qkv, b_qkv):
            state[b + f"attn.{name}.weight"] = w.T  # (out, in)
            state[b + f"attn.{name}.bias"] = bias
        for hf_name, name in _CONV1D.items():
            state[b + name + ".weight"] = hf[h + hf_name + ".weight"].T  # (in, out) -> (out, in)
            state[b + name + ".bias"] = hf[h + hf_name + ".bias"]
    state.update({"ln_f.weight": hf["ln_f.weight"], "ln_f.bias": hf["ln_f.bias"]})
    return state


def tinylora_to_hf(state: dict, config) -> dict:
    """The inverse of `hf_to_tinylora`: a plain tinylora state dict -> HF names (with `transformer.`)."""
    hf = {"wte.weight": state["wte.weight"], "wpe.weight": state["wpe.weight"]}
    for i in range(config.n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        for name in _SAME:
            hf[h + name] = state[b + name]
        hf[h + "attn.c_attn.weight"] = np.concatenate([state[b + f"attn.{n}.weight"].T for n in _FUSED], axis=1)
        hf[h + "attn.c_attn.bias"] = np.concatenate([state[b + f"attn.{n}.bias"] for n in _FUSED])
        for hf_name, name in _CONV1D.items():
            hf[h + hf_name + ".weight"] = state[b + name + ".weight"].T  # (out, in) -> (in, out)
            hf[h + hf_name + ".bias"] = state[b + name + ".bias"]
    hf.update({"ln_f.weight": state["ln_f.weight"], "ln_f.bias": state["ln_f.bias"]})
    return {_PREFIX + k: v for k, v in hf.items()}


def check_hf_tensors(tensors: dict, config, source: str = "the checkpoint") -> dict:
    """Strip the `transformer.` prefix, drop mask buffers and a tied lm_head, and check every name and shape.

    Returns {HF name (no prefix): array}. Raises KeyError for a missing
    tensor, ValueError for a wrong shape, an untied lm_head or unknown names.
    """
    hf = {}
    for key, value in tensors.items():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if name.endswith(_MASK_BUFFERS):
            continue
        hf[name] = value
    lm_head = hf.pop("lm_head.weight", None)
    expected = expected_hf_shapes(config)
    missing = [k for k in expected if k not in hf]
    if missing:
        raise KeyError(f"{source} lacks {len(missing)} GPT-2 tensor(s), first: {missing[:5]}")
    unknown = [k for k in hf if k not in expected]
    if unknown:
        raise ValueError(f"{source} has tensors a GPT-2 of this config does not have: {unknown[:5]}")
    for name, shape in expected.items():
        if tuple(hf[name].shape) != shape:
            raise ValueError(f"{source}: tensor '{name}' has shape {tuple(hf[name].shape)}, but config.json "
                             f"(n_embd={config.n_embd}, vocab_size={config.vocab_size}, "
                             f"n_positions={config.block_size}) needs {shape}")
    if lm_head is not None and not (lm_head.shape == hf["wte.weight"].shape and np.array_equal(lm_head, hf["wte.weight"])):
        raise ValueError(f"{source}: lm_head.weight differs from wte.weight, but tinylora's GPT ties the "
                         "LM head to the token embedding and cannot hold a separate one")
    return hf


def _as_float(hf: dict, dtype, source: str) -> dict:
    """Upcast float16/bfloat16 (bfloat16 arrives as float32 already) to float32, or cast to `dtype`."""
    target = np.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    if target.kind != "f" or target.itemsize < 4:
        raise ValueError(f"load_gpt2: dtype must be float32 or float64, got {target}")
    out = {}
    for name, value in hf.items():
        if value.dtype.kind != "f":
            raise ValueError(f"{source}: tensor '{name}' has dtype {value.dtype}; GPT-2 weights must be floating point")
        out[name] = value.astype(target, copy=False)
    return out


# ------------------------------------------------------------------ files
def _read_hf_weights(path: str) -> tuple[dict, str]:
    """All tensors of an HF model directory (one safetensors file, or shards listed in an index)."""
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(single):
        return load_tensors(single), single
    if os.path.exists(index):
        tensors = {}
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            tensors.update(load_tensors(os.path.join(path, shard)))
        return tensors, index
    if os.path.exists(os.path.join(path, "pytorch_model.bin")):
        raise FileNotFoundError(f"{path} holds pytorch_model.bin but no model.safetensors: tinylora reads "
                                "safetensors only (convert with transformers: model.save_pretrained(dir))")
    raise FileNotFoundError(f"{path} has no model.safetensors (files there: {sorted(os.listdir(path))})")


def _require_dir(path) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        what = "is a file, not a directory" if os.path.exists(path) else "does not exist"
        raise FileNotFoundError(f"Hugging Face model directory {path} {what}")
    return path


def load_gpt2(path, dtype=None, device=None):
    """Build a tinylora GPT from a local HF GPT-2 directory (config.json + model.safetensors).

    dtype: float32 (default) or float64; float16/bfloat16 files are upcast.
    The LM head is tied to wte, as in GPT-2: logits = x @ wte.weight.T.
    """
    from tinylora.model.gpt import GPT

    path = _require_dir(path)
    config = config_from_hf(read_json(os.path.join(path, "config.json")))
    tensors, source = _read_hf_weights(path)
    hf = _as_float(check_hf_tensors(tensors, config, source), dtype, source)
    model = GPT(config, device=device, dtype=dtype)
    model.load_state_dict(hf_to_tinylora(hf, config))
    return model


def _plain_state_dict(model) -> dict:
    """The model's weights under plain GPT names, LoRA layers resolved to their base Linear.

    A LoRA layer is allowed only if its update is merged into the base weight
    (`merge_lora`) or switched off (`disable_lora`): otherwise the file would
    silently drop ΔW = BA.
    """
    from tinylora.engine.backend import to_host

    state = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and not (getattr(module, "merged", False) or not getattr(module, "enabled", True)):
            raise ValueError(f"save_gpt2: LoRA layer '{name}' is not merged; call merge_lora(model) first "
                             "(or save the adapter alone with save_adapter)")
    for name, p in model.named_parameters():
        if name.endswith(("lora_A", "lora_B")):
            continue
        state[name.replace(".base.", ".")] = to_host(p.data)
    return state


def save_gpt2(model, path) -> None:
    """Write `model` as an HF GPT-2 directory that `GPT2LMHeadModel.from_pretrained(path)` loads."""
    path = os.fspath(path)
    state = _plain_state_dict(model)
    save_tensors(os.path.join(path, "model.safetensors"), tinylora_to_hf(state, model.config), metadata={"format": "pt"})
    write_json_atomic(os.path.join(path, "config.json"), config_to_hf(model.config))
