"""`tinylora info`: parameter counts, with or without LoRA, or what an adapter folder holds."""

from __future__ import annotations

import math
import os

from tinylora.cli import flags


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="parameter counts, with or without LoRA",
                       description="Count a model's parameters, and what LoRA of rank r on the chosen targets "
                                   "would train.")
    p.add_argument("--model", default="base-mini", help="model folder, a shipped base (base-mini, base-mini-384), or a preset such as gpt2")
    p.add_argument("--rank", type=flags.POSITIVE_INT, default=None, help="also count LoRA of this rank (default: none)")
    p.add_argument("--targets", type=flags.targets, default="q,v", help="comma list of q,k,v,o,fc,proj")
    p.add_argument("--detail", action="store_true", help="one row per module (builds a preset's model)")
    p.add_argument("--adapter", default=None, help="describe this adapter folder instead (its settings, size, base)")


def describe_adapter(path) -> str:
    """One line about an adapter folder of any method: what it is, its size, its base."""
    from tinylora.cli.loading import adapter_folder
    from tinylora.io import tensor_shapes
    from tinylora.lora.adapter_io import TENSOR_FILE, read_adapter_config
    from tinylora.methods.files import FORMAT, read_method_config

    path = adapter_folder(path)
    config = read_adapter_config(path)
    shapes = tensor_shapes(os.path.join(path, TENSOR_FILE))
    size = sum(math.prod(shape) for _, shape in shapes.values())
    if isinstance(config, dict) and config.get("format") == FORMAT:  # any method but plain LoRA
        config = read_method_config(path)
        settings = ", ".join(f"{k}={v}" for k, v in config["settings"].items()) or "no settings"
        what = f"{config['method']} ({settings})"
    elif isinstance(config, dict) and isinstance(config.get("modules"), dict):
        layers = "all blocks" if config.get("layers") is None else f"blocks {config['layers']}"
        rslora = {m.get("rslora", False) for m in config["modules"].values() if isinstance(m, dict)}
        what = (f"{'rsLoRA' if rslora == {True} else 'LoRA'} r={config.get('r')}, alpha={config.get('alpha')} on "
                f"{','.join(map(str, config.get('targets') or []))} of {layers} ({len(config['modules'])} adapted matrices), "
                f"bias {config.get('bias')}")
        if isinstance(config.get("quantization"), dict):
            what += f", trained on the base quantized to {config['quantization'].get('method')} (QLoRA)"
    else:
        raise ValueError(f"{path}: adapter_config.json is neither a tinylora LoRA adapter nor a method adapter")
    base = config.get("base") if isinstance(config.get("base"), dict) else {}
    digest = base.get("weights_sha256") or "not recorded"
    return (f"adapter {path}: {what}; {size:,} parameters in {len(shapes)} tensors; base "
            f"{base.get('name')!r} (weights sha256 {digest[:16]})")


def run(args) -> None:
    from tinylora.lora import apply_lora, parameter_report
    from tinylora.lora.apply import count_line, lora_parameter_count
    from tinylora.model.gpt import GPT, GPTConfig
    from tinylora.model.load import SHIPPED, load_model

    if args.adapter:
        from tinylora.cli.loading import load_with_adapter

        print(describe_adapter(args.adapter))
        # then the checks every command makes before using it (base, declared tensors, finite values):
        # an adapter that generate would refuse is refused here too, in one line
        load_with_adapter(args.model if args.model != "base-mini" else None, args.adapter)
        return
    if args.model in SHIPPED or os.path.isdir(args.model):
        model, _ = load_model(args.model)
    else:
        try:
            config = GPTConfig.from_preset(args.model)
        except ValueError as err:
            raise FileNotFoundError(f"--model {args.model} is not a model folder, nor a preset: {err}") from None
        if not args.detail:  # counted from the sizes: no need to build (and randomly initialise) the model
            total = config.num_parameters()
            lora = lora_parameter_count(config, args.rank, args.targets) if args.rank else 0
            print(count_line(lora, total + lora, lora) if args.rank else count_line(total, total, 0))
            return
        model = GPT(config)
    if args.rank:
        apply_lora(model, r=args.rank, targets=args.targets)
    report = parameter_report(model)
    print(report["text"] if args.detail else report["text"].splitlines()[-1])

