"""Layers and containers: Module, Parameter, Linear, Embedding, LayerNorm, Dropout, ModuleList."""

from . import init
from .layers import Dropout, Embedding, LayerNorm, Linear
from .module import Module, ModuleList
from .parameter import Parameter

__all__ = ["Dropout", "Embedding", "LayerNorm", "Linear", "Module", "ModuleList", "Parameter", "init"]
