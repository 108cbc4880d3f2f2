"""`tinylora finetune`: LoRA, LoRA-FA, a LoRA-family method, full fine-tuning or one of the paper's baselines
(--method), optionally on an NF4-quantized base (--quantize, QLoRA)."""

from __future__ import annotations

import argparse
import os

from tinylora.cli import flags
from tinylora.train.loop import FULL_LR, LORA_LR

FAMILY = ("rslora", "loraplus", "dora", "pissa", "olora", "adalora", "glora")  # tinylora/methods/, by name
METHODS = ("lora", "lora-fa", *FAMILY, "full", "top2", "bitfit", "prefix-embed", "prefix-layer", "adapter-h",
           "adapter-l")
# peak learning rates when --lr is not given: LoRA's and full fine-tuning's measured defaults (LORA_LR, FULL_LR in
# train/loop.py; the LoRA family and LoRA-FA take LoRA's); for the other baselines 2e-3 (an earlier LoRA default)
# times the ratio of their rate to LoRA's in the paper's GPT-3 runs (Table 12): starting points, not tuned
DEFAULT_LR = {
    "lora": LORA_LR, "lora-fa": LORA_LR, **{m: LORA_LR for m in FAMILY}, "full": FULL_LR, "top2": FULL_LR,
    "bitfit": 1.6e-2, "prefix-embed": 5e-3, "prefix-layer": 1e-3, "adapter-h": 1e-3, "adapter-l": 1e-3,
}


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a model with LoRA or fully",
                       description="Fine-tune a base model on a text file/folder (language modelling) or on "
                                   "prompt/completion pairs (.jsonl with prompt,completion or .csv with mr,ref). "
                                   "LoRA's default learning rate, 3e-2, is the best of a short sweep on the "
                                   "demo's task (README, 'Learning rates').")
    p.add_argument("--base", default="base-mini", help="model folder, Hugging Face GPT-2 folder, or 'base-mini'")
    p.add_argument("--data", required=True, help="UTF-8 text file/folder, .jsonl pairs, or E2E-style .csv (mr,ref)")
    p.add_argument("--method", choices=METHODS, default="lora",
                   help="lora (default); lora-fa (A frozen, only B trains); a LoRA-family method (rslora, loraplus, "
                        "dora, pissa, olora, adalora, glora); full; or a LoRA-paper baseline: top2 (last two "
                        "blocks), bitfit (biases), prefix-embed / prefix-layer (virtual tokens), adapter-h / "
                        "adapter-l (bottleneck adapters)")
    p.add_argument("--prefix-len", type=int, default=8, help="prefix-*: l_p virtual tokens before the prompt (default 8)")
    p.add_argument("--infix-len", type=int, default=0, help="prefix-*: l_i virtual tokens after the prompt (default 0)")
    p.add_argument("--adapter-dim", type=int, default=8, help="adapter-*: bottleneck r (default 8)")
    p.add_argument("--rank", type=flags.POSITIVE_INT, default=None,
                   help="LoRA rank r (default: 4; AdaLoRA: the initial rank; not with --method full)")
    p.add_argument("--alpha", type=flags.POSITIVE, default=None, help="LoRA alpha (default: = rank, scaling 1; lora only)")
    p.add_argument("--targets", type=flags.targets, default=None,
                   help="comma list of q,k,v,o,fc,proj (default: q,v; not with --method full)")
    p.add_argument("--layers", type=flags.layers, default=None,
                   help="comma list of block indices (default: all; not with --method full)")
    p.add_argument("--lora-dropout", type=flags.FRACTION, default=None,
                   help="dropout on LoRA's input (default: 0; not with --method full)")
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
    g.add_argument("--rslora", action="store_true", help="dora, pissa, olora: scaling alpha/sqrt(r)")
    g.add_argument("--loraplus-ratio", type=float, default=16.0, help="loraplus: B's lr / A's lr (default 16)")
    g.add_argument("--target-r", type=int, default=None, help="adalora: average final rank (default rank*2/3)")
    g.add_argument("--tinit", type=int, default=0, help="adalora: steps before pruning starts (default 0)")
    g.add_argument("--tfinal", type=int, default=0, help="adalora: final steps with a fixed rank pattern (default 0)")
    g.add_argument("--delta-t", type=int, default=1, help="adalora: prune every N steps (default 1)")
    g.add_argument("--orth-reg-weight", type=float, default=0.5, help="adalora: gamma (default 0.5, PEFT's)")
    g.add_argument("--glora-config", default="",
                   help="glora: kinds of A..E, e.g. A=lora,B=vector,C=none,D=scalar,E=scalar")


