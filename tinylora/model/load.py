"""Model folders: a GPT, its config and its tokenizer in one directory.

tinylora's own folder (what `tinylora pretrain`, `finetune --method full` and
`merge` write):

    config.json         {"format": "tinylora-gpt", "gpt": {GPTConfig fields}, "tokenizer": "byte" | "bpe", ...}
    model.safetensors   every parameter by name (the tied embedding once)
    vocab.json, merges.txt   only for a BPE tokenizer

`load_model` also reads a Hugging Face GPT-2 folder (config.json with
"model_type": "gpt2" + model.safetensors, and vocab.json + merges.txt for its
tokenizer) through tinylora.model.hf_gpt2, and the base model shipped inside the package
("base-mini", see tinylora/assets/README.md).
"""

from __future__ import annotations

import dataclasses
import os

from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.tokenizers import BPETokenizer, ByteTokenizer

FORMAT = "tinylora-gpt"
ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
SHIPPED = {"base-mini": os.path.join(ASSETS, "base-mini")}


def resolve(path) -> str:
    """A shipped model's name ("base-mini") becomes its folder; anything else is taken as a path."""
    return SHIPPED.get(str(path), os.fspath(path))


def save_model(model, path, tokenizer=None, extra: dict | None = None) -> None:
    """Write `model` (a GPT, LoRA merged away or never applied) and its tokenizer to folder `path`."""
    from tinylora.lora import lora_layers

    if any(True for _ in lora_layers(model)):
        raise ValueError("save_model: the model still has LoRA layers; merge them first "
                         "(tinylora.lora.merge_and_unload) or save the adapter with save_adapter")
    os.makedirs(path, exist_ok=True)
    kind = "byte"
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(path)
        kind = "bpe"
    save_tensors(os.path.join(path, "model.safetensors"), model.state_dict())
    config = {"format": FORMAT, "gpt": dataclasses.asdict(model.config), "tokenizer": kind}
    config.update(extra or {})
    write_json_atomic(os.path.join(path, "config.json"), config)


def load_model(path, device=None, dtype=None):
    """(model, tokenizer) from a tinylora folder, a Hugging Face GPT-2 folder, or a shipped name."""
    from tinylora.model.gpt import GPT, GPTConfig

    path = resolve(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no model folder at {path} (expected config.json + model.safetensors)")
    config = read_json(os.path.join(path, "config.json"))
    if config.get("format") != FORMAT:  # a Hugging Face GPT-2 folder
        from tinylora.model.hf_gpt2 import load_gpt2

        model = load_gpt2(path, dtype=dtype, device=device)
        has_bpe = os.path.exists(os.path.join(path, "vocab.json"))
        return model, (BPETokenizer.from_directory(path) if has_bpe else ByteTokenizer())
    model = GPT(GPTConfig(**config["gpt"]), device=device)
    state = load_tensors(os.path.join(path, "model.safetensors"))
    model.load_state_dict(state, strict=True)
    if dtype is not None:
        model.to(dtype=dtype)
    tokenizer = BPETokenizer.from_directory(path) if config.get("tokenizer") == "bpe" else ByteTokenizer()
    return model, tokenizer


def model_info(path) -> dict:
    """config.json of a model folder (shipped names allowed)."""
    return read_json(os.path.join(resolve(path), "config.json"))
