"""The `tinylora` command: demo, pretrain, finetune, generate, merge, info.

    tinylora demo                                   the whole LoRA story in under 3 minutes
    tinylora pretrain --data DIR --out MODEL        train a small GPT from scratch
    tinylora finetune --base MODEL --data FILE      LoRA, LoRA-FA, a LoRA-family method, full fine-tuning or a paper
                                                    baseline (--method); QLoRA (--quantize)
    tinylora generate --model MODEL [--adapter A]   sample text
    tinylora merge --base MODEL --adapter A --out M W = W0 + (α/r) B A, saved as a plain model
    tinylora evaluate --model MODEL --data FILE     BLEU and ROUGE-L of greedy completions, as JSON
    tinylora info --model MODEL [--rank r]          parameter counts
    tinylora analyze [--out DIR]                    the paper's rank analyses (φ, Table 7, rank sweep)
    tinylora serve --requests FILE --adapter N=DIR  batch generation, many adapters in one batch
    tinylora download gpt2 --out DIR                a Hugging Face GPT-2 folder (needs huggingface_hub)

Every subcommand has --help, and every flag there shows its default. A user's
mistake (a bad value, a missing or malformed file, a folder that holds an
earlier run, a full disk, a diverged run) is reported in one line,
`tinylora: error: ...`, with exit code 2; set TINYLORA_DEBUG=1 to see the
traceback. Anything else is a bug in tinylora: its traceback is shown, then a
`tinylora: internal error` line, exit code 1. Warnings are one line each.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import traceback

from tinylora.train.loop import FULL_LR, LORA_LR
import warnings


class _HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already says it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) or action.default == 0  # 0 is shown
        if action.option_strings and "default" not in text and shown and action.default is not False:
            text += f" (default: {action.default})"
        return text


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


class _Parser(argparse.ArgumentParser):
    """argparse, except that a bad argument is reported in one line, like every other error here."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"tinylora: error: {message} (see: {self.prog} --help)\n")


