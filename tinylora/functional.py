"""Functional ops, PyTorch-style: `import tinylora.functional as F`, then F.softmax(x), F.cross_entropy(...)."""

from tinylora.engine.ops import *  # noqa: F401,F403
from tinylora.engine.ops import __all__  # noqa: F401
