"""Layers and containers: Module, Parameter, Linear, Embedding, LayerNorm, Dropout, ModuleList."""

from tinylora.nn import init
from tinylora.nn.layers import Dropout, Embedding, LayerNorm, Linear
from tinylora.nn.module import Module, ModuleList, evaluating
from tinylora.nn.parameter import Parameter

__all__ = ["Dropout", "Embedding", "LayerNorm", "Linear", "Module", "ModuleList", "Parameter", "evaluating", "init"]
