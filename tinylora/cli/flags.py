"""What every `tinylora` command shares: the parser's look, flag values checked with the flag's name, the
training flags, and the guards on output folders.

Each command lives in its own file (pretrain.py, finetune.py, ...) with `add_parser(sub)` and `run(args)`;
main.py puts them together.
"""

from __future__ import annotations

import argparse
import math
import os


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default, unless the help already says it or there is none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) or action.default == 0  # 0 is shown
        if action.option_strings and "default" not in text and shown and action.default is not False:
            text += f" (default: {action.default})"
        return text




class Parser(argparse.ArgumentParser):
    """argparse, except that a bad argument is reported in one line, like every other error here."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"tinylora: error: {message} (see: {self.prog} --help)\n")


# ------------------------------------------------------------------ flag values, checked with the flag's name
def number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def at_least(low: int):
    def check(text: str) -> int:
        value = number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    check.__name__ = f"integer >= {low}"
    return check


def float_in(low: float, high: float, low_open: bool = False, high_open: bool = False):
    """A finite float in the interval between low and high (inclusive unless *_open; None: unbounded)."""
    def check(text: str) -> float:
        value = number(text, float)
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left, right = ("(" if low_open else "[") + f"{low}", f"{high}" + (")" if high_open else "]")
            where = f"in {left}, {right}" if high is not None else f"{'>' if low_open else '>='} {low}"
            raise argparse.ArgumentTypeError(f"must be {where}, got {text}")
        return value
    check.__name__ = "number"
    return check


POSITIVE_INT, COUNT = at_least(1), at_least(0)
POSITIVE, NON_NEGATIVE = float_in(0.0, None, low_open=True), float_in(0.0, None)
FRACTION = float_in(0.0, 1.0, high_open=True)  # [0, 1): a dropout rate, a validation fraction


def checked_int_list(low: int):
    """A comma list of integers >= low, such as 1,2,4; returns the text as given (the command splits it)."""
    def check(text: str) -> str:
        try:
            values = [int(t) for t in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of integers such as 1,2,4, got {text!r}")
        if min(values) < low:
            raise argparse.ArgumentTypeError(f"every value must be an integer >= {low}, got {text}")
        return text
    check.__name__ = "integer list"
    return check


def targets(text: str) -> tuple:
    """A comma list of LoRA targets (q,k,v,o,fc,proj), checked whether or not the command then uses it."""
    from tinylora.lora.apply import TARGETS

    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise argparse.ArgumentTypeError(f"expected a comma list such as q,v, got {text!r}")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown target(s) {', '.join(unknown)}; choose from {','.join(TARGETS)}")
    return targets


def layers(text: str):
    if text in ("", "all"):
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a comma list of block indices such as 0,1,5, got {text!r}")




def add_train_flags(p: argparse.ArgumentParser, steps: int, lr, batch: int) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--max-steps", type=POSITIVE_INT, default=steps, help="optimizer steps")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=batch, help="sequences per step")
    g.add_argument("--lr", type=POSITIVE, default=lr, help="peak learning rate" + (
        "" if lr is not None else " (default: 3e-2 for lora, 1e-3 for full: measured, see the README)"))
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.0, help="AdamW decoupled weight decay")
    g.add_argument("--warmup-steps", type=COUNT, default=0, help="linear warm-up steps")
    g.add_argument("--schedule", choices=("cosine", "linear", "constant"), default="cosine",
                   help="learning-rate schedule after the warm-up")
    g.add_argument("--min-lr-ratio", type=float_in(0.0, 1.0), default=0.1,
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



def train_config(args, lr: float):
    from tinylora.train.loop import TrainConfig

    return TrainConfig(
        max_steps=args.max_steps, batch_size=args.batch_size, lr=lr, weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps, schedule=args.schedule, min_lr_ratio=args.min_lr_ratio,
        grad_clip=args.grad_clip or None, eval_every=args.eval_every, eval_batches=args.eval_batches,
        checkpoint_every=args.checkpoint_every, seed=args.seed, progress=not args.no_progress,
        log_every=args.log_every,
    )




def refuse_shipped_name(out) -> None:
    """--out must not be a bare shipped name: the folder it writes would later be confused with the shipped base
    (loading such a name is refused; tinylora.model.load.resolve). "./base-mini" names the folder and is allowed."""
    from tinylora.model.load import SHIPPED

    if out is not None and str(out) in SHIPPED:
        raise ValueError(f"--out {out}: '{out}' is the name of a shipped base; write to another name, "
                         f"or ./{out} to mean the folder")


def refuse_existing_model(out, overwrite: bool, base=None) -> None:
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


def refuse_output_over_inputs(out, **inputs) -> None:
    """--out must not be what the command reads: the same file or folder, a path inside an input
    folder, or a folder holding an input (written whole, it would take the input with it).

    inputs: {flag name: path or None}, e.g. data=args.data, adapter=args.adapter (shipped model
    names such as base-mini count as their folder). Refused whatever --overwrite says.
    """
    from tinylora.model.load import resolve

    if out is None:
        return
    target = os.path.realpath(out)
    for flag, paths in inputs.items():
        for path in paths if isinstance(paths, (list, tuple)) else [paths]:
            if path is None:
                continue
            source = os.path.realpath(resolve(path))
            if os.path.commonpath([target, source]) in (target, source):
                how = ("is" if target == source else "lies inside" if target.startswith(source + os.sep)
                       else "holds")
                raise ValueError(f"--out {out} {how} --{flag.replace('_', '-')} {path}, which this command reads: "
                                 "writing there would replace it; choose another --out")


def check_run_flags(args, run_dir) -> None:
    """--resume and --overwrite exclude each other; without either, a folder holding a run is refused now,
    before minutes of loading rather than after; --resume into a folder that holds no run (a mistyped
    name) is refused rather than starting a new run there."""
    from tinylora.train.checkpoint import check_run_dir_free, earlier_run

    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in the folder and --overwrite deletes it: choose one")
    if args.resume and not earlier_run(run_dir):
        raise FileNotFoundError(f"--resume: {run_dir} holds no earlier run to continue (a mistyped folder?); "
                                "drop --resume to start a new run there")
    if not (args.resume or args.overwrite):
        check_run_dir_free(run_dir)




def data_digest(path) -> str:
    """The content hash of the files a --data path stands for (what a resumed run must train on)."""
    from tinylora.data import text_files
    from tinylora.io import digest_files

    return digest_files(text_files(path))




def losses(result) -> str:
    """'validation loss 2.51 -> 1.20', or what there is of it (a resumed or validation-free run)."""
    if result.val_loss_after is None:
        return "no validation set (--val-fraction 0, or too little data to hold some out)"
    before = f"{result.val_loss_before:.4f} -> " if result.val_loss_before is not None else ""
    return f"validation loss {before}{result.val_loss_after:.4f}"


