"""LoRA: low-rank adaptation of a frozen model (Hu et al. 2021).

For a frozen weight W0 ∈ R^{d×k}, learn ΔW = (α/r) B A with B ∈ R^{d×r},
A ∈ R^{r×k}, r << min(d, k):  h = W0 x + (α/r) B A x.

    layer.py       LoRALinear, the one layer (read this first)
    apply.py       apply_lora, mark_only_lora_as_trainable, lora_state_dict,
                   merge_lora / unmerge_lora, merge_and_unload, disable_lora / enable_lora / lora_disabled,
                   parameter_report
    adapter_io.py  save_adapter / load_adapter (safetensors + JSON config, the base's identity),
                   set_adapter_weights (an adapter from arrays)
    peft.py        export_peft / import_peft (Hugging Face PEFT's adapter format)
    adapters.py    named adapters on one base: add_adapter, set_adapter, delete_adapter, list_adapters,
                   load_named_adapter, adapter_report
    mixed.py       mixed-adapter batches: model(idx, adapter_ids=[...]), mixed_adapters
    combine.py     combine_adapters: concat (exact), svd (best rank k), linear (PEFT's, not the sum)
"""

from tinylora.lora.adapter_io import BaseMismatchError, load_adapter, save_adapter, set_adapter_weights
from tinylora.lora.adapters import (
    active_adapter,
    adapter_report,
    adapters_disabled,
    add_adapter,
    delete_adapter,
    disable_adapters,
    enable_adapters,
    list_adapters,
    load_named_adapter,
    set_adapter,
)
from tinylora.lora.apply import (
    apply_lora,
    disable_lora,
    enable_lora,
    lora_disabled,
    lora_layers,
    lora_state_dict,
    mark_only_lora_as_trainable,
    merge_and_unload,
    merge_lora,
    parameter_report,
    unmerge_lora,
)
from tinylora.lora.layer import LoRALinear
from tinylora.lora.combine import combine_adapters
from tinylora.lora.mixed import mixed_adapters
from tinylora.lora.peft import export_peft, import_peft

__all__ = [
    "BaseMismatchError", "LoRALinear", "apply_lora", "disable_lora", "enable_lora", "export_peft", "import_peft", "load_adapter",
    "lora_disabled", "lora_layers", "lora_state_dict", "mark_only_lora_as_trainable", "merge_and_unload", "merge_lora",
    "parameter_report", "save_adapter", "set_adapter_weights", "unmerge_lora",
    # several adapters on one base
    "active_adapter", "adapter_report", "adapters_disabled", "add_adapter", "combine_adapters", "delete_adapter",
    "disable_adapters", "enable_adapters", "list_adapters", "load_named_adapter", "mixed_adapters", "set_adapter",
]
