"""Functional ops, PyTorch-style: `import tinylora.functional as F`, then F.softmax(x), F.cross_entropy(...)."""

from .ops import *  # noqa: F401,F403
from .ops import __all__  # noqa: F401
