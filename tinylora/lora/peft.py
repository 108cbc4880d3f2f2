"""Hugging Face PEFT interop: export tinylora's LoRA as a PEFT adapter, import a PEFT adapter exactly.

PEFT adapts the modules of HF's GPT-2, where q, k and v are one fused layer:

    tinylora                  PEFT on GPT2LMHeadModel            out × in
    blocks.{i}.attn.q, k, v   transformer.h.{i}.attn.c_attn      3C × C   rows [0, C) q, [C, 2C) k, [2C, 3C) v
    blocks.{i}.attn.o         transformer.h.{i}.attn.c_proj      C × C
    blocks.{i}.mlp.fc         transformer.h.{i}.mlp.c_fc         4C × C
    blocks.{i}.mlp.proj       transformer.h.{i}.mlp.c_proj       C × 4C

A PEFT adapter directory holds adapter_config.json (peft_type "LORA", r,
lora_alpha, target_modules, ...) and adapter_model.safetensors with, per module,

    base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight    A (R, in)
    base_model.model.transformer.h.{i}.attn.c_attn.lora_B.weight    B (out, R)

PEFT computes h = W0 x + (lora_alpha / r) B A x, the same formula as tinylora,
and stores A and B in the same layout. (`fan_in_fan_out: true` tells PEFT that
GPT-2's Conv1D keeps W0 as (in, out); it matters only when PEFT merges.)

Export, exactly: LoRA on q and v, each of rank r, is one c_attn LoRA of rank 2r,

    A' = [A_q; A_v]                                   (2r, C)
    B' = [B_q 0; 0 0; 0 B_v]   (q, k, v row blocks)   (3C, 2r)
    B' A' x = [B_q A_q x; 0; B_v A_v x]               with lora_alpha' = 2α, so α'/r' = α/r.

(Any subset of q, k, v works the same way.) LoRA on o, fc, proj maps one to one.
When q, k and v hold bitwise-equal A (as right after `import_peft`), the export
keeps one A: A' = A (R, C), B' = [B_q; B_k; B_v] (3C, R), rank R, not 3R.

Import, exactly: a c_attn LoRA (A, B) of rank R becomes LoRA on q, k and v, each
of rank R, with B_q, B_k, B_v the three row blocks of B (row block t of B A x is
B_t A x) and each with its own copy of A. The copies are equal at import, so the
function is PEFT's exactly, and exporting again gives back the rank-R c_attn
LoRA. They are three Parameters, not one: training after the import updates each
copy by its own gradient, so they drift apart (the model is then a q, k, v LoRA
with three A, of total rank up to 3R), and an export after that is the exact
rank-3R c_attn LoRA above.

This is host-side file code: A and B are copied to NumPy arrays.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from tinylora.engine.backend import move, to_host
from tinylora.errors import MissingNameError
from tinylora.io import FileFormatError, load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora.adapter_io import _LORA_NAME
from tinylora.lora.apply import TARGETS, _bias_params, all_or_nothing, apply_lora, lora_layers
from tinylora.lora.layer import LoRALinear

CONFIG_FILE, TENSOR_FILE = "adapter_config.json", "adapter_model.safetensors"
HF_MODULE = {"q": "attn.c_attn", "k": "attn.c_attn", "v": "attn.c_attn", "o": "attn.c_proj",
             "fc": "mlp.c_fc", "proj": "mlp.c_proj"}
FUSED = ("q", "k", "v")  # the row blocks of c_attn, in order
_SINGLE = {"attn.c_proj": "o", "mlp.c_fc": "fc", "mlp.c_proj": "proj"}
# PEFT initialisations that leave the base weights as they are (the others change them: PiSSA, OLoRA, ...)
PLAIN_INITS = (True, False, "gaussian", "orthogonal", "eva")
_KEY = re.compile(r"base_model\.model\.(?:transformer\.)?h\.(\d+)\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                  r"\.lora_([AB])\.weight")


def _tensor_key(i: int, module: str, ab: str) -> str:
    return f"base_model.model.transformer.h.{i}.{module}.lora_{ab}.weight"


# ------------------------------------------------------------------ export
def _fuse(parts: list, C: int) -> tuple:
    """LoRA on a subset of q, k, v -> one c_attn LoRA (A', B', α') computing the same update.

    Each part t keeps its own scaling s_t (α_t / r_t, or rsLoRA's α_t / √r_t): B' carries
    B_t · s_t / s_0 (a factor of exactly 1 when all parts share r and α), and α' = s_0 R
    gives PEFT the scaling s_0 = α'/R. If every part's A is the same array, A' is
    that A and R = r_0 (the B_t share its columns); else A' stacks them, R = Σ r_t.
    """
    parts = sorted(parts, key=lambda part: FUSED.index(part[0]))
    first = parts[0][1]
    As = [to_host(layer.lora_A.data) for _, layer in parts]
    one_A = all(a.shape == As[0].shape and np.array_equal(a, As[0]) for a in As)  # e.g. just imported
    R = first.r if one_A else sum(layer.r for _, layer in parts)
    A = As[0] if one_A else np.concatenate(As)  # (R, C)
    B = np.zeros((3 * C, R), dtype=A.dtype)  # (3C, R): rows of k stay 0 if k has no LoRA
    col = 0
    for target, layer in parts:
        row = FUSED.index(target) * C
        B[row:row + C, col:col + layer.r] = to_host(layer.lora_B.data) * (layer.scaling / first.scaling)
        col += 0 if one_A else layer.r
    return A, B, first.scaling * R


def export_peft(model, path) -> None:
    """Write `model`'s LoRA as a PEFT adapter that `peft.PeftModel.from_pretrained` loads onto HF's GPT-2.

    The HF model must hold the same base weights (e.g. the directory the GPT
    came from, or one written by `tinylora.model.hf_gpt2.save_gpt2`). Only A and B are
    exported: a model whose biases train is refused (save_adapter keeps them). Each
    module's lora_alpha is s R (PEFT's s = lora_alpha / R), so any scaling, rsLoRA's
    α/√r included, is written exactly. A LoRA variant (DoRA, PiSSA, AdaLoRA, ...) is
    refused: PEFT would load it as plain LoRA and compute another function
    (tinylora.methods.export_method_peft writes DoRA; pissa_to_lora converts PiSSA).
    """
    for name, layer in lora_layers(model):
        if type(layer) is not LoRALinear:
            raise ValueError(f"export_peft: '{name}' is a {type(layer).__name__}, which PEFT's plain LoRA format "
                             "cannot carry (it would load as another function): use "
                             "tinylora.methods.export_method_peft for DoRA, pissa_to_lora first for PiSSA/OLoRA")
    write_peft(model, path)


def write_peft(model, path) -> None:
    """export_peft without its check of the layer types: A, B and scalings of every LoRA-like layer (for
    tinylora.methods.export_method_peft, which adds what DoRA needs)."""
    C = model.config.n_embd
    groups = {}  # (layer, HF module) -> [(target, LoRALinear)]
    for name, layer in lora_layers(model):
        match = _LORA_NAME.fullmatch(name)
        if match is None or match.group(2) not in HF_MODULE:
            raise ValueError(f"export_peft: LoRA layer '{name}' has no counterpart in HF's GPT-2")
        i, target = int(match.group(1)), match.group(2)
        groups.setdefault((i, HF_MODULE[target]), []).append((target, layer))
    if not groups:
        raise ValueError("export_peft: the model has no LoRA layers (call apply_lora first)")
    trained = {id(p) for p in _bias_params(model, "all") if p.requires_grad}
    biases = [n for n, p in model.named_parameters() if id(p) in trained]
    if biases:
        raise ValueError(f"export_peft: biases train ({biases[:3]}...), but only A and B are exported; use "
                         "save_adapter, or merge_lora and tinylora.model.hf_gpt2.save_gpt2 for a full model")
    dropouts = {layer.lora_dropout.p for parts in groups.values() for _, layer in parts}
    if len(dropouts) > 1:
        raise ValueError(f"export_peft: LoRA layers use different dropouts {sorted(dropouts)}; PEFT has one")

    tensors, ranks, alphas = {}, {}, {}
    for (i, module), parts in groups.items():
        if module == "attn.c_attn":
            A, B, alpha = _fuse(parts, C)
        else:
            layer = parts[0][1]
            A, B, alpha = to_host(layer.lora_A.data), to_host(layer.lora_B.data), layer.scaling * layer.r
        tensors[_tensor_key(i, module, "A")], tensors[_tensor_key(i, module, "B")] = A, B
        name = f"h.{i}.{module}"  # matches transformer.h.{i}.{module} and nothing else
        ranks[name], alphas[name] = A.shape[0], (int(alpha) if float(alpha).is_integer() else alpha)

    first = next(iter(ranks))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "r": ranks[first],
        "lora_alpha": alphas[first],
        "target_modules": list(ranks),
        "rank_pattern": {n: r for n, r in ranks.items() if r != ranks[first]},
        "alpha_pattern": {n: a for n, a in alphas.items() if a != alphas[first]},
        "lora_dropout": dropouts.pop(),
        "fan_in_fan_out": True,  # GPT-2's Conv1D stores W0 as (in, out)
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
    }
    path = os.fspath(path)
    save_tensors(os.path.join(path, TENSOR_FILE), tensors, metadata={"format": "pt"})
    write_json_atomic(os.path.join(path, CONFIG_FILE), config)


# ------------------------------------------------------------------ import
def _pattern_value(patterns: dict, module_name: str, default):
    """PEFT's rule for rank_pattern / alpha_pattern: the first key k with module_name matching (.*\\.)?(k)$."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default


def _read_peft(path) -> tuple:
    """(config, {(layer, HF module): {"A": array, "B": array}}, tensor file) of a PEFT LoRA adapter, keys checked."""
    path = os.fspath(path)
    config_path, tensor_path = os.path.join(path, CONFIG_FILE), os.path.join(path, TENSOR_FILE)
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise FileFormatError(f"{config_path}: expected a JSON object, got a {type(config).__name__}")
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{config_path}: peft_type is {config.get('peft_type')!r}; import_peft reads LoRA adapters only")
    r, dropout = config.get("r", 8), config.get("lora_dropout", 0.0)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise FileFormatError(f"{config_path}: 'r' must be a positive int, got {r!r}")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise FileFormatError(f"{config_path}: 'lora_dropout' must be a number in [0, 1), got {dropout!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key) and not isinstance(config[key], dict):
            raise FileFormatError(f"{config_path}: '{key}' must be an object {{module pattern: value}}, "
                                  f"got {config[key]!r}")
    unsupported = [k for k in ("use_dora", "lora_bias") if config.get(k)]
    if unsupported:
        raise ValueError(f"{config_path}: {unsupported} change LoRA's formula; tinylora cannot import them")
    init = config.get("init_lora_weights", True)
    if init not in PLAIN_INITS:  # pissa, olora, corda, loftq, ...: PEFT changed the base weights too
        raise ValueError(f"{config_path}: init_lora_weights={init!r} means PEFT replaced the base weights by a "
                         "residual, which this file does not hold; save it from PEFT with "
                         "path_initial_model_for_weight_conversion (a plain LoRA for the original base)")
    groups = {}
    for key, value in load_tensors(tensor_path).items():
        match = _KEY.fullmatch(key)
        if match is None:
            raise ValueError(f"{tensor_path}: '{key}' is not a LoRA A or B of a GPT-2 attention or MLP layer "
                             "(biases, embeddings and modules_to_save cannot be imported)")
        i, module, ab = int(match.group(1)), match.group(2), match.group(3)
        groups.setdefault((i, module), {})[ab] = value
    for (i, module), pair in groups.items():
        if set(pair) != {"A", "B"}:
            raise MissingNameError(f"{tensor_path}: h.{i}.{module} has lora_{''.join(pair)} but not both lora_A and lora_B")
    return config, groups, tensor_path


def import_peft(model, path):
    """Add a PEFT LoRA adapter for HF's GPT-2 to `model` (a GPT without LoRA on those layers). Returns `model`.

    A c_attn LoRA of rank R becomes LoRA on q, k and v, each of rank R, each with
    its own copy of the one A (equal now; training moves them apart, see the module
    docstring); c_proj, c_fc, mlp.c_proj become o, fc, proj. The scaling is
    kept: tinylora's α is PEFT's lora_alpha (times sqrt(R) under use_rslora,
    whose scaling is α / sqrt(R)). Everything is checked before the model changes,
    and a failure leaves it exactly as it was.
    """
    config, groups, tensor_path = _read_peft(path)
    C, n_layer = model.config.n_embd, len(model.blocks)
    sizes = {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}
    has_lora = {name for name, _ in lora_layers(model)}
    plan = []  # (layer, HF module, A, B, tinylora's alpha, tinylora targets)
    for (i, module), pair in sorted(groups.items()):
        A, B = pair["A"], pair["B"]
        R = A.shape[0]
        k, d = sizes[module]  # in, out
        if not i < n_layer:
            raise ValueError(f"{tensor_path}: the adapter adapts block {i}, but the model has {n_layer} blocks")
        if A.shape != (R, k) or B.shape != (d, R):
            raise ValueError(f"{tensor_path}: h.{i}.{module} has A {A.shape} and B {B.shape}, but a model with "
                             f"n_embd={C} needs A ({R}, {k}) and B ({d}, {R})")
        hf_name = f"transformer.h.{i}.{module}"
        r_config = _pattern_value(config.get("rank_pattern"), hf_name, config.get("r", 8))  # 8: PEFT's default
        if r_config != R:
            raise ValueError(f"{tensor_path}: h.{i}.{module} has rank {R} in the file but r={r_config} in the config")
        alpha = _pattern_value(config.get("alpha_pattern"), hf_name, config.get("lora_alpha", 8))
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not (math.isfinite(alpha) and alpha > 0):
            raise FileFormatError(f"{tensor_path}: lora_alpha for h.{i}.{module} must be a positive number, "
                                  f"got {alpha!r} (adapter_config.json)")
        if not (np.isfinite(A).all() and np.isfinite(B).all()):
            raise ValueError(f"{tensor_path}: h.{i}.{module} holds NaN or inf in lora_A or lora_B")
        if config.get("use_rslora"):
            alpha = alpha * math.sqrt(R)  # PEFT's scaling α / sqrt(R) = tinylora's (α sqrt(R)) / R
        targets = FUSED if module == "attn.c_attn" else (_SINGLE[module],)
        taken = [f"blocks.{i}.{TARGETS[t]}.{t}" for t in targets]
        if has_lora.intersection(taken):
            raise ValueError(f"import_peft: {sorted(has_lora.intersection(taken))} already have LoRA; "
                             "import into a model without LoRA on those layers")
        plan.append((i, module, A, B, alpha, targets))

    with all_or_nothing(model):
        for i, module, A, B, alpha, targets in plan:
            apply_lora(model, r=A.shape[0], alpha=alpha, targets=targets, layers=[i],
                       dropout=config.get("lora_dropout", 0.0))
            parent = model.blocks[i].attn if module.startswith("attn") else model.blocks[i].mlp
            for row, t in enumerate(targets):  # c_attn: row block 0, 1, 2 = q, k, v
                layer = getattr(parent, t)
                rows = slice(row * C, (row + 1) * C) if module == "attn.c_attn" else slice(None)
                layer.lora_A.data[...] = move(A.astype(layer.lora_A.dtype), layer.lora_A.device)  # (R, in), a copy
                layer.lora_B.data[...] = move(B[rows].astype(layer.lora_B.dtype), layer.lora_B.device)  # (out, R)
    return model
