"""The LoRA family and the LoRA paper's baselines: one small file per method, each readable alone.

Each file opens with its paper's equation, the shapes, the |Θ| formula and the reference implementation it
is checked against, and has an `apply_<method>(model, ...)` function in the style of
`tinylora.lora.apply_lora`. Plain LoRA itself lives in `tinylora/lora/`, which every method here builds on.

The paper's baselines (Hu et al. 2021, §5.1), in reading order:

    trainable.py   what every apply_* ends with: train these parameters, freeze the rest, one method per model
    full_ft.py     FT (everything trains) and FT^Top2 (the last two blocks)       apply_full_ft, apply_top_layers
    bitfit.py      BitFit: only the biases                                        apply_bitfit
    prefix.py      PreEmbed / PreLayer: trainable virtual tokens around the prompt apply_prefix_embed, apply_prefix_layer
    bottleneck_adapters.py  Adapter^H / Adapter^L: bottleneck MLPs inside every block  apply_adapter_h, apply_adapter_l

The LoRA family: cheaper training (memory), then better results:

    lora_fa.py      LoRA-FA: A frozen at init, only B trains (saves Ax, not x)
    qlora.py        QLoRA: quantize_model (4-bit NF4 base, tinylora/quant/), then LoRA; merge_qlora
    rslora.py       rsLoRA: s = α/√r                                   (PEFT use_rslora: equal in float64)
    loraplus.py     LoRA+: B's learning rate λ·η, optimizer groups     (PEFT's grouping of 1-D tensors)
    dora.py         DoRA: W' = m (W0 + sBA)/‖W0 + sBA‖_c               (PEFT use_dora: equal in float64)
    pissa.py        PiSSA and OLoRA: A, B from the SVD / QR of W0      (PEFT init_lora_weights="pissa"/"olora")
    adalora.py      AdaLoRA: P Λ Q, importance, cubic rank budget      (PEFT AdaLoraConfig: equal in float64)
    glora.py        GLoRA: (W0 + W0⊙A + B)x + CW0 + D⊙b0 + E + b0      (PEFT tuners/glora: equal in float64)

    wrap.py         wrap_linears: what every apply_<method> shares

Every method by name, and its files:

    table.py        one row per method: apply, finetune flags, learning rate, file kind, and whether merge,
                    serve and PEFT take it (used by the CLI, the loaders, the benchmarks and the tests)
    files.py        save_method_adapter / load_method_adapter: one checked adapter file for every method
                    that is not plain LoRA (base hash, declared tensors only, finite, all or nothing);
                    load_any_adapter reads it or a LoRA adapter
    peft_export.py  export_method_peft: DoRA and rsLoRA adapters in PEFT's format
"""

from tinylora.methods.adalora import apply_adalora
from tinylora.methods.bitfit import apply_bitfit
from tinylora.methods.bottleneck_adapters import Adapter, apply_adapter_h, apply_adapter_l
from tinylora.methods.dora import apply_dora
from tinylora.methods.files import load_any_adapter, load_method, load_method_adapter, save_method, save_method_adapter
from tinylora.methods.full_ft import apply_full_ft, apply_top_layers
from tinylora.methods.glora import apply_glora
from tinylora.methods.lora_fa import apply_lora_fa
from tinylora.methods.loraplus import loraplus_optimizer, loraplus_param_groups
from tinylora.methods.peft_export import export_method_peft
from tinylora.methods.pissa import apply_olora, apply_pissa, pissa_to_lora
from tinylora.methods.prefix import VirtualTokenData, apply_prefix_embed, apply_prefix_layer
from tinylora.methods.qlora import merge_qlora, quantize_model
from tinylora.methods.rslora import apply_rslora
from tinylora.methods.table import METHODS, apply_method, training_hooks

__all__ = [
    "METHODS", "apply_method", "training_hooks", "load_any_adapter", "load_method_adapter", "save_method_adapter",
    "load_method", "save_method", "export_method_peft",
    "apply_lora_fa", "apply_rslora", "loraplus_optimizer", "loraplus_param_groups", "apply_dora", "apply_pissa",
    "apply_olora", "pissa_to_lora", "apply_adalora", "apply_glora", "quantize_model", "merge_qlora",
    "Adapter", "VirtualTokenData", "apply_adapter_h", "apply_adapter_l", "apply_bitfit", "apply_full_ft",
    "apply_prefix_embed", "apply_prefix_layer", "apply_top_layers",
]