def method_flags(args) -> dict:
    """The flags of the chosen method and the memory options that change the result (recorded for --resume)."""
    recorded = {"quantize": args.quantize, "double_quant": args.double_quant, "quant_block_size": args.quant_block_size,
                "compute_dtype": args.compute_dtype}
    if args.method in FAMILY:
        recorded.update(method_settings(args))
    elif args.method.startswith("prefix"):
        recorded.update(prefix_len=args.prefix_len, infix_len=args.infix_len)
    elif args.method.startswith("adapter"):
        recorded["adapter_dim"] = args.adapter_dim
    return recorded


def method_settings(args) -> dict:
    """The settings tinylora.methods.choose.apply_method gets from the command line."""
    settings = {"r": args.rank, "alpha": args.alpha, "targets": list(args.targets), "layers": args.layers,
                "dropout": args.lora_dropout}
    if args.method in ("dora", "pissa", "olora"):
        settings["rslora"] = args.rslora
    if args.method == "loraplus":
        settings["ratio"] = args.loraplus_ratio
    if args.method == "adalora":
        settings = {"init_r": args.rank, "target_r": args.target_r or max(1, args.rank * 2 // 3),
                    "alpha": args.alpha, "targets": list(args.targets), "layers": args.layers,
                    "dropout": args.lora_dropout, "tinit": args.tinit, "tfinal": args.tfinal,
                    "delta_t": args.delta_t, "orth_reg_weight": args.orth_reg_weight}
    if args.method == "glora":
        kinds = dict(item.split("=", 1) for item in args.glora_config.split(",") if item.strip())
        settings = {"r": args.rank, "targets": list(args.targets), "layers": args.layers, "config": kinds}
    return settings




def add_memory_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("memory (QLoRA and memory levers; all off by default)")
    g.add_argument("--quantize", choices=("nf4",), default=None,
                   help="store the frozen block Linears in 4-bit NF4 (QLoRA; needs --method lora or lora-fa)")
    g.add_argument("--double-quant", action="store_true", help="also quantize NF4's constants to 8 bits (QLoRA's DQ)")
    g.add_argument("--quant-block-size", type=int, default=64, help="NF4 block size (default 64)")
    g.add_argument("--compute-dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                   help="dtype of the quantized matmuls (default bfloat16, via ml_dtypes)")
    g.add_argument("--paged-optimizer", action="store_true",
                   help="QLoRA's paged optimizer state (a GPU feature; refused here, see the error)")
    g.add_argument("--checkpoint-activations", action="store_true", help="recompute each block in backward")
    g.add_argument("--chunked-loss", type=int, nargs="?", const=256, default=None, metavar="ROWS",
                   help="fused LM head + loss in chunks of ROWS positions (default 256): no (B, T, V) logits")


def apply_memory_flags(args, model) -> None:
    """--quantize, --double-quant, --paged-optimizer, --checkpoint-activations, --chunked-loss, checked together."""
    from tinylora.methods.qlora import check_paged_optimizer, quantize_model

    if args.double_quant and not args.quantize:
        raise ValueError("--double-quant quantizes NF4's constants: it needs --quantize nf4")
    if args.quantize and args.method == "full":
        raise ValueError("--quantize nf4 freezes the base weights in 4 bits, so they cannot be fine-tuned fully: "
                         "use --method lora or --method lora-fa")
    if args.paged_optimizer:
        check_paged_optimizer(model.wte.weight.device.name)
    if args.quantize:
        try:
            quantize_model(model, args.quantize, double_quant=args.double_quant, block_size=args.quant_block_size,
                           compute_dtype=args.compute_dtype)
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
    """Put `args.method` (LoRA, LoRA-FA, full or a paper baseline) on `model`, freezing the rest."""
    from tinylora import methods
    from tinylora.lora import apply_lora

    if args.method in ("lora", "lora-fa"):
        adapt = methods.apply_lora_fa if args.method == "lora-fa" else apply_lora
        adapt(model, r=args.rank, alpha=args.alpha, targets=args.targets, layers=args.layers,
              dropout=args.lora_dropout)
    elif args.method == "full":
        methods.apply_full_ft(model)
    elif args.method == "top2":
        methods.apply_top_layers(model, n=2)
    elif args.method == "bitfit":
        methods.apply_bitfit(model)
    elif args.method == "prefix-embed":
        methods.apply_prefix_embed(model, prefix_len=args.prefix_len, infix_len=args.infix_len)
    elif args.method == "prefix-layer":
        methods.apply_prefix_layer(model, prefix_len=args.prefix_len, infix_len=args.infix_len)
    elif args.method == "adapter-h":
        methods.apply_adapter_h(model, r=args.adapter_dim, layers=args.layers)
    elif args.method == "adapter-l":
        methods.apply_adapter_l(model, r=args.adapter_dim, layers=args.layers)


LORA_ONLY = ("rank", "alpha", "targets", "layers", "lora_dropout")


def lora_settings(args) -> dict:
    """The LoRA flags with their defaults filled in; with --method full, a LoRA flag is an error."""
    given = [f"--{name.replace('_', '-')}" for name in LORA_ONLY if getattr(args, name) is not None]
    if args.method == "full":
        if given:
            raise ValueError(f"{', '.join(given)} configure LoRA; --method full trains every weight and has no "
                             "rank: drop them, or use --method lora")
        return {}
    rank = args.rank or 4
    return {"rank": rank, "alpha": args.alpha if args.alpha is not None else float(rank),
            "targets": list(args.targets or ("q", "v")), "layers": args.layers,
            "lora_dropout": args.lora_dropout or 0.0}




def run(args) -> None:
    from tinylora import manual_seed
    from tinylora.io import digest_tensors
    from tinylora.lora import parameter_report, save_adapter
    from tinylora.methods import VirtualTokenData, save_method
    from tinylora.model.load import load_model, save_model
    from tinylora.train import distributed
    from tinylora.train.loop import train

    lora = lora_settings(args)
    flags.check_run_flags(args, args.out)
    manual_seed(args.seed)
    model, tokenizer = load_model(args.base, device=args.device)
    no_dropout(model)
    if lora:  # the LoRA flags with their defaults (every method but full fine-tuning reads them)
        args.rank, args.targets, args.lora_dropout = lora["rank"], tuple(lora["targets"]), lora["lora_dropout"]
        if args.method in ("lora", "lora-fa"):
            args.alpha = lora["alpha"]
    lr = args.lr or DEFAULT_LR[args.method]
    setup = {"command": "finetune", "method": args.method, **lora, "base": str(args.base),
             "base_sha256": digest_tensors(model.state_dict()), "data": str(args.data),
             "data_sha256": flags.data_digest(args.data), "val_fraction": args.val_fraction, "too_long": args.too_long,
             "method_flags": method_flags(args)}
    family = args.method in FAMILY
    if args.quantize and args.method not in ("lora", "lora-fa", "full"):  # full: _apply_memory_flags says why
        raise ValueError(f"--quantize nf4 works with --method lora or lora-fa, not {args.method}")
    apply_memory_flags(args, model)
    hooks, settings = {}, None
    if family:
        from tinylora.methods.choose import apply_method as apply_family_method
        from tinylora.methods.choose import save_method_adapter, training_hooks

        settings = method_settings(args)
        apply_family_method(model, args.method, settings)
        hooks = training_hooks(model, args.method, settings, lr, args.max_steps, args.weight_decay)
    else:
        apply_method(model, args)
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
    if args.method in ("lora", "lora-fa"):
        written = os.path.join(args.out, "adapter")
        save_adapter(model, written)
        if args.quantize:
            written += " (A, B trained against the NF4 base: merge with tinylora.methods.qlora.merge_qlora)"
    elif family:
        written = os.path.join(args.out, "adapter")
        save_method_adapter(model, written, args.method, settings)
    elif args.method == "full":
        written = os.path.join(args.out, "model")
        save_model(model, written, tokenizer)
    else:
        written = os.path.join(args.out, "method")
        save_method(model, written)
    print(f"{flags.losses(result)}; median step {result.median_step_time:.3f} s; "
          f"wrote {written}, {os.path.join(args.out, 'loss.png')}")

