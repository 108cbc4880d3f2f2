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

This is the Hugging Face format module: it depends on gpt.py, never the reverse.
To load a model, use `tinylora.model.load.load_model` (any folder, with its
tokenizer); `load_gpt2` is the part of it that reads this format. Before any
weight is read or any model is built, config.json is validated and every tensor
name and shape in the safetensors header is checked against it.
"""

from __future__ import annotations

import os

import math

import numpy as np

from tinylora.errors import MissingNameError
from tinylora.io import FileFormatError, load_tensors, read_json, save_tensors, tensor_shapes, write_json_atomic
from tinylora.model.gpt import GPT, GPTConfig

_PREFIX = "transformer."
_MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not weights
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # the tanh approximation tinylora's GELU uses
_FUSED = ("q", "k", "v")  # order of the column blocks of c_attn


# ------------------------------------------------------------------ config
def _rate(hf: dict, key: str, source: str) -> float:
    value = hf.get(key, 0.1)  # 0.1: GPT2Config's default for each of the three
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{source}: '{key}' must be a number in [0, 1), got {value!r}")
    return float(value)


def config_from_hf(hf: dict, source: str = "config.json") -> GPTConfig:
    """Map the fields of an HF GPT-2 `config.json` onto a GPTConfig; refuse variants tinylora cannot run."""
    if not isinstance(hf, dict):
        raise FileFormatError(f"{source}: expected a JSON object of GPT-2 settings, got a {type(hf).__name__}")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{source}: model_type is '{hf['model_type']}', but tinylora reads GPT-2 only")
    missing = [k for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions") if k not in hf]
    if missing:
        raise MissingNameError(f"{source} lacks the GPT-2 fields {missing}")
    C = hf["n_embd"]
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") not in _TANH_GELUS,
        "n_inner": hf.get("n_inner") not in (None, 4 * C) if isinstance(C, int) else False,
        "scale_attn_weights": hf.get("scale_attn_weights", True) is not True,
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
        "add_cross_attention": hf.get("add_cross_attention", False),
    }
    bad = {k: hf.get(k) for k, is_bad in unsupported.items() if is_bad}
    if bad:
        raise ValueError(f"{source}: tinylora's GPT cannot run this GPT-2 variant: {bad}")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"{source}: 'layer_norm_epsilon' must be a positive number, got {eps!r}")
    resid = _rate(hf, "resid_pdrop", source)
    embd, attn = _rate(hf, "embd_pdrop", source), _rate(hf, "attn_pdrop", source)
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf["n_positions"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=C,
            dropout=resid,
            bias=True,  # HF's GPT-2 always has biases
            layer_norm_eps=eps,
            embd_dropout=None if embd == resid else embd,  # None: the same as dropout
            attn_dropout=None if attn == resid else attn,
        )
    except ValueError as err:
        raise ValueError(f"{source}: {err} (HF names: n_positions is block_size)") from None


def config_to_hf(config: GPTConfig) -> dict:
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
        "resid_pdrop": config.rate("resid"),
        "embd_pdrop": config.rate("embd"),
        "attn_pdrop": config.rate("attn"),
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


def _strip(key: str) -> str:
    return key[len(_PREFIX):] if key.startswith(_PREFIX) else key


def check_hf_shapes(shapes: dict, config, source: str = "the checkpoint") -> None:
    """Check {file name: shape} (from the safetensors header) against the config before anything is read.

    Accepts the `transformer.` prefix or none, skips mask buffers, allows an
    lm_head.weight of wte's shape (tied: its values are compared after reading).
    Raises KeyError for a missing tensor, ValueError for a wrong shape or unknown names.
    """
    hf = {_strip(k): tuple(shape) for k, shape in shapes.items() if not _strip(k).endswith(_MASK_BUFFERS)}
    lm_head = hf.pop("lm_head.weight", None)
    expected = expected_hf_shapes(config)
    missing = [k for k in expected if k not in hf]
    if missing:
        raise MissingNameError(f"{source} lacks {len(missing)} GPT-2 tensor(s), first: {missing[:5]}")
    unknown = [k for k in hf if k not in expected]
    if unknown:
        raise ValueError(f"{source} has tensors a GPT-2 of this config does not have: {unknown[:5]}")
    for name, shape in expected.items():
        if hf[name] != shape:
            raise ValueError(f"{source}: tensor '{name}' has shape {hf[name]}, but config.json "
                             f"(n_embd={config.n_embd}, vocab_size={config.vocab_size}, "
                             f"n_positions={config.block_size}, n_layer={config.n_layer}) needs {shape}")
    if lm_head is not None and lm_head != expected["wte.weight"]:
        raise ValueError(f"{source}: lm_head.weight has shape {lm_head}, not wte's {expected['wte.weight']}; "
                         "tinylora's GPT ties the LM head to the token embedding")


def check_hf_tensors(tensors: dict, config, source: str = "the checkpoint") -> dict:
    """Check names and shapes (`check_hf_shapes`) and a tied lm_head; return {HF name (no prefix): array}."""
    check_hf_shapes({k: v.shape for k, v in tensors.items()}, config, source)
    hf = {_strip(k): v for k, v in tensors.items() if not _strip(k).endswith(_MASK_BUFFERS)}
    lm_head = hf.pop("lm_head.weight", None)
    if lm_head is not None and not np.array_equal(lm_head, hf["wte.weight"]):
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
def _inside(folder: str, name, source: str) -> str:
    """folder/name, refusing a name that is not a string or that leads out of `folder` (absolute, .., a link)."""
    if not isinstance(name, str) or not name:
        raise FileFormatError(f"{source}: a file name must be a non-empty string, got {name!r}")
    path = os.path.join(folder, name)
    root = os.path.realpath(folder)
    if os.path.isabs(name) or os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise FileFormatError(f"{source}: '{name}' points outside {folder}; a file it names must lie inside it")
    return path


def _weight_files(path: str) -> tuple[list, str]:
    """([safetensors files], source) of an HF model directory: one file, or the shards an index lists."""
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(single):
        return [single], single
    if os.path.exists(index):
        weight_map = read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise FileFormatError(f"{index}: expected an object with a non-empty 'weight_map' "
                                  "{tensor name: shard file}")
        files = []
        for shard in weight_map.values():
            file = _inside(path, shard, index)
            if file not in files:
                files.append(file)
        return files, index
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


def load_gpt2(path, dtype=None, device=None) -> GPT:
    """Build a tinylora GPT (eval mode) from a local HF GPT-2 directory (config.json + model.safetensors).

    dtype: float32 (default) or float64; float16/bfloat16 files are upcast.
    The LM head is tied to wte, as in GPT-2: logits = x @ wte.weight.T.
    Checks before it allocates: config.json's fields, then every name and shape
    in the safetensors header(s), then reads the weights, then builds the model.
    """
    path = _require_dir(path)
    config_path = os.path.join(path, "config.json")
    config = config_from_hf(read_json(config_path), config_path)
    files, source = _weight_files(path)
    shapes = {}
    for file in files:
        shapes.update({name: shape for name, (_, shape) in tensor_shapes(file).items()})
    check_hf_shapes(shapes, config, source)
    tensors = {}
    for file in files:
        tensors.update(load_tensors(file))
    hf = _as_float(check_hf_tensors(tensors, config, source), dtype, source)
    model = GPT(config, device=device, dtype=dtype)
    model.load_state_dict(hf_to_tinylora(hf, config))
    return model.eval()


def to_hf_state_dict(model) -> dict:
    """`model`'s weights as Hugging Face GPT-2 names and layouts, in memory: {"transformer.h.0...": array}.

    What `GPT2LMHeadModel.load_state_dict` takes (after torch.from_numpy). A
    model with LoRA must have it merged (`merge_lora`) or switched off
    (`disable_lora`): otherwise the dict would silently drop ΔW = BA.
    """
    from tinylora.engine.backend import to_host
    from tinylora.lora.apply import base_named_parameters, lora_layers  # LoRA is asked by type, in lora/

    for name, layer in lora_layers(model):
        if layer.enabled and not layer.merged:
            raise ValueError(f"save_gpt2: LoRA layer '{name}' is not merged; call merge_lora(model) first "
                             "(or save the adapter alone with save_adapter)")
    state = {name: to_host(p.data) for name, p in base_named_parameters(model)}
    return tinylora_to_hf(state, model.config)


def save_gpt2(model, path, tokenizer=None) -> None:
    """Write `model` as an HF GPT-2 directory that `GPT2LMHeadModel.from_pretrained(path)` loads.

    With a BPE tokenizer, its vocab.json and merges.txt are written too; with the
    byte tokenizer, config.json says so ("tinylora_tokenizer": "byte", a key
    transformers ignores), so `load_model` reads the folder back with its tokenizer.
    """
    from tinylora.tokenizers import BPETokenizer, ByteTokenizer

    path = os.fspath(path)
    hf_config = config_to_hf(model.config)
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(path)
    elif isinstance(tokenizer, ByteTokenizer):
        hf_config["tinylora_tokenizer"] = "byte"
    elif tokenizer is not None:
        raise TypeError(f"save_gpt2: tokenizer must be a BPETokenizer, a ByteTokenizer or None, "
                        f"got {type(tokenizer).__name__}")
    save_tensors(os.path.join(path, "model.safetensors"), to_hf_state_dict(model), metadata={"format": "pt"})
    write_json_atomic(os.path.join(path, "config.json"), hf_config)