# ------------------------------------------------------------------ flag values, checked with the flag's name
def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _at_least(low: int):
    def check(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    check.__name__ = f"integer >= {low}"
    return check


def _float_in(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A finite float in the interval between low and high (inclusive unless *_open; None: unbounded)."""
    def check(text: str) -> float:
        value = _number(text, float)
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left, right = ("(" if low_open else "[") + f"{low}", f"{high}" + (")" if high_open else "]")
            where = f"in {left}, {right}" if high is not None else f"{'>' if low_open else '>='} {low}"
            raise argparse.ArgumentTypeError(f"must be {where}, got {text}")
        return value
    check.__name__ = "number"
    return check


POSITIVE_INT, COUNT = _at_least(1), _at_least(0)
POSITIVE, NON_NEGATIVE = _float_in(0.0, None, low_open=True), _float_in(0.0, None)
FRACTION = _float_in(0.0, 1.0, high_open=True)  # [0, 1): a dropout rate, a validation fraction


def _targets(text: str) -> tuple:
    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise argparse.ArgumentTypeError(f"expected a comma list such as q,v, got {text!r}")
    return targets


def _layers(text: str):
    if text in ("", "all"):
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a comma list of block indices such as 0,1,5, got {text!r}")


def _add_train_flags(p: argparse.ArgumentParser, steps: int, lr, batch: int) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--max-steps", type=POSITIVE_INT, default=steps, help="optimizer steps")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=batch, help="sequences per step")
    g.add_argument("--lr", type=POSITIVE, default=lr, help="peak learning rate" + (
        "" if lr is not None else " (default: 3e-2 for lora, 1e-3 for full: measured, see the README)"))
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.0, help="AdamW decoupled weight decay")
    g.add_argument("--warmup-steps", type=COUNT, default=0, help="linear warm-up steps")
    g.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine",
                   help="learning-rate schedule after the warm-up")
    g.add_argument("--min-lr-ratio", type=_float_in(0.0, 1.0), default=0.1,
                   help="the schedule ends at lr * this")
    g.add_argument("--grad-clip", type=NON_NEGATIVE, default=1.0, help="max global gradient norm (0: off)")
    g.add_argument("--eval-every", type=POSITIVE_INT, default=50, help="validate every N steps")
    g.add_argument("--eval-batches", type=POSITIVE_INT, default=8, help="validation batches")
    g.add_argument("--checkpoint-every", type=COUNT, default=0, help="checkpoint every N steps (0: at the end)")
    g.add_argument("--seed", type=COUNT, default=0, help="seed of the initialisation, batches and split")
    g.add_argument("--device", default=None, help="cpu or cuda (default: TINYLORA_DEVICE, else cpu)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    g.add_argument("--log-every", type=COUNT, default=0,
                   help="without a terminal: a progress line every N steps (0: about ten per run)")
    g.add_argument("--overwrite", action="store_true",
                   help="if the output folder holds an earlier run, delete what it wrote and start again")


def _add_method_flags(p: argparse.ArgumentParser) -> None:
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


def _method_flags(args) -> dict:
    """The flags of the chosen method and the memory options that change the result (recorded for --resume)."""
    flags = {"quantize": args.quantize, "double_quant": args.double_quant, "quant_block_size": args.quant_block_size,
             "compute_dtype": args.compute_dtype}
    if args.method in FAMILY:
        flags.update(_method_settings(args))
    elif args.method.startswith("prefix"):
        flags.update(prefix_len=args.prefix_len, infix_len=args.infix_len)
    elif args.method.startswith("adapter"):
        flags["adapter_dim"] = args.adapter_dim
    return flags


def _method_settings(args) -> dict:
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


def _load_any_adapter(model, path, force: bool = False):
    """A plain LoRA adapter (save_adapter; `force` skips its base-weights check) or a LoRA-family one
    (finetune --method dora, ...)."""
    from tinylora.io import read_json
    from tinylora.lora import load_adapter
    from tinylora.methods.choose import FORMAT, load_method_adapter

    config = read_json(os.path.join(path, "adapter_config.json"))
    if config.get("format") == FORMAT:
        return load_method_adapter(model, path)
    return load_adapter(model, path, force=force)


def _add_memory_flags(p: argparse.ArgumentParser) -> None:
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


def _apply_memory_flags(args, model) -> None:
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


def _train_config(args, lr: float):
    from tinylora.train.loop import TrainConfig

    return TrainConfig(
        max_steps=args.max_steps, batch_size=args.batch_size, lr=lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, schedule=args.schedule, min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip or None, eval_every=args.eval_every, eval_batches=args.eval_batches,
        checkpoint_every=args.checkpoint_every, seed=args.seed, progress=not args.no_progress,
        log_every=args.log_every,
    )


def build_parser() -> argparse.ArgumentParser:
    from tinylora import __version__

    parser = _Parser(prog="tinylora", description="LoRA from scratch: train, adapt, merge, measure.")
    parser.add_argument("--version", action="version", version=f"tinylora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("demo", help="fine-tune the shipped base twice (full and LoRA) and compare",
                       description="Fine-tune the shipped base model on a data-to-text task, full and LoRA r=4 "
                                   "on q,v, and print one table comparing them. No download.")
    p.add_argument("--steps", type=POSITIVE_INT, default=None, help="fine-tuning steps per method (default: 150)")
    p.add_argument("--out", default="runs/demo", help="where plots, metrics and files go (replaced on each run)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: TINYLORA_DEVICE, else cpu)")

    p = sub.add_parser("pretrain", help="train a GPT from scratch on text",
                       description="Train a small GPT from scratch on a text file or folder (default: this "
                                   "Python installation's standard-library source, which every machine has).")
    p.add_argument("--data", default="stdlib", help="UTF-8 text file, folder, or 'stdlib'")
    p.add_argument("--config", default="mini", help="GPT preset: tiny, mini, gpt2, ...")
    p.add_argument("--block-size", type=POSITIVE_INT, default=256, help="context length T in tokens")
    p.add_argument("--tokenizer", default="byte", help="'byte' or a folder with vocab.json + merges.txt")
    p.add_argument("--out", required=True, help="model folder to write (an existing one needs --overwrite)")
    p.add_argument("--run-dir", default=None, help="metrics and checkpoints (default: OUT/run)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint (refused if a setting differs)")
    _add_train_flags(p, steps=2000, lr=2e-3, batch=16)

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
    p.add_argument("--rank", type=POSITIVE_INT, default=None,
                   help="LoRA rank r (default: 4; AdaLoRA: the initial rank; not with --method full)")
    p.add_argument("--alpha", type=POSITIVE, default=None, help="LoRA alpha (default: = rank, scaling 1; lora only)")
    p.add_argument("--targets", type=_targets, default=None,
                   help="comma list of q,k,v,o,fc,proj (default: q,v; not with --method full)")
    p.add_argument("--layers", type=_layers, default=None,
                   help="comma list of block indices (default: all; not with --method full)")
    p.add_argument("--lora-dropout", type=FRACTION, default=None,
                   help="dropout on LoRA's input (default: 0; not with --method full)")
    p.add_argument("--val-fraction", type=FRACTION, default=0.1, help="share of the data held out (0: none)")
    p.add_argument("--too-long", choices=("skip", "truncate", "error"), default="skip",
                   help="pairs longer than the context: leave out, cut the prompt's start, or stop")
    _add_method_flags(p)
    _add_memory_flags(p)
    p.add_argument("--out", default="runs/finetune", help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint (refused if a setting differs)")
    _add_train_flags(p, steps=200, lr=None, batch=8)

    p = sub.add_parser("generate", help="generate text from a model (and an adapter)",
                       description="Continue a prompt with a model, optionally with a LoRA adapter on top. "
                                   "With the same --seed, a model with its adapter and the merged model sample "
                                   "the same text.")
    p.add_argument("--model", default=None,
                   help="model folder or 'base-mini' (default: the base the adapter records, else base-mini)")
    p.add_argument("--adapter", default=None, help="adapter folder written by finetune --method lora (RUN/adapter)")
    p.add_argument("--force", action="store_true",
                   help="use the adapter even on a base whose weights differ from the one it was trained on")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=COUNT, default=100, help="tokens to add at most")
    p.add_argument("--temperature", type=NON_NEGATIVE, default=0.8, help="sampling temperature; 0 means greedy")
    p.add_argument("--top-k", type=POSITIVE_INT, default=None,
                   help="sample among the k likeliest tokens (default: all)")
    p.add_argument("--top-p", type=_float_in(0.0, 1.0, low_open=True), default=None,
                   help="sample within this cumulative probability (default: 1, off)")
    p.add_argument("--seed", type=COUNT, default=0, help="sampling seed")
    p.add_argument("--device", default=None, help="cpu or cuda (default: TINYLORA_DEVICE, else cpu)")

    p = sub.add_parser("merge", help="merge an adapter into its base: W = W0 + (alpha/r) B A",
                       description="Merge a LoRA adapter into its base model, W = W0 + (alpha/r) B A, and save "
                                   "the result as a plain model folder (no extra inference cost).")
    p.add_argument("--base", default=None, help="model folder or 'base-mini' (default: the base the adapter records)")
    p.add_argument("--adapter", required=True, help="adapter folder written by finetune --method lora (RUN/adapter)")
    p.add_argument("--out", required=True, help="model folder to write (an existing one needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the model in --out if there is one")
    p.add_argument("--force", action="store_true",
                   help="merge even into a base whose weights differ from the one the adapter was trained on")

    p = sub.add_parser("evaluate", help="BLEU and ROUGE-L of greedy completions of held-out prompts",
                       description="Greedy generation for every prompt of a file of prompts with references "
                                   "(E2E CSV mr,ref or JSONL prompt,completion; repeated prompts pool their "
                                   "references), scored with sacrebleu (BLEU) and rouge-score (ROUGE-L). "
                                   "Needs: pip install 'tinylora[metrics]'.")
    p.add_argument("--model", default=None,
                   help="model folder or 'base-mini' (default: the base a LoRA adapter records, else base-mini)")
    p.add_argument("--adapter", default=None, help="LoRA adapter or baseline method folder (optional)")
    p.add_argument("--force", action="store_true", help="use a LoRA adapter on a base whose weights differ")
    p.add_argument("--data", required=True, help=".csv (mr,ref) or .jsonl (prompt,completion)")
    p.add_argument("--max-prompts", type=int, default=None, help="score only the first N distinct prompts")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--out", default=None, help="JSON file for the scores and completions (default: print only)")
    p.add_argument("--device", default=None)

    p = sub.add_parser("info", help="parameter counts, with or without LoRA",
                       description="Count a model's parameters, and what LoRA of rank r on the chosen targets "
                                   "would train.")
    p.add_argument("--model", default="base-mini", help="model folder, 'base-mini', or a preset such as gpt2")
    p.add_argument("--rank", type=POSITIVE_INT, default=None, help="also count LoRA of this rank (default: none)")
    p.add_argument("--targets", type=_targets, default="q,v", help="comma list of q,k,v,o,fc,proj")
    p.add_argument("--detail", action="store_true", help="one row per module (builds a preset's model)")
    p.add_argument("--adapter", default=None, help="describe this adapter folder instead (its settings, size, base)")

    from tinylora.cli import analyze, course, download, serve

    for module in (analyze, serve, download, course):
        module.add_parser(sub)
    return parser


# ------------------------------------------------------------------ commands
def cmd_demo(args) -> None:
    from tinylora.cli.demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, device=args.device)


def corpus_path(data: str) -> str:
    """'stdlib' means the top-level *.py files of this Python's standard library (about 4.7 MB on 3.11)."""
    if data != "stdlib":
        return data
    import sysconfig

    return os.path.join(sysconfig.get_paths()["stdlib"], "*.py")


def _refuse_existing_model(out, overwrite: bool, base=None) -> None:
    """A model folder is replaced only with --overwrite (and never silently when it is the base itself)."""
    from tinylora.model.load import resolve

    out = os.fspath(out)
    if overwrite or not os.path.isdir(out):
        return
    if base is not None and os.path.realpath(resolve(base)) == os.path.realpath(out):
        raise FileExistsError(f"--out {out} is the base model itself; merging there would replace it: "
                              "choose another --out (or --overwrite to replace the base)")
    held = [n for n in ("config.json", "model.safetensors") if os.path.exists(os.path.join(out, n))]
    if held:
        raise FileExistsError(f"--out {out} already holds a model ({', '.join(held)}); choose another folder, "
                              "or --overwrite to replace it")


def _check_run_flags(args, run_dir) -> None:
    """--resume and --overwrite exclude each other; without either, a folder holding a run is refused now,
    before minutes of loading rather than after."""
    from tinylora.train.checkpoint import check_run_dir_free

    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in the folder and --overwrite deletes it: choose one")
    if not (args.resume or args.overwrite):
        check_run_dir_free(run_dir)


def _data_digest(path) -> str:
    """The content hash of the files a --data path stands for (what a resumed run must train on)."""
    from tinylora.data import text_files
    from tinylora.io import digest_files

    return digest_files(text_files(path))


def cmd_pretrain(args) -> None:
    from tinylora import manual_seed
    from tinylora.data import load_text_dataset
    from tinylora.model.gpt import GPT, GPTConfig
    from tinylora.model.load import save_model
    from tinylora.tokenizers import load_tokenizer
    from tinylora.train.loop import train

    run_dir = args.run_dir or os.path.join(args.out, "run")
    _check_run_flags(args, run_dir)
    _refuse_existing_model(args.out, args.overwrite or args.resume)
    manual_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer)
    data = corpus_path(args.data)
    train_set, val_set = load_text_dataset(data, tokenizer, args.block_size, val_fraction=0.05, seed=args.seed)
    config = GPTConfig.from_preset(args.config, vocab_size=tokenizer.vocab_size, block_size=args.block_size,
                                   dropout=0.0)
    model = GPT(config, device=args.device)
    setup = {"command": "pretrain", "preset": args.config, "block_size": args.block_size,
             "tokenizer": args.tokenizer, "data": args.data, "data_sha256": _data_digest(data), "val_fraction": 0.05}
    print(f"pretraining a {args.config} GPT ({model.num_parameters():,} parameters) "
          f"on {len(train_set.tokens):,} tokens")
    result = train(model, train_set, val_set, _train_config(args, args.lr), run_dir=run_dir, resume=args.resume,
                   setup=setup, overwrite=args.overwrite)
    save_model(model, args.out, tokenizer, extra={
        "pretrain": {"command": "tinylora " + shlex.join(args.argv), "data": args.data,
                     "val_loss": result.val_loss_after, "python": sys.version.split()[0]}})
    print(f"{_losses(result)}; model written to {args.out}")


def _losses(result) -> str:
    """'validation loss 2.51 -> 1.20', or what there is of it (a resumed or validation-free run)."""
    if result.val_loss_after is None:
        return "no validation set (--val-fraction 0, or too little data to hold some out)"
    before = f"{result.val_loss_before:.4f} -> " if result.val_loss_before is not None else ""
    return f"validation loss {before}{result.val_loss_after:.4f}"


def _load_finetune_data(path, tokenizer, block_size, val_fraction, seed, too_long="skip"):
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


def _no_dropout(model) -> None:
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


def _lora_settings(args) -> dict:
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


def cmd_finetune(args) -> None:
    from tinylora import manual_seed
    from tinylora.io import digest_tensors
    from tinylora.lora import parameter_report, save_adapter
    from tinylora.methods import VirtualTokenData, save_method
    from tinylora.model.load import load_model, save_model
    from tinylora.train import distributed
    from tinylora.train.loop import train

    lora = _lora_settings(args)
    _check_run_flags(args, args.out)
    manual_seed(args.seed)
    model, tokenizer = load_model(args.base, device=args.device)
    _no_dropout(model)
    if lora:  # the LoRA flags with their defaults (every method but full fine-tuning reads them)
        args.rank, args.targets, args.lora_dropout = lora["rank"], tuple(lora["targets"]), lora["lora_dropout"]
        if args.method in ("lora", "lora-fa"):
            args.alpha = lora["alpha"]
    lr = args.lr or DEFAULT_LR[args.method]
    setup = {"command": "finetune", "method": args.method, **lora, "base": str(args.base),
             "base_sha256": digest_tensors(model.state_dict()), "data": str(args.data),
             "data_sha256": _data_digest(args.data), "val_fraction": args.val_fraction, "too_long": args.too_long,
             "method_flags": _method_flags(args)}
    family = args.method in FAMILY
    if args.quantize and args.method not in ("lora", "lora-fa", "full"):  # full: _apply_memory_flags says why
        raise ValueError(f"--quantize nf4 works with --method lora or lora-fa, not {args.method}")
    _apply_memory_flags(args, model)
    hooks, settings = {}, None
    if family:
        from tinylora.methods.choose import apply_method as apply_family_method
        from tinylora.methods.choose import save_method_adapter, training_hooks

        if args.method == "adalora" and args.resume:
            raise ValueError("--resume is not supported for adalora (the importance scores are not checkpointed)")
        settings = _method_settings(args)
        apply_family_method(model, args.method, settings)
        hooks = training_hooks(model, args.method, settings, lr, args.max_steps, args.weight_decay)
    else:
        apply_method(model, args)
    virtual = model.virtual_tokens  # prefix tuning's special tokens take positions of every sequence
    n_virtual = virtual.n_tokens if virtual is not None else 0
    train_set, val_set = _load_finetune_data(args.data, tokenizer, model.config.block_size - n_virtual,
                                             args.val_fraction, args.seed, args.too_long)
    if virtual is not None:
        train_set = VirtualTokenData(train_set, virtual)
        val_set = VirtualTokenData(val_set, virtual) if val_set is not None else None
    print(f"{args.method}: " + parameter_report(model)["text"].splitlines()[-1])
    allocator = hooks.pop("allocator", None)
    result = train(model, train_set, val_set, _train_config(args, lr), run_dir=args.out, resume=args.resume,
                   setup=setup, overwrite=args.overwrite, **hooks)
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
    print(f"{_losses(result)}; median step {result.median_step_time:.3f} s; "
          f"wrote {written}, {os.path.join(args.out, 'loss.png')}")


def _is_method_folder(path) -> bool:
    """Is `path` a baseline's method folder (method_config.json) rather than a LoRA adapter?"""
    from tinylora.methods.method_io import CONFIG_FILE

    return bool(path) and os.path.exists(os.path.join(path, CONFIG_FILE))


def load_with_adapter(model_path, adapter, device=None, force=False):
    """(model, tokenizer): a model folder plus, optionally, an adapter (LoRA or a LoRA-family method) or a
    baseline's method folder."""
    from tinylora.methods import load_method
    from tinylora.model.load import load_model

    if _is_method_folder(adapter):
        model, tokenizer = load_model(model_path or "base-mini", device=device)
        load_method(model, adapter)
    else:
        model, tokenizer = load_model(_base_of(adapter, model_path), device=device)
        if adapter:
            _load_any_adapter(model, adapter, force=force)
    return model, tokenizer


def _adapter_folder(path) -> str:
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


def decode_text(tokenizer, ids) -> str:
    """Token ids as text, without end-of-text tokens (the start token of an empty prompt, the stop token)."""
    return tokenizer.decode([int(i) for i in ids if i != tokenizer.eot_id])


def cmd_generate(args) -> None:
    from tinylora import manual_seed, tensor
    from tinylora.methods.prefix import max_new_tokens_for, prompt_ids
    from tinylora.model.generate import generate

    adapter = _adapter_folder(args.adapter) if args.adapter else None
    model, tokenizer = load_with_adapter(args.model, adapter, device=args.device, force=args.force)
    prompt = tokenizer.encode(args.prompt) or [tokenizer.eot_id if tokenizer.eot_id is not None else 0]
    ids = prompt_ids(model, prompt)  # prefix + prompt + infix for prefix tuning, else the prompt
    n_new = max_new_tokens_for(model, len(ids), args.max_new_tokens)  # a prefix must stay in the context
    # seeded here, after loading: building a model and applying LoRA draw random numbers, and sampling
    # must start from the same state whether the model came with an adapter or was merged
    manual_seed(args.seed)
    out = generate(model, tensor([ids], device=args.device), n_new,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_token=tokenizer.eot_id)
    print(decode_text(tokenizer, prompt + out.numpy()[0, len(ids):].tolist()))


def cmd_merge(args) -> None:
    from tinylora.lora import merge_and_unload
    from tinylora.methods import load_method
    from tinylora.methods.glora import merge_and_unload_glora
    from tinylora.methods.method_io import MERGEABLE, read_method_config
    from tinylora.model.load import load_model, save_model

    adapter = _adapter_folder(args.adapter)
    if _is_method_folder(adapter):
        base = args.base or "base-mini"
        _refuse_existing_model(args.out, args.overwrite, base=base)
        model, tokenizer = load_model(base)
        method = read_method_config(adapter)["method"]
        if method not in MERGEABLE:
            raise ValueError(f"{method} cannot be merged: its {'adapters' if 'adapter' in method else 'virtual tokens'} "
                             "add computation no weight of the base model can absorb; use generate --adapter")
        merged = load_method(model, adapter)  # FT^Top2 / BitFit: the trained weights replace the base's
        del merged.finetune_method
    else:
        base = _base_of(adapter, args.base)
        _refuse_existing_model(args.out, args.overwrite, base=base)
        model, tokenizer = load_model(base)
        _load_any_adapter(model, adapter, force=args.force)
        merged = merge_and_unload(model)  # safe: refuses a non-finite ΔW, naming the layer, before W0 changes
        merged = merge_and_unload_glora(merged)  # GLoRA layers (tinylora.methods.glora), if any
    save_model(merged, args.out, tokenizer, extra={"merged_from": {"base": str(base), "adapter": args.adapter}})
    print(f"merged model written to {args.out}")


def cmd_evaluate(args) -> None:
    import json

    from tinylora.data import read_pairs
    from tinylora.io import write_json_atomic
    from tinylora.train.generation_metrics import evaluate_generation

    model, tokenizer = load_with_adapter(args.model, args.adapter, device=args.device, force=args.force)
    result = evaluate_generation(model, tokenizer, read_pairs(args.data), args.max_prompts, args.max_new_tokens)
    result.update({"model": str(args.model), "adapter": args.adapter, "data": str(args.data)})
    if args.out:
        write_json_atomic(args.out, result)
    print(json.dumps({k: result[k] for k in ("bleu", "rouge_l", "prompts")}))


def _base_of(adapter, given):
    """The base model to load: --base/--model as given, else the one the adapter records, else base-mini."""
    if given is not None:
        return given
    if adapter:
        from tinylora.lora.adapter_io import read_adapter_config

        recorded = read_adapter_config(adapter).get("base")
        if isinstance(recorded, dict) and isinstance(recorded.get("name"), str):
            return recorded["name"]
    return "base-mini"


def _describe_adapter(path) -> str:
    """One line about an adapter folder: where LoRA sits, its size, its base."""
    from tinylora.io import tensor_shapes
    from tinylora.lora.adapter_io import TENSOR_FILE, read_adapter_config

    config = read_adapter_config(path)
    if not isinstance(config, dict) or not isinstance(config.get("modules"), dict):
        raise ValueError(f"{path}: adapter_config.json has no 'modules' object; not a tinylora adapter")
    shapes = tensor_shapes(os.path.join(path, TENSOR_FILE))
    size = sum(math.prod(shape) for _, shape in shapes.values())
    base = config.get("base") if isinstance(config.get("base"), dict) else {}
    digest = base.get("weights_sha256") or "not recorded"
    layers = "all blocks" if config.get("layers") is None else f"blocks {config['layers']}"
    return (f"adapter {path}: LoRA r={config.get('r')}, alpha={config.get('alpha')} on "
            f"{','.join(map(str, config.get('targets') or []))} of {layers} ({len(config['modules'])} layers), "
            f"bias {config.get('bias')}; {size:,} parameters in {len(shapes)} tensors; base "
            f"{base.get('name')!r} (weights sha256 {digest[:16]})")


def cmd_info(args) -> None:
    from tinylora.lora import apply_lora, parameter_report
    from tinylora.lora.apply import count_line, lora_parameter_count
    from tinylora.model.gpt import GPT, GPTConfig
    from tinylora.model.load import SHIPPED, load_model

    if args.adapter:
        print(_describe_adapter(args.adapter))
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


def _run(name: str):
    """The `run(args)` of tinylora/cli/<name>.py, imported when the command runs."""
    def command(args):
        import importlib

        importlib.import_module(f"tinylora.cli.{name}").run(args)
    return command


COMMANDS = {"demo": cmd_demo, "pretrain": cmd_pretrain, "finetune": cmd_finetune, "generate": cmd_generate,
            "merge": cmd_merge, "evaluate": cmd_evaluate, "info": cmd_info, "analyze": _run("analyze"),
            "serve": _run("serve"), "download": _run("download"), "course": _run("course")}

# what a user's mistake raises (bad values, files, folders, a full disk, a diverged run); anything
# else (IndexError, AttributeError, ...) is a bug and keeps its traceback
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, RuntimeError, FloatingPointError)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (an OSError's reason and file, a KeyError without quotes)."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename and str(err.filename) not in err.strerror else "")
    else:
        text = str(err).strip("'\"")
    return " ".join(text.split()) or type(err).__name__


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"tinylora: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, recorded in what pretrain writes
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line  # one line each, not Python's two with the source line
            # NumPy's overflow/NaN warnings: the training loop checks every loss and gradient itself
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
            COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("tinylora: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if os.environ.get("TINYLORA_DEBUG"):
            raise
        print(f"tinylora: error: {one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # a bug: show where, then say so in one line
        traceback.print_exc()
        print(f"tinylora: internal error (a bug in tinylora; please report it with the traceback above): "
              f"{one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
