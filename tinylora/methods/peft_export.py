"""Export DoRA and rsLoRA adapters (and PiSSA/OLoRA, converted) in Hugging Face PEFT's format.

`tinylora.lora.export_peft` writes A and B of every LoRA-like layer (q, k, v fused into GPT-2's c_attn,
see tinylora/lora/peft.py). This adds what the two re-parameterisations need, after it has run:

  * the scaling, from each layer's own s (rsLoRA's is α/√r, not α/r): per PEFT module of rank R,
    `lora_alpha` = s √R with use_rslora when every layer is rsLoRA (PEFT: s = lora_alpha/√R),
    else s R (PEFT: s = lora_alpha/R);
  * DoRA's magnitude, `...{module}.lora_magnitude_vector` (out,), and use_dora. On a fused c_attn the
    rows of q, k, v without DoRA (and modules without DoRA at all) get m = ‖W0 + sBA‖ row by row as it is
    now, so that PEFT's m/n is exactly 1 there and those rows compute plain LoRA, as in tinylora.

PiSSA and OLoRA layers must be converted first (`tinylora.methods.pissa.pissa_to_lora`): their base
weights are residuals, which a PEFT adapter for the original model cannot carry. AdaLoRA and GLoRA are
refused (PEFT's AdaLoRA and GLoRA adapters are other adapter types, not written here).
"""

from __future__ import annotations

import math
import os

import numpy as np

from tinylora.engine.backend import to_host
from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora.adapter_io import _LORA_NAME
from tinylora.lora.apply import lora_layers
from tinylora.lora.layer import LoRALinear
from tinylora.lora.peft import CONFIG_FILE, FUSED, HF_MODULE, TENSOR_FILE, write_peft
from tinylora.methods.dora import DoRALinear
from tinylora.methods.glora import glora_layers
from tinylora.methods.pissa import PiSSALinear


def export_method_peft(model, path) -> None:
    """`export_peft`, then the scalings and DoRA magnitudes described above. Writes `path` (a PEFT adapter)."""
    if any(True for _ in glora_layers(model)):
        raise ValueError("export_method_peft: GLoRA is not a PEFT LoRA adapter; merge it instead "
                         "(merge_and_unload_glora)")
    groups = {}  # (block, HF module) -> {target: layer}
    for name, layer in lora_layers(model):
        if isinstance(layer, PiSSALinear):
            raise ValueError(f"export_method_peft: '{name}' is PiSSA/OLoRA: call pissa_to_lora(model) first "
                             "(the base weights are residuals)")
        if type(layer) not in (LoRALinear, DoRALinear):
            raise ValueError(f"export_method_peft: '{name}' is a {type(layer).__name__}, which PEFT's LoRA "
                             "format cannot carry")
        i, target = _LORA_NAME.fullmatch(name).groups()
        groups.setdefault((int(i), HF_MODULE[target]), {})[target] = layer
    write_peft(model, path)  # A, B (checks the layout and raises for anything it cannot map)

    path = os.fspath(path)
    config = read_json(os.path.join(path, CONFIG_FILE))
    tensors = load_tensors(os.path.join(path, TENSOR_FILE))
    rslora = all(getattr(layer, "rslora", False) for parts in groups.values() for layer in parts.values())
    dora = any(isinstance(layer, DoRALinear) for parts in groups.values() for layer in parts.values())
    alphas = {}
    for (i, module), parts in groups.items():
        prefix = f"base_model.model.transformer.h.{i}.{module}"
        A, B = tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"]
        first = parts[min(parts, key=FUSED.index)] if module == "attn.c_attn" else next(iter(parts.values()))
        R = A.shape[0]
        alpha = first.scaling * (math.sqrt(R) if rslora else R)  # export_peft scaled B to first.scaling
        alphas[f"h.{i}.{module}"] = int(alpha) if float(alpha).is_integer() else alpha
        if dora:
            tensors[f"{prefix}.lora_magnitude_vector"] = _magnitude(model, i, parts, module, A, B, first.scaling)
    first_alpha = next(iter(alphas.values()))
    config.update(lora_alpha=first_alpha, use_rslora=rslora, use_dora=dora,
                  alpha_pattern={n: a for n, a in alphas.items() if a != first_alpha})
    save_tensors(os.path.join(path, TENSOR_FILE), tensors, metadata={"format": "pt"})
    write_json_atomic(os.path.join(path, CONFIG_FILE), config)


def _magnitude(model, i: int, parts: dict, module: str, A, B, scaling: float):
    """PEFT's m (out,) for one module: DoRA's m where tinylora has DoRA, else ‖W0 + s B A‖ per row (m/n = 1)."""
    targets = FUSED if module == "attn.c_attn" else tuple(parts)
    parent = model.blocks[i].attn if module.startswith("attn") else model.blocks[i].mlp
    rows, start = [], 0
    for target in targets:
        layer = getattr(parent, target)
        if isinstance(layer, DoRALinear):
            m = to_host(layer.magnitude.data)
        else:  # plain LoRA rows, or rows without an adapter (B is 0 there)
            W0 = to_host(layer.base.weight.data if isinstance(layer, LoRALinear) else layer.weight.data)
            W = W0 + (B[start:start + W0.shape[0]] @ A) * scaling  # (rows, in) as PEFT will see them
            m = np.sqrt((W * W).sum(axis=1)).astype(W0.dtype)
        rows.append(m)
        start += m.shape[0]
    return np.concatenate(rows)
