"""QLoRA: LoRA on a base model stored in 4-bit NormalFloat (Dettmers et al. 2023, arXiv 2305.14314).

    h = dequant(W0^NF4) x + (α/r) B A x        W0^NF4: 4-bit codes + constants (frozen);  A, B float32 (train)

    W0^NF4 ∈ {16 NF4 values}^{d×k} × per-64-block constants   tinylora.quant.nf4 (code book, packing, DQ)
    dequant(·) runs in every forward and again in backward     tinylora.quant.linear (NF4Linear, NF4Matmul)
    ∂L/∂x flows through the dequantized weight; ∂L/∂A, ∂L/∂B as in LoRA; W0 gets no gradient

|Θ| = r(d + k) per adapted matrix, as LoRA. Storage of a quantized matrix: 4 bits per value plus its
constants, 4.5 bits without double quantization, 4 + 8/64 + 32/(64·256) ≈ 4.127 bits with it. The token and
position embeddings (and the LM head tied to them) and the LayerNorms stay float32, as in the paper.

Defaults follow the paper's recipe (artidoro/qlora): NF4, double quantization on, blocks of 64 and 256,
bfloat16 compute, every Linear of every block quantized and adapted (q, k, v, o, fc, proj), LoRA r = 64,
α = 16 (pass them to `apply_lora`). The model's own optimizer state is not "paged": see `PAGED_NOTE`.

    model = quantize_model(GPT(config), "nf4", double_quant=True)   # every block Linear -> NF4Linear
    apply_lora(model, r=64, alpha=16, targets=ALL_LINEAR)           # float32 A, B around each NF4Linear
    ... train ...
    merge_qlora(model)                                              # in place: float Linears Ŵ + (α/r) B A

Reference: bitsandbytes' `quantize_4bit` / `dequantize_4bit` (tests/test_qlora.py compares codes, constants and
dequantized weights with it where it is installed).
"""

from __future__ import annotations

import warnings

from tinylora.lora.adapter_io import remember_base
from tinylora.lora.apply import TARGETS, all_or_nothing, lora_layers
from tinylora.quant.linear import NF4Linear
from tinylora.quant.nf4 import BLOCK_SIZE, DQ_BLOCK_SIZE, check_block_size

ALL_LINEAR = tuple(TARGETS)  # ("q", "k", "v", "o", "fc", "proj"): QLoRA adapts every Linear of a block
METHODS = ("nf4",)
PAGED_NOTE = (
    "paged optimizer state (QLoRA's paged AdamW) keeps the state in CUDA unified memory so that the driver can "
    "evict it to CPU RAM during a GPU memory spike; tinylora does not implement it (it would be untested "
    "without a GPU), and on the CPU there is nothing to page: the optimizer state already lives in host memory"
)


def quantize_model(model, method: str = "nf4", double_quant: bool = True, block_size: int = BLOCK_SIZE,
                   compute_dtype: str = "bfloat16", dq_block_size: int = DQ_BLOCK_SIZE, targets=ALL_LINEAR):
    """Replace the chosen Linear of every block by an NF4Linear (frozen, 4-bit). Returns `model`, changed in place.

    Apply LoRA afterwards (`apply_lora`): A and B are made in the dtype the weights had (float32).
    Errors: an unknown method, a model that is already quantized or already has LoRA, float64 weights,
    a block size that is not a power of two from 32 to 4096.
    """
    if method not in METHODS:
        raise ValueError(f"quantize_model: method must be one of {METHODS}, got {method!r}")
    check_block_size(block_size)
    check_block_size(dq_block_size, "dq_block_size")
    if any(isinstance(m, NF4Linear) for m in model.modules()):
        raise ValueError("quantize_model: the model is already quantized; quantizing NF4 values again would "
                         "compound the rounding (load the float model and quantize it once)")
    if any(True for _ in lora_layers(model)):
        raise ValueError("quantize_model: the model already has LoRA layers; quantize first, then apply_lora")
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"quantize_model: expected a GPT with .blocks, got {type(model).__name__}")
    with all_or_nothing(model):  # a refused layer leaves the model float, as it was
        remember_base(model)  # an adapter trained on the NF4 copy names the float base it came from
        model.quantization = {"method": method, "double_quant": double_quant, "block_size": block_size,
                              "compute_dtype": compute_dtype, "dq_block_size": dq_block_size,
                              "targets": list(targets)}  # recorded by save_adapter: what loading rebuilds
        for block in blocks:
            for t in targets:
                parent = getattr(block, TARGETS[t])
                linear = getattr(parent, t)
                setattr(parent, t, NF4Linear.from_linear(linear, block_size=block_size, double_quant=double_quant,
                                                         compute_dtype=compute_dtype, dq_block_size=dq_block_size))
    return model


