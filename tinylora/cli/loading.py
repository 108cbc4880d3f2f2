"""What `generate`, `merge` and `evaluate` share: a model folder plus the adapter given with --adapter."""

from __future__ import annotations

import os


def load_any_adapter(model, path, force: bool = False):
    """A plain LoRA adapter (save_adapter; `force` skips its base-weights check) or a LoRA-family one
    (finetune --method dora, ...)."""
    from tinylora.io import read_json
    from tinylora.lora import load_adapter
    from tinylora.methods.choose import FORMAT, load_method_adapter

    config = read_json(os.path.join(path, "adapter_config.json"))
    if config.get("format") == FORMAT:
        return load_method_adapter(model, path)
    return load_adapter(model, path, force=force)



def is_method_folder(path) -> bool:
    """Is `path` a baseline's method folder (method_config.json) rather than a LoRA adapter?"""
    from tinylora.methods.method_io import CONFIG_FILE

    return bool(path) and os.path.exists(os.path.join(path, CONFIG_FILE))


def load_with_adapter(model_path, adapter, device=None, force=False):
    """(model, tokenizer): a model folder plus, optionally, an adapter (LoRA or a LoRA-family method) or a
    baseline's method folder."""
    from tinylora.methods import load_method
    from tinylora.model.load import load_model

    if is_method_folder(adapter):
        model, tokenizer = load_model(model_path or "base-mini", device=device)
        load_method(model, adapter)
    else:
        model, tokenizer = load_model(base_of(adapter, model_path), device=device)
        if adapter:
            load_any_adapter(model, adapter, force=force)
    return model, tokenizer


def adapter_folder(path) -> str:
    """--adapter's folder; a finetune run folder is answered with the adapter folder inside it."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "adapter_config.json")):
        if os.path.exists(os.path.join(path, "adapter", "adapter_config.json")):
            raise FileNotFoundError(f"--adapter {path} is a run folder, not an adapter: "
                                    f"did you mean --adapter {os.path.join(path, 'adapter')}?")
        if os.path.exists(os.path.join(path, "model", "config.json")):
            raise FileNotFoundError(f"--adapter {path} is a full fine-tuning run: its result is a model, "
                                    f"use --model {os.path.join(path, 'model')}")
    return path



def base_of(adapter, given):
    """The base model to load: --base/--model as given, else the one the adapter records, else base-mini."""
    if given is not None:
        return given
    if adapter:
        from tinylora.lora.adapter_io import read_adapter_config

        recorded = read_adapter_config(adapter).get("base")
        if isinstance(recorded, dict) and isinstance(recorded.get("name"), str):
            return recorded["name"]
    return "base-mini"

