"""The `tinylora` command: main.py puts together one file per subcommand (pretrain.py, finetune.py, ...)."""

from tinylora.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
