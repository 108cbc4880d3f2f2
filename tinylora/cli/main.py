"""The `tinylora` command: one file per subcommand (demo.py, pretrain.py, ...), put together here.

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

import errno
import importlib
import os
import sys
import traceback
import warnings

from tinylora.cli.flags import Parser

# the subcommands, in the order `tinylora --help` lists them; each is tinylora/cli/<name>.py with
# add_parser(sub) and run(args), imported when the parser is built (their heavy imports wait inside run)
COMMANDS = ("demo", "pretrain", "finetune", "generate", "merge", "evaluate", "info", "analyze", "serve", "download",
            "course")


def build_parser() -> Parser:
    from tinylora.version import __version__

    parser = Parser(prog="tinylora", description="LoRA from scratch: train, adapt, merge, measure.")
    parser.add_argument("--version", action="version", version=f"tinylora {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        _command(name).add_parser(sub)
    return parser


def _command(name: str):
    """The module tinylora/cli/<name>.py."""
    return importlib.import_module(f"tinylora.cli.{name}")


# what tinylora raises for a user's mistake (bad values, files, folders, a full disk, a diverged run;
# tinylora.errors' MissingNameError and WrongKindError are ValueErrors); anything else (a bare KeyError,
# TypeError, IndexError, AttributeError, ...) is a bug and keeps its traceback, and so are these subclasses
USER_ERRORS = (ValueError, OSError, RuntimeError, FloatingPointError)
BUGS = (NotImplementedError, RecursionError)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (an OSError's reason and file, a KeyError without quotes)."""
    if isinstance(err, OSError) and err.strerror:
        # a copy that fills the disk (shutil) names the source first: the file being written is the second
        full = err.errno in (errno.ENOSPC, errno.EDQUOT) and err.filename2
        name = f"cannot write {err.filename2}" if full else err.filename
        text = err.strerror + (f": {name}" if name and str(name) not in err.strerror else "")
    elif isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])  # KeyError's str() would add quotes
    else:
        text = str(err)
    return " ".join(text.split()) or type(err).__name__


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"tinylora: warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, recorded in what pretrain writes
    from tinylora.engine.backend import tune_for_training

    tune_for_training()  # the command trains and generates: the allocator and thread settings for speed
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line  # one line each, not Python's two with the source line
            # NumPy's overflow/NaN warnings: the training loop checks every loss and gradient itself
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
            _command(args.command).run(args)
    except KeyboardInterrupt:
        print("tinylora: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, USER_ERRORS) and not isinstance(err, BUGS):
            if os.environ.get("TINYLORA_DEBUG"):
                raise
            print(f"tinylora: error: {one_line(err)}", file=sys.stderr)
            return 2
        traceback.print_exc()  # a bug: show where, then say so in one line
        print(f"tinylora: internal error (a bug in tinylora; please report it with the traceback above): "
              f"{one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
