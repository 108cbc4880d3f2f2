"""The `tinylora` command (commands.py) and the demo it runs (demo.py)."""

from tinylora.cli.commands import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
