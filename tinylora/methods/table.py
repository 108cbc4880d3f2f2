"""Every fine-tuning method by name: one row each, read by the CLI, the loaders, the benchmarks and the tests.

A row says, for one method:

    apply     apply(model, **settings): puts the method on a plain GPT (the method's own apply_* function)
    flags     {`tinylora finetune` flag (argparse dest): the setting it fills}; any other method flag is refused
    train     settings read while training only (training_hooks), not by apply
    settings  other keywords apply takes that no flag sets (FT^Top-n's n)
    lr        the peak learning rate when --lr is not given
    files     how the result is saved: "lora" (save_adapter, PEFT's layout), "method" (save_method_adapter,
              tinylora/methods/files.py), "model" (a whole model folder)
    folder    the folder `tinylora finetune` writes it to inside the run folder
    merge     None if `tinylora merge` can fold it into the base's weights, else why not
    serve     None if `tinylora serve` runs it per example in a mixed batch (tinylora/lora/mixed.py), else why not
    peft      None if export_peft / import_peft carry it exactly, else why not (export_method_peft: see `peft_via`)
    help      one line for `tinylora finetune --help`

Adding a method: its own file with `apply_<method>`, then one row here (and its tests and docs).

    model = apply_method(model, "dora", {"r": 4, "targets": ["q", "v"]})
    hooks = training_hooks(model, "dora", settings, lr=2e-3, total_steps=200)   # -> train(..., **hooks)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tinylora.lora.apply import apply_lora
from tinylora.methods.adalora import ORTH_REG_WEIGHT, RankAllocator, apply_adalora, orthogonal_regulariser
from tinylora.methods.bitfit import apply_bitfit
from tinylora.methods.bottleneck_adapters import apply_adapter_h, apply_adapter_l
from tinylora.methods.dora import apply_dora
from tinylora.methods.full_ft import apply_full_ft, apply_top_layers
from tinylora.methods.glora import apply_glora
from tinylora.methods.lora_fa import apply_lora_fa
from tinylora.methods.loraplus import DEFAULT_RATIO, loraplus_param_groups
from tinylora.methods.pissa import apply_olora, apply_pissa
from tinylora.methods.prefix import apply_prefix_embed, apply_prefix_layer
from tinylora.methods.rslora import apply_rslora
from tinylora.train.loop import (  # the measured defaults (README, 'Learning rates')
    FULL_LR,
    LORA_LR,
)


@dataclass(frozen=True)
class Method:
    apply: object
    flags: dict
    lr: float
    files: str
    help: str
    merge: str | None = None
    serve: str | None = None
    peft: str | None = None
    train: tuple = field(default=())
    settings: tuple = field(default=())
    folder: str = "adapter"


# the flags every LoRA-shaped method takes: flag -> apply's keyword
LORA_FLAGS = {"rank": "r", "alpha": "alpha", "targets": "targets", "layers": "layers", "lora_dropout": "dropout"}
RSLORA_FLAG = {"rslora": "rslora"}
ADALORA_FLAGS = {"target_r": "target_r", "tinit": "tinit", "tfinal": "tfinal", "delta_t": "delta_t",
                 "orth_reg_weight": "orth_reg_weight"}
QUANT_FLAGS = {"quantize": "quantize"}  # QLoRA: the base in NF4 (its own flags are checked with it)

_NOT_SERVED = "its per-example (mixed-batch) form is not implemented; serve one adapter with generate instead"
_NO_MERGE_ADDS = "it adds computation (modules or tokens) that no weight of the base can absorb"
_ONLY_LORA = "PEFT's LoRA format holds A and B only"

METHODS = {
    "lora": Method(apply_lora, {**LORA_FLAGS, **QUANT_FLAGS}, LORA_LR, "lora",
                   "LoRA: W0 + (alpha/r) B A (tinylora/lora/)"),
    "lora-fa": Method(apply_lora_fa, {**LORA_FLAGS, **QUANT_FLAGS}, LORA_LR, "lora",
                      "LoRA-FA: A frozen at init, only B trains"),
    "rslora": Method(apply_rslora, LORA_FLAGS, LORA_LR, "lora", "rsLoRA: scaling alpha/sqrt(r)"),
    # η_A = LoRA's rate / 4, so η_B = 16 η_A = 4x LoRA's (at LoRA's own rate, η_B = 16x diverges on the demo's
    # task; the LoRA+ README also lowers η_A): the setting benchmarks/lora_family.py measures
    "loraplus": Method(apply_lora, {**LORA_FLAGS, "loraplus_ratio": "ratio"}, LORA_LR / 4, "lora",
                       "LoRA+: B's learning rate ratio x A's", train=("ratio",)),
    "dora": Method(apply_dora, {**LORA_FLAGS, **RSLORA_FLAG}, LORA_LR, "method",
                   "DoRA: a trained magnitude m times the direction of W0 + sBA",
                   serve="DoRA renormalises W0's rows per adapter: " + _NOT_SERVED,
                   peft="DoRA's magnitude is not in export_peft's layout: use export_method_peft"),
    "pissa": Method(apply_pissa, {**LORA_FLAGS, **RSLORA_FLAG}, LORA_LR, "method",
                    "PiSSA: A, B from the SVD of W0; W0 becomes the residual",
                    serve="PiSSA changes the base weights (W_res): " + _NOT_SERVED + " (or pissa_to_lora)",
                    peft="the base weights are residuals: call pissa_to_lora first (PEFT's conversion)"),
    "olora": Method(apply_olora, {**LORA_FLAGS, **RSLORA_FLAG}, LORA_LR, "method",
                    "OLoRA: A, B from the QR of W0; W0 becomes the residual",
                    serve="OLoRA changes the base weights (W_res): " + _NOT_SERVED + " (or pissa_to_lora)",
                    peft="the base weights are residuals: call pissa_to_lora first (PEFT's conversion)"),
    "adalora": Method(apply_adalora, {**LORA_FLAGS, "rank": "init_r", **ADALORA_FLAGS}, LORA_LR, "method",
                      "AdaLoRA: P diag(lambda) Q with ranks pruned by importance",
                      serve="AdaLoRA's Lambda sits between A and B: " + _NOT_SERVED,
                      peft="PEFT's AdaLoRA is another adapter type (not LoRA); tinylora does not write it",
                      train=tuple(ADALORA_FLAGS)),
    "glora": Method(apply_glora, {"rank": "r", "targets": "targets", "layers": "layers", "glora_config": "config"},
                    LORA_LR, "method", "GLoRA: (W0 + W0*A + B)x + C W0 + D*b0 + E + b0",
                    serve="GLoRA is not LoRA-shaped: " + _NOT_SERVED,
                    peft="PEFT's GLoRA is another adapter type; merge it (tinylora merge) instead"),
    "full": Method(apply_full_ft, {}, FULL_LR, "model", "full fine-tuning: every weight trains", folder="model",
                   serve="the result is a whole model: serve it with --model", peft=_ONLY_LORA),
    "top2": Method(apply_top_layers, {}, FULL_LR, "method", "FT^Top2: the last two blocks train", settings=("n",),
                   serve="it replaces base weights: " + _NOT_SERVED, peft=_ONLY_LORA, folder="method"),
    "bitfit": Method(apply_bitfit, {}, 1.6e-2, "method", "BitFit: only the biases train",
                     serve="it replaces base biases: " + _NOT_SERVED, peft=_ONLY_LORA, folder="method"),
    "prefix-embed": Method(apply_prefix_embed, {"prefix_len": "prefix_len", "infix_len": "infix_len"}, 5e-3,
                           "method", "PreEmbed: trainable virtual-token embeddings", merge=_NO_MERGE_ADDS,
                           serve="virtual tokens change the sequence length: " + _NOT_SERVED, peft=_ONLY_LORA,
                           folder="method"),
    "prefix-layer": Method(apply_prefix_layer, {"prefix_len": "prefix_len", "infix_len": "infix_len"}, 1e-3,
                           "method", "PreLayer: trainable virtual-token activations in every block",
                           merge=_NO_MERGE_ADDS, serve="virtual tokens change the sequence length: " + _NOT_SERVED,
                           peft=_ONLY_LORA, folder="method"),
    "adapter-h": Method(apply_adapter_h, {"adapter_dim": "r", "layers": "layers"}, 1e-3, "method",
                        "Adapter^H: two bottleneck adapters per block", merge=_NO_MERGE_ADDS,
                        serve="bottleneck adapters are modules, not a low-rank branch: " + _NOT_SERVED,
                        peft=_ONLY_LORA, folder="method"),
    "adapter-l": Method(apply_adapter_l, {"adapter_dim": "r", "layers": "layers"}, 1e-3, "method",
                        "Adapter^L: one bottleneck adapter with a LayerNorm per block", merge=_NO_MERGE_ADDS,
                        serve="bottleneck adapters are modules, not a low-rank branch: " + _NOT_SERVED,
                        peft=_ONLY_LORA, folder="method"),
}
# the peak learning rates above, for the baselines: 2e-3 (an earlier LoRA default) times the ratio of their rate to
# LoRA's in the paper's GPT-3 runs (Table 12): starting points, not tuned

# every method flag of `tinylora finetune`, for the applicability check (the flags not in a method's row)
METHOD_FLAGS = sorted({flag for row in METHODS.values() for flag in row.flags})


def method_row(name: str) -> Method:
    """The row of `name`, or a one-line error listing the methods."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def apply_method(model, method: str, settings: dict):
    """Apply `method` with `settings` (its row's setting names; training-only ones are skipped). Returns `model`."""
    row = method_row(method)
    known = set(row.flags.values()) | set(row.train) | set(row.settings)
    unknown = sorted(set(settings) - known - {"quantize"})
    if unknown:
        raise ValueError(f"{method} takes the settings {sorted(known) or 'none'}; got also {unknown}")
    kwargs = {k: v for k, v in settings.items() if k not in row.train and k != "quantize" and v is not None}
    if "targets" in kwargs:
        kwargs["targets"] = tuple(kwargs["targets"])
    return row.apply(model, **kwargs)


