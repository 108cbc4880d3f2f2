"""The one way to load a model: `load_model(path_or_name)` -> (GPT in eval mode, tokenizer).

It reads three kinds of source:

    a tinylora folder    config.json  {"format": "tinylora-gpt", "gpt": {GPTConfig fields},
                                       "tokenizer": "byte" | "bpe", ...}
                         model.safetensors   every parameter by name (the tied embedding once)
                         vocab.json, merges.txt   only for a BPE tokenizer
                         (what `tinylora pretrain`, `finetune --method full` and `merge` write)
    a Hugging Face GPT-2 folder   config.json ("model_type": "gpt2") + model.safetensors
                         (or shards and model.safetensors.index.json), read by hf_gpt2.py, with
                         vocab.json + merges.txt for its tokenizer
    a shipped name       "base-mini" (see tinylora/assets/README.md); "./base-mini" is a folder, and a bare
                         shipped name that is also a folder here is refused (`resolve`)

Every path is local: tinylora never downloads, so "gpt2" is a folder called
gpt2, not a Hugging Face hub id. Before anything is allocated, config.json is
validated field by field and every tensor's name and shape in the safetensors
header is checked against it. The tokenizer comes from the folder and never
silently: an unknown tokenizer name, a Hugging Face folder without its
vocab.json and merges.txt, or a tokenizer with more ids than the model has
rows in wte is an error. `model.name_or_path` records what was loaded (an
adapter saved from the model records it as its base).
"""

from __future__ import annotations

import dataclasses
import errno
import os

import numpy as np

from tinylora.errors import MissingNameError
from tinylora.io import (FileFormatError, load_tensors, read_json, save_tensors, tensor_shapes, write_folder_atomic,
                         write_json_atomic)
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.model.hf_gpt2 import load_gpt2
from tinylora.tokenizers import BPETokenizer, ByteTokenizer, load_tokenizer

FORMAT = "tinylora-gpt"
ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
SHIPPED = {name: os.path.join(ASSETS, name) for name in ("base-mini", "base-mini-384")}  # tinylora/assets/README.md
TOKENIZERS = ("byte", "bpe")  # the values of config.json's "tokenizer"
_FLOAT_CODES = ("F64", "F32", "F16", "BF16")


