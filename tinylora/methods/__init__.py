"""The LoRA family and the LoRA paper's baselines: one small file per method, each readable alone.

Each file opens with its paper's equation, the shapes, the |Θ| formula and the reference implementation it
is checked against, and has an `apply_<method>(model, ...)` function in the style of
`tinylora.lora.apply_lora`. Plain LoRA itself lives in `tinylora/lora/`, which every method here builds on.

The paper's baselines (Hu et al. 2021, §5.1), in reading order:

    trainable.py   what every apply_* ends with: train these parameters, freeze the rest, one method per model
    full_ft.py     FT (everything trains) and FT^Top2 (the last two blocks)       apply_full_ft, apply_top_layers
    bitfit.py      BitFit: only the biases                                        apply_bitfit
    prefix.py      PreEmbed / PreLayer: trainable virtual tokens around the prompt apply_prefix_embed, apply_prefix_layer
    adapters.py    Adapter^H / Adapter^L: bottleneck MLPs inside every block      apply_adapter_h, apply_adapter_l
    method_io.py   save_method / load_method (safetensors + JSON)
"""

from tinylora.methods.adapters import Adapter, apply_adapter_h, apply_adapter_l
from tinylora.methods.bitfit import apply_bitfit
from tinylora.methods.full_ft import apply_full_ft, apply_top_layers
from tinylora.methods.method_io import load_method, save_method
from tinylora.methods.prefix import VirtualTokenData, apply_prefix_embed, apply_prefix_layer

__all__ = [
    "Adapter", "VirtualTokenData", "apply_adapter_h", "apply_adapter_l", "apply_bitfit", "apply_full_ft",
    "apply_prefix_embed", "apply_prefix_layer", "apply_top_layers", "load_method", "save_method",
]