def quantized_layers(model):
    """Yield (name, NF4Linear) for every quantized layer, inside LoRA layers or not."""
    for name, module in model.named_modules():
        if isinstance(module, NF4Linear):
            yield name, module


def weight_report(model) -> dict:
    """Bytes of what the model stores, split: 4-bit codes, quantization constants, float weights.

    Returns {"codes", "constants", "float", "total", "float32_total", "ratio", "bits_per_quantized_value"}:
    float32_total is what the same model takes with every weight in float32 (LoRA's A, B excluded from
    both), ratio = total / float32_total.
    """
    codes = constants = quantized_values = 0
    for _, layer in quantized_layers(model):
        q = layer.weight_nf4
        codes += q.code_bytes()
        constants += q.constant_bytes()
        quantized_values += q.numel
    lora = {id(p) for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)}
    float_bytes = sum(int(p.data.nbytes) for p in model.parameters() if id(p) not in lora)
    float_values = sum(p.size for p in model.parameters() if id(p) not in lora)
    total = codes + constants + float_bytes
    float32_total = 4 * (quantized_values + float_values)
    return {
        "codes": codes, "constants": constants, "float": float_bytes, "total": total,
        "float32_total": float32_total, "ratio": total / float32_total,
        "bits_per_quantized_value": 8 * (codes + constants) / quantized_values if quantized_values else None,
    }


def merge_qlora(model, requantize: bool = False):
    """Merge into dequantized copies: every adapted layer becomes an nn.Linear with W = Ŵ + (α/r) B A.

    Like `merge_and_unload`, this changes `model` in place and returns it: a plain float GPT. Ŵ is the
    dequantized weight the adapter was trained against, so the merged model computes what the QLoRA model
    computed (up to the compute dtype's rounding); quantized layers without LoRA become float Ŵ as well.
    requantize=True quantizes the merged weights to NF4 again (same block size and DQ) and warns with the error that adds, measured as the
    largest |W_merged - dequant(quant(W_merged))| over all layers.
    """
    merged = model
    worst = 0.0
    for name, layer in list(lora_layers(merged)):  # adapted layers: Ŵ + ΔW (or W0 + ΔW for a float base)
        if not isinstance(layer.base, NF4Linear):
            layer.merge()
            _replace(merged, name, layer.base)
            continue
        linear = layer.base.to_linear()
        if layer.enabled:
            linear.weight.data += layer.delta_weight()
        _replace(merged, name, linear)
        worst = max(worst, _requantize(merged, name, layer.base) if requantize else 0.0)
    for name, layer in list(quantized_layers(merged)):  # quantized layers without LoRA: Ŵ alone
        _replace(merged, name, layer.to_linear())
        worst = max(worst, _requantize(merged, name, layer) if requantize else 0.0)
    if not requantize:
        merged.quantization = None  # a float model now: float LoRA adapters load onto it
    if requantize:
        warnings.warn(f"merge_qlora: re-quantizing the merged weights to NF4 changes them by up to {worst:.3e} "
                      "(absolute, largest over all layers): the merged model no longer computes exactly what the "
                      "adapter was trained for; keep the float merge if that matters", stacklevel=2)
    return merged


def check_paged_optimizer(device_name: str) -> None:
    """Refuse a paged optimizer: on the CPU there is nothing to page, and the CUDA version is not implemented."""
    if device_name != "cuda":
        raise ValueError(f"--paged-optimizer is a GPU option and this run is on '{device_name}': {PAGED_NOTE}")
    raise NotImplementedError(PAGED_NOTE)


def _replace(model, name: str, module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _requantize(model, name: str, like: NF4Linear) -> float:
    """Quantize the float Linear at `name` as `like` was; return the largest absolute change it makes."""
    linear = model.get_submodule(name)
    q = like.weight_nf4
    again = NF4Linear.from_linear(linear, block_size=q.block_size, double_quant=q.double_quant,
                                  compute_dtype=like.compute_dtype, dq_block_size=q.dq_block_size)
    _replace(model, name, again)
    return float(abs(again.dequantized_weight() - linear.weight.data).max().item())