def resolve(path) -> str:
    """A shipped model's name ("base-mini") becomes its folder; anything else is taken as a path.

    A path with a separator ("./base-mini") is always a folder. A bare shipped name that is also a folder
    in the current directory is refused rather than silently taken as either.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a model is a folder path (str or os.PathLike) or a shipped name "
                        f"({', '.join(SHIPPED)}); got {type(path).__name__} {path!r}")
    name = str(path)
    if name not in SHIPPED:
        return os.fspath(path)
    if os.path.isdir(name) and os.path.realpath(name) != os.path.realpath(SHIPPED[name]):
        raise ValueError(f"'{name}' is both the shipped base and the folder ./{name} here: write ./{name} for "
                         f"the folder, or rename that folder to use the shipped base")
    return SHIPPED[name]


MODEL_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")  # what save_model writes


def save_model(model, path, tokenizer=None, extra: dict | None = None) -> None:
    """Write `model` (a GPT, LoRA merged away or never applied) and its tokenizer to folder `path`.

    The folder is written whole and replaces an earlier one in one rename (tinylora.io.write_folder_atomic),
    so a kill leaves the old model or the new one, never new weights beside an old config.json. What
    else the folder holds (pretrain's run/) is carried into the new folder as hard links, so nothing
    is copied and nothing is lost; where the file system has no hard links, the model's files are
    written one by one instead, beside the rest.
    """
    from tinylora.lora import lora_layers

    if any(True for _ in lora_layers(model)):
        raise ValueError("save_model: the model still has LoRA layers; merge them first "
                         "(tinylora.lora.merge_and_unload) or save the adapter with save_adapter")

    def write(folder):
        kind = "byte"
        if isinstance(tokenizer, BPETokenizer):
            tokenizer.save(folder)
            kind = "bpe"
        save_tensors(os.path.join(folder, "model.safetensors"), model.state_dict())
        config = {"format": FORMAT, "gpt": dataclasses.asdict(model.config), "tokenizer": kind}
        config.update(extra or {})
        write_json_atomic(os.path.join(folder, "config.json"), config)

    others = other_entries(path)

    def write_beside_others(folder):
        for name in others:
            _link_tree(os.path.join(path, name), os.path.join(folder, name))
        write(folder)

    try:
        write_folder_atomic(path, write_beside_others)
    except OSError as err:
        if not others or err.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
            raise
        write(os.fspath(path))  # no hard links here: the model's files one by one, the rest untouched


def _link_tree(source: str, target: str) -> None:
    """Recreate `source` (a file, a link or a folder) at `target` with hard links to its files."""
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
    elif os.path.isdir(source):
        os.mkdir(target)
        for name in os.listdir(source):
            _link_tree(os.path.join(source, name), os.path.join(target, name))
    else:
        os.link(source, target)


def other_entries(path) -> list:
    """The names in folder `path` that save_model does not write (hidden ones, such as leftover temporary
    files, are not counted and not carried over)."""
    if not os.path.isdir(path):
        return []
    return sorted(n for n in os.listdir(path) if n not in MODEL_FILES and not n.startswith("."))


def _not_a_model_folder(path, folder: str) -> Exception:
    """The error for a path that is not a model folder, saying what it is instead."""
    text = str(path)
    if os.path.isfile(folder):
        return FileNotFoundError(f"{text} is a file; a model is a folder holding config.json + model.safetensors")
    if os.path.exists(os.path.join(folder, "adapter_config.json")):
        return FileNotFoundError(f"{text} is an adapter folder (adapter_config.json), not a model: load its base "
                                 "model, then the adapter (load_adapter; on the command line --adapter)")
    if os.path.isdir(folder):
        return FileNotFoundError(f"{text} has no config.json, so it is not a model folder "
                                 f"(files there: {sorted(os.listdir(folder))[:8]})")
    hint = ""
    if not os.path.isabs(text) and text.count("/") <= 1 and not text.startswith("."):
        hint = (f"; tinylora reads local folders only and never downloads, so '{text}' is a path here, not a "
                f"Hugging Face hub id: download it first (e.g. huggingface-cli download {text} --local-dir "
                f"{text.split('/')[-1]}) and pass that folder")
    return FileNotFoundError(f"no model folder at {text}{hint} (shipped models: {', '.join(SHIPPED)})")


def _tinylora_config(config: dict, source: str) -> GPTConfig:
    """The "gpt" object of a tinylora config.json as a GPTConfig, every field checked."""
    gpt = config.get("gpt")
    if not isinstance(gpt, dict):
        raise FileFormatError(f"{source}: 'gpt' must be an object of GPTConfig fields, got {type(gpt).__name__}")
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = sorted(set(gpt) - fields)
    if unknown:
        raise FileFormatError(f"{source}: 'gpt' has unknown field(s) {unknown}; GPTConfig's fields are {sorted(fields)}")
    try:
        return GPTConfig(**gpt)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _check_weights(path: str, expected: dict) -> None:
    """Compare the safetensors header of `path` with {name: shape}, before any tensor is read."""
    found = tensor_shapes(path)
    missing = [k for k in expected if k not in found]
    unknown = [k for k in found if k not in expected]
    if missing or unknown:
        raise MissingNameError(f"{path} does not match config.json: missing {missing[:5]}, unexpected {unknown[:5]}")
    for name, shape in expected.items():
        code, shape_in_file = found[name]
        if shape_in_file != shape:
            raise ValueError(f"{path}: tensor '{name}' has shape {shape_in_file}, but config.json needs {shape}")
        if code not in _FLOAT_CODES:
            raise ValueError(f"{path}: tensor '{name}' has dtype {code}; weights must be floating point")


def _load_tinylora(folder: str, config: dict, source: str, device, dtype) -> GPT:
    gpt_config = _tinylora_config(config, source)
    weights = os.path.join(folder, "model.safetensors")
    _check_weights(weights, gpt_config.parameter_shapes())  # before the model is built
    state = load_tensors(weights)
    model = GPT(gpt_config, device=device)
    model.load_state_dict(state, strict=True)
    if dtype is not None:
        model.to(dtype=dtype)
    return model


def _folder_tokenizer(folder: str, config: dict, source: str, is_hf: bool):
    """The tokenizer a model folder names: never a silent guess."""
    has = {name: os.path.exists(os.path.join(folder, name)) for name in ("vocab.json", "merges.txt")}
    if not is_hf:
        kind = config.get("tokenizer", "byte")
        if kind not in TOKENIZERS:
            raise ValueError(f"{source}: unknown tokenizer {kind!r}; expected one of {TOKENIZERS}")
        return BPETokenizer.from_directory(folder) if kind == "bpe" else ByteTokenizer()
    if all(has.values()):
        return BPETokenizer.from_directory(folder)
    if config.get("tinylora_tokenizer") == "byte" and not any(has.values()):
        return ByteTokenizer()  # written by save_gpt2 for a byte-level model
    lacking = " and ".join(name for name, there in has.items() if not there)
    raise FileNotFoundError(f"{folder} is a Hugging Face GPT-2 folder without {lacking}, so its tokenizer is "
                            "unknown: copy the files from where the model came from, or pass tokenizer= "
                            "(a folder holding them, or 'byte')")


def _read_config(path) -> tuple[str, dict, str]:
    """(folder, config.json as a dict, its path) of a model folder or shipped name, with clear errors."""
    folder = resolve(path)
    source = os.path.join(folder, "config.json")
    if not os.path.isdir(folder) or not os.path.exists(source):
        raise _not_a_model_folder(path, folder)
    config = read_json(source)
    if not isinstance(config, dict):
        raise FileFormatError(f"{source}: expected a JSON object, got a {type(config).__name__}")
    if "format" in config and config["format"] != FORMAT:
        raise FileFormatError(f"{source}: format is {config['format']!r}, but a model folder has {FORMAT!r} "
                              "(or no format: a Hugging Face GPT-2 folder)")
    return folder, config, source


def load_gpt(path, device=None, dtype=None) -> GPT:
    """The model half of `load_model`: the GPT alone (eval mode), no tokenizer needed or read."""
    if dtype is not None and str(np.dtype(dtype)) not in ("float32", "float64"):
        raise ValueError(f"load_model: dtype must be float32 or float64, got {np.dtype(dtype)}")
    folder, config, source = _read_config(path)
    if "format" not in config:  # a Hugging Face GPT-2 folder
        model = load_gpt2(folder, dtype=dtype, device=device)
    else:
        model = _load_tinylora(folder, config, source, device, dtype)
    for name, p in model.named_parameters():  # a NaN weight would only show up as garbage text later
        bad = int((~p.device.xp.isfinite(p.data)).sum().item())
        if bad:
            raise ValueError(f"{folder}: weight '{name}' holds {bad} NaN or inf values of {p.size}; "
                             "the file is broken (was it saved after a diverged run?)")
    model.name_or_path = str(path)
    return model.eval()


def load_model(path, device=None, dtype=None, tokenizer=None):
    """(model, tokenizer) from a tinylora folder, a Hugging Face GPT-2 folder, or a shipped name.

    The model comes back in eval mode (dropout off), as Hugging Face's from_pretrained
    does; `model.train()` switches dropout on. `tokenizer` overrides the folder's
    ("byte", a folder with vocab.json + merges.txt, or a tokenizer object).
    dtype: float32 (what the files hold) or float64.
    """
    folder, config, source = _read_config(path)
    if tokenizer is not None:
        tokenizer = load_tokenizer(tokenizer)
    else:
        tokenizer = _folder_tokenizer(folder, config, source, is_hf="format" not in config)
    model = load_gpt(path, device=device, dtype=dtype)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"{source}: the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
                         f"{model.config.vocab_size}: ids from {model.config.vocab_size} on have no embedding")
    return model, tokenizer


def model_info(path) -> dict:
    """config.json of a model folder (shipped names allowed)."""
    return read_json(os.path.join(resolve(path), "config.json"))
