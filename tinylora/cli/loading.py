"""What `generate`, `merge`, `evaluate` and `info` share: a base model plus the adapter given with --adapter.

Every adapter loads through `tinylora.methods.load_any_adapter` (a LoRA adapter, or a method adapter of
any other method of tinylora/methods/table.py), with the same checks: the base's weights hash (refused
unless --force), declared tensors only, finite values, shapes. A QLoRA adapter records how its base was
quantized; the base is loaded in float, checked, then quantized the same way before the adapter goes on.
"""

from __future__ import annotations

import os


def load_with_adapter(model_path, adapter, device=None, force=False):
    """(model, tokenizer): the base (--model, else the one the adapter records, else base-mini), plus the adapter."""
    from tinylora.model.load import load_model

    model, tokenizer = load_model(base_of(adapter, model_path), device=device)
    if adapter:
        load_adapter_onto(model, adapter, force=force)
    return model, tokenizer


def load_adapter_onto(model, adapter, force=False):
    """Put the adapter folder `adapter` on `model` (a plain base): quantize first for a QLoRA adapter."""
    from tinylora.lora.adapter_io import read_adapter_config
    from tinylora.methods import load_any_adapter
    from tinylora.methods.qlora import quantize_model

    config = read_adapter_config(adapter)
    if not isinstance(config, dict):
        raise ValueError(f"{adapter}: adapter_config.json holds a {type(config).__name__}, not an object")
    quantization = config.get("quantization")
    if isinstance(quantization, dict):  # QLoRA: the adapter trained against this NF4 copy of the base
        settings = {k: v for k, v in quantization.items() if k in ("method", "double_quant", "block_size",
                                                                   "compute_dtype", "dq_block_size", "targets")}
        settings["targets"] = tuple(settings.get("targets", ()))
        quantize_model(model, **settings)
    return load_any_adapter(model, adapter, force=force)


def method_of(adapter) -> str:
    """The method name an adapter folder records ("lora" for a LoRA adapter)."""
    from tinylora.lora.adapter_io import read_adapter_config
    from tinylora.methods.files import FORMAT

    config = read_adapter_config(adapter)
    if isinstance(config, dict) and config.get("format") == FORMAT:
        return config.get("method")
    return "lora"


def adapter_folder(path) -> str:
    """--adapter's folder; a finetune run folder is answered with the adapter folder inside it."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "adapter_config.json")):
        for inner in ("adapter", "method"):
            if os.path.exists(os.path.join(path, inner, "adapter_config.json")):
                raise FileNotFoundError(f"--adapter {path} is a run folder, not an adapter: "
                                        f"did you mean --adapter {os.path.join(path, inner)}?")
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

        config = read_adapter_config(adapter)
        recorded = config.get("base") if isinstance(config, dict) else None
        if isinstance(recorded, dict) and isinstance(recorded.get("name"), str):
            return recorded["name"]
    return "base-mini"
