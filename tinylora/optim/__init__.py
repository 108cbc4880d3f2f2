"""Optimizers. Each keeps state only for parameters that require grad, and updates in place."""

from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD"]
