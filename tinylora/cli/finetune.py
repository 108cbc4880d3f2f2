"""`tinylora finetune`: LoRA, LoRA-FA, a LoRA-family method, full fine-tuning or one of the paper's baselines
(--method), optionally on an NF4-quantized base (--quantize, QLoRA)."""

from __future__ import annotations

import argparse
import os

from tinylora.cli import flags
from tinylora.methods.table import (  # every method: one row each
    METHOD_FLAGS,
    METHODS,
    method_row,
)

# a method flag's value when it is not given (each method reads only the flags of its row)
FLAG_DEFAULTS = {"rank": 4, "targets": ("q", "v"), "layers": None, "lora_dropout": 0.0, "rslora": False,
                 "loraplus_ratio": 16.0, "tinit": 0, "tfinal": 0, "delta_t": 1, "orth_reg_weight": 0.5,
                 "glora_config": None, "prefix_len": 8, "infix_len": 0, "adapter_dim": 8}
WHY_NOT = {"quantize": "; NF4 freezes the base weights in 4 bits, so they cannot be fine-tuned fully, and QLoRA "
                       "trains LoRA on them: use --method lora or lora-fa"}
QUANT_OPTIONS = ("double_quant", "quant_block_size", "compute_dtype")  # configure --quantize nf4, need it


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model with LoRA or fully",
                       description="Fine-tune a base model on a text file/folder (language modelling) or on "
                                   "prompt/completion pairs (.jsonl with prompt,completion or .csv with mr,ref). "
                                   "LoRA's default learning rate, 3e-2, is the best of a short sweep on the "
                                   "demo's task (README, 'Learning rates'). A flag of another method than the "
                                   "chosen one is an error (tinylora/methods/table.py says which method takes "
                                   "which flag).")
    p.add_argument("--base", default="base-mini", help="model folder, Hugging Face GPT-2 folder, or a shipped base: base-mini, base-mini-384")
    p.add_argument("--data", required=True, help="UTF-8 text file/folder, .jsonl pairs, or E2E-style .csv (mr,ref)")
    p.add_argument("--method", choices=list(METHODS), default="lora",
                   help="; ".join(f"{name} ({row.help})" for name, row in METHODS.items()))
    p.add_argument("--prefix-len", type=flags.COUNT, default=None,
                   help="prefix-*: l_p virtual tokens before the prompt (default 8)")
    p.add_argument("--infix-len", type=flags.COUNT, default=None,
                   help="prefix-*: l_i virtual tokens after the prompt (default 0)")
    p.add_argument("--adapter-dim", type=flags.POSITIVE_INT, default=None, help="adapter-*: bottleneck r (default 8)")
    p.add_argument("--rank", type=flags.POSITIVE_INT, default=None,
                   help="LoRA rank r (default: 4; AdaLoRA: the initial rank; GLoRA: its supports' rank)")
    p.add_argument("--alpha", type=flags.POSITIVE, default=None,
                   help="LoRA alpha (default: = rank, scaling 1; LoRA-shaped methods)")
    p.add_argument("--targets", type=flags.targets, default=None,
                   help="comma list of q,k,v,o,fc,proj (default: q,v; LoRA-shaped methods and glora)")
    p.add_argument("--layers", type=flags.layers, default=None,
                   help="comma list of block indices (default: all; LoRA-shaped methods, glora, adapter-*)")
    p.add_argument("--lora-dropout", type=flags.FRACTION, default=None,
                   help="dropout on LoRA's input (default: 0; LoRA-shaped methods)")
    p.add_argument("--val-fraction", type=flags.FRACTION, default=0.1, help="share of the data held out (0: none)")
    p.add_argument("--too-long", choices=("skip", "truncate", "error"), default="skip",
                   help="pairs longer than the context: leave out, cut the prompt's start, or stop")
    add_method_flags(p)
    add_memory_flags(p)
    p.add_argument("--out", default="runs/finetune", help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint (refused if a setting differs)")
    flags.add_train_flags(p, steps=200, lr=None, batch=8)


def add_method_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA-family methods (see tinylora/methods/)")
    g.add_argument("--rslora", action="store_true", default=None, help="dora, pissa, olora: scaling alpha/sqrt(r)")
    g.add_argument("--loraplus-ratio", type=flags.POSITIVE, default=None,
                   help="loraplus: B's lr / A's lr, > 0 (default 16)")
    g.add_argument("--target-r", type=flags.POSITIVE_INT, default=None,
                   help="adalora: average final rank, at most --rank (default rank*2/3)")
    g.add_argument("--tinit", type=flags.COUNT, default=None, help="adalora: steps before pruning starts (default 0)")
    g.add_argument("--tfinal", type=flags.COUNT, default=None,
                   help="adalora: final steps with a fixed rank pattern (default 0)")
    g.add_argument("--delta-t", type=flags.POSITIVE_INT, default=None, help="adalora: prune every N steps (default 1)")
    g.add_argument("--orth-reg-weight", type=flags.NON_NEGATIVE, default=None,
                   help="adalora: gamma, >= 0 (default 0.5, PEFT's)")
    g.add_argument("--glora-config", type=glora_config, default=None,
                   help="glora: kinds of A..E, each at most once, e.g. A=lora,B=vector,C=none,D=scalar,E=scalar")


def glora_config(text: str) -> dict:
    """--glora-config's value: {support: kind}, each of A..E at most once, each kind one GLoRA allows."""
    from tinylora.methods.glora import KINDS

    kinds = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        support, sep, kind = (part.strip() for part in item.partition("="))
        if not sep or support not in KINDS:
            raise argparse.ArgumentTypeError(f"expected SUPPORT=KIND with SUPPORT one of A..E, got {item!r}")
        if support in kinds:
            raise argparse.ArgumentTypeError(f"support {support} is given twice ({support}={kinds[support]}, "
                                             f"{support}={kind})")
        if kind not in KINDS[support]:
            raise argparse.ArgumentTypeError(f"support {support} cannot be {kind!r}; "
                                             f"allowed: {', '.join(KINDS[support])}")
        kinds[support] = kind
    return kinds


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_method_flags(args) -> None:
    """Refuse, in one line naming the flag and the method, a flag the chosen method does not take, and flag values
    that contradict each other; a numeric flag's own range is checked when it is parsed (tinylora/cli/flags.py)."""
    row = method_row(args.method)
    for dest in METHOD_FLAGS:
        if getattr(args, dest) not in (None, False) and dest not in row.flags:
            takes = ", ".join(_flag(d) for d in row.flags) or "no method flags"
            raise ValueError(f"{_flag(dest)} does not apply to --method {args.method} (it takes: {takes})"
                             + WHY_NOT.get(dest, ""))
    for dest in QUANT_OPTIONS:
        if getattr(args, dest) not in (None, False) and not args.quantize:
            raise ValueError(f"{_flag(dest)} configures NF4 quantization: it needs --quantize nf4")
    if args.method.startswith("prefix") and (args.prefix_len, args.infix_len) == (0, 0):
        raise ValueError(f"--prefix-len 0 --infix-len 0 gives --method {args.method} no virtual token to train: "
                         "give at least one")
    if args.method == "adalora":
        rank = args.rank or FLAG_DEFAULTS["rank"]
        if args.target_r is not None and args.target_r > rank:
            raise ValueError(f"--target-r {args.target_r} is more than the initial rank --rank {rank}: AdaLoRA only "
                             "prunes")
        tinit, tfinal = args.tinit or 0, args.tfinal or 0
        if not tinit < args.max_steps - tfinal:
            raise ValueError(f"adalora needs --tinit < --max-steps - --tfinal (pruning happens between them), got "
                             f"--tinit {tinit}, --tfinal {tfinal}, --max-steps {args.max_steps}")


def method_settings(args) -> dict:
    """The chosen method's settings from its flags (defaults filled in): what apply_method and the file get."""
    row = method_row(args.method)
    settings = {}
    for dest, key in row.flags.items():
        value = getattr(args, dest, None)
        settings[key] = FLAG_DEFAULTS.get(dest) if value is None else value
    if "targets" in settings:
        settings["targets"] = list(settings["targets"])
    if args.method in ("lora", "lora-fa") and settings["alpha"] is None:
        settings["alpha"] = float(settings["r"])
    if args.method == "adalora" and settings["target_r"] is None:
        settings["target_r"] = max(1, settings["init_r"] * 2 // 3)
    if args.method == "glora" and settings["config"] is None:
        settings["config"] = {}
    settings.pop("quantize", None)
    return settings


def method_flags(args) -> dict:
    """The method's flags (defaults filled in, by flag name) and the memory options that change the result:
    what --resume must find unchanged."""
    settings = method_settings(args)
    recorded = {dest: settings[key] for dest, key in method_row(args.method).flags.items() if key in settings}
    return {**recorded, "quantize": args.quantize, "double_quant": bool(args.double_quant),
            "quant_block_size": args.quant_block_size, "compute_dtype": args.compute_dtype}


def add_memory_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("memory (QLoRA and memory levers; all off by default)")
    g.add_argument("--quantize", choices=("nf4",), default=None,
                   help="store the frozen block Linears in 4-bit NF4 (QLoRA; needs --method lora or lora-fa)")
    g.add_argument("--double-quant", action="store_true", default=None,
                   help="also quantize NF4's constants to 8 bits (QLoRA's DQ; with --quantize)")
    g.add_argument("--quant-block-size", type=quant_block_size, default=None,
                   help="NF4 block size, a power of two from 32 to 4096 (default 64; with --quantize)")
    g.add_argument("--compute-dtype", choices=("bfloat16", "float16", "float32"), default=None,
                   help="dtype of the quantized matmuls (default bfloat16, via ml_dtypes; with --quantize)")
    g.add_argument("--paged-optimizer", action="store_true",
                   help="QLoRA's paged optimizer state (a GPU feature; refused here, see the error)")
    g.add_argument("--checkpoint-activations", action="store_true", help="recompute each block in backward")
    g.add_argument("--chunked-loss", type=flags.POSITIVE_INT, nargs="?", const=256, default=None, metavar="ROWS",
                   help="fused LM head + loss in chunks of ROWS positions (default 256): no (B, T, V) logits")


def quant_block_size(text: str) -> int:
    value = flags.number(text, int)
    if not (32 <= value <= 4096 and value & (value - 1) == 0):
        raise argparse.ArgumentTypeError(f"must be a power of two from 32 to 4096, got {value}")
    return value


def apply_memory_flags(args, model) -> None:
    """--quantize, --double-quant, --paged-optimizer, --checkpoint-activations, --chunked-loss, checked together."""
    from tinylora.methods.qlora import check_paged_optimizer, quantize_model

    if args.paged_optimizer:
        check_paged_optimizer(model.wte.weight.device.name)
    if args.quantize:
        try:
            quantize_model(model, args.quantize, double_quant=bool(args.double_quant),
                           block_size=args.quant_block_size or 64, compute_dtype=args.compute_dtype or "bfloat16")
        except ImportError as err:  # bfloat16 without ml_dtypes: reported in one line like every other error
            raise RuntimeError(str(err)) from None
    model.enable_memory_levers(checkpoint_activations=args.checkpoint_activations, loss_chunk_size=args.chunked_loss)




def load_finetune_data(path, tokenizer, block_size, val_fraction, seed, too_long="skip"):
    """Pairs (.jsonl / .csv) or running text (anything else), split into train and validation (None if none)."""
    import numpy as np

    from tinylora.data import load_pairs, load_text_dataset

    if str(path).endswith((".jsonl", ".csv")):
        examples = load_pairs(path, tokenizer, block_size, too_long=too_long)  # named by file line
        order = np.random.default_rng(seed).permutation(len(examples))
        n_val = 0 if val_fraction == 0 or len(examples) < 2 else min(max(1, int(len(examples) * val_fraction)),
                                                                       len(examples) - 1)
        val = examples.subset(order[:n_val]) if n_val else None
        return examples.subset(order[n_val:]), val
    return load_text_dataset(path, tokenizer, block_size, val_fraction=val_fraction, seed=seed)


def no_dropout(model) -> None:
    """Switch off the base model's dropout (a GPT-2 folder brings 0.1): fine-tuning here runs without it."""
    from tinylora import nn

    model.config.dropout = 0.0  # so a saved model's config says what its modules do
    model.config.embd_dropout = model.config.attn_dropout = model.config.resid_dropout = None  # all = dropout
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def apply_method(model, args) -> None:
    """Put `args.method` on `model` with the settings its flags give (unset flags: their defaults)."""
    from tinylora.methods.table import apply_method as apply_by_name

    apply_by_name(model, args.method, method_settings(args))


def run(args) -> None:
    from tinylora import manual_seed
    from tinylora.io import digest_tensors
    from tinylora.lora import parameter_report, save_adapter
    from tinylora.methods import VirtualTokenData, save_method_adapter, training_hooks
    from tinylora.model.load import load_model, save_model
    from tinylora.train import distributed
    from tinylora.train.loop import train

    flags.refuse_shipped_name(args.out)  # ./base-mini would shadow the shipped base-mini
    check_method_flags(args)
    flags.refuse_output_over_inputs(args.out, data=args.data, base=args.base)  # never the data or the base
    flags.refuse_existing_model(args.out, args.overwrite or args.resume, base=args.base)  # a model folder
    flags.check_run_flags(args, args.out)
    row = method_row(args.method)
    settings = method_settings(args)
    manual_seed(args.seed)
    model, tokenizer = load_model(args.base, device=args.device)
    no_dropout(model)
    lr = args.lr or row.lr
    setup = {"command": "finetune", "method": args.method, "base": str(args.base),
             "base_sha256": digest_tensors(model.state_dict()), "data": str(args.data),
             "data_sha256": flags.data_digest(args.data), "val_fraction": args.val_fraction, "too_long": args.too_long,
             **method_flags(args)}
    apply_memory_flags(args, model)
    apply_method(model, args)
    hooks = training_hooks(model, args.method, settings, lr, args.max_steps, args.weight_decay)
    virtual = model.virtual_tokens  # prefix tuning's special tokens take positions of every sequence
    n_virtual = virtual.n_tokens if virtual is not None else 0
    train_set, val_set = load_finetune_data(args.data, tokenizer, model.config.block_size - n_virtual,
                                             args.val_fraction, args.seed, args.too_long)
    if virtual is not None:
        train_set = VirtualTokenData(train_set, virtual)
        val_set = VirtualTokenData(val_set, virtual) if val_set is not None else None
    print(f"{args.method}: " + parameter_report(model)["text"].splitlines()[-1])
    allocator = hooks.pop("allocator", None)
    result = train(model, train_set, val_set, flags.train_config(args, lr), run_dir=args.out, resume=args.resume,
                   setup=setup, overwrite=args.overwrite, method_state=allocator, **hooks)
    if allocator is not None:
        ranks = allocator.rank_allocation()
        print("adalora rank per layer: " + ", ".join(f"{n} {r}" for n, r in ranks.items()))
    if not distributed.current().is_writer:
        return  # under `mpiexec -n N` only rank 0 writes files (tinylora/train/distributed.py)
    written = os.path.join(args.out, row.folder)
    if row.files == "model":
        save_model(model, written, tokenizer)
    else:  # every other method: an adapter folder that info, generate, evaluate, merge (and serve) read
        if row.files == "lora":
            save_adapter(model, written)
        else:
            save_method_adapter(model, written, args.method, settings)
        if args.quantize:
            written += (" (trained against the NF4 base, which it records: generate and evaluate rebuild it, "
                        "merge dequantizes)")
    plot = os.path.join(args.out, "loss.png")
    wrote = f"{written}, {plot}" if os.path.exists(plot) else written  # no plot without matplotlib
    step = f"median step {result.median_step_time:.3f} s" if result.step_times else "no step left to run"
    print(f"{flags.losses(result)}; {step}; wrote {wrote}")
