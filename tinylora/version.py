"""tinylora's version, in a module of its own: code inside the package reads it from here
(`from tinylora.version import __version__`) without importing the whole package."""

__version__ = "0.2.0"  # as in pyproject.toml