def training_hooks(model, method: str, settings: dict, lr: float, total_steps: int, weight_decay: float = 0.0) -> dict:
    """The keyword arguments `tinylora.train.loop.train` needs for `method` ({} for most methods).

    loraplus: param_groups with B's learning rate ratio × lr (settings["ratio"], default 16).
    adalora:  extra_loss γ R(P, Q) (settings["orth_reg_weight"], default 0.5) and after_step = a
              RankAllocator's step (target_r 8, tinit 0, tfinal 0, delta_t 1 unless set); the allocator
              is returned too, under "allocator", for reading the rank allocation afterwards.
    """
    s = {k: v for k, v in settings.items() if v is not None}
    if method == "loraplus":
        return {"param_groups": loraplus_param_groups(model, lr, s.get("ratio", DEFAULT_RATIO), weight_decay)}
    if method == "adalora":
        allocator = RankAllocator(model, target_r=s.get("target_r", 8), total_step=total_steps,
                                  tinit=s.get("tinit", 0), tfinal=s.get("tfinal", 0), delta_t=s.get("delta_t", 1))
        gamma = s.get("orth_reg_weight", ORTH_REG_WEIGHT)
        if not (isinstance(gamma, (int, float)) and 0 <= gamma < float("inf")):  # False for NaN
            raise ValueError(f"adalora: orth_reg_weight must be a finite number >= 0, got {gamma!r}")
        return {"extra_loss": lambda m: orthogonal_regulariser(m) * gamma, "after_step": allocator.step,
                "allocator": allocator}
    return {}
