"""The errors tinylora raises for a user's mistake that Python would otherwise call a KeyError or an
ImportError.

The `tinylora` command reports a user's mistake in one line and keeps the traceback of a bug. A bare
KeyError or TypeError is a bug there (a lookup or a call gone wrong inside tinylora). MissingNameError
is also a ValueError, the command's sign of a bad input, while code that catches KeyError still
catches it. (tinylora.io holds the file errors: FileFormatError, NonFiniteError.)
"""


class MissingNameError(KeyError, ValueError):
    """A name the user's input asks for is not there, or a file holds names it should not (a tensor in a
    file, an adapter, an assignment). A KeyError for code that looks names up; a ValueError, so that the
    `tinylora` command reports it as the user's mistake in one line (a bare KeyError there is a bug)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # the message, without KeyError's quotes


class MissingExtraError(ImportError, RuntimeError):
    """An optional package a feature needs is not installed (ml_dtypes for bfloat16, sacrebleu for BLEU).
    An ImportError for code that checks for one; a RuntimeError, so that the `tinylora` command reports it
    as one line saying what to install (a bare ImportError there is a bug in tinylora's own imports)."""
