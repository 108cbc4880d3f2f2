"""GLoRA: generalised LoRA (Chavan et al. 2023, "One-for-All", arXiv 2306.07967, eq. 10).

    f(x) = (W0 + W0 ⊙ A + B) x + C W0 + D ⊙ b0 + E + b0

five support tensors around a frozen Linear (W0 (d, k), b0 (d,)), each of one of a few kinds per layer:

    A  scales the weight     W0 ⊙ A     A (d, k) from:  "lora" A_d A_u ((d, r)(r, k)), "vector" (d, 1), "scalar", "none"
    B  shifts the weight     + B        B (d, k) from:  "lora", "vector" (d, 1), "scalar", "none"
    C  a layer-wise prompt   W0 C       C (k, 1) from:  "lora" C_d C_u ((k, r)(r, 1)), "vector" (k, 1), "none"
    D  scales the bias       D ⊙ b0     D (d,)   from:  "vector", "scalar", "none"
    E  shifts the bias       + E        E (d,)   from:  "vector", "scalar", "none"

(the product with A is element-wise, as in the authors' code and PEFT; "vector" for A and B is one value
per output row, broadcast over the row.) |Θ| per kind: lora r(d + k) (C: r(k + 1)), vector d (C: k),
scalar 1, none 0. Every support enters linearly, so after training

    W = W0 + W0 ⊙ A + B,      b = b0 + D ⊙ b0 + E + W0 C

replace W0, b0 (`merge`): inference then costs exactly the base Linear (structural re-parameterisation).
`unmerge` inverts it: W0 = (W − B) / (1 + A), b0 = (b − E − W0 C) / (1 + D), refused where 1 + A or
1 + D is 0. Init as PEFT: the first ("down") factor of each low-rank support 0, the second kaiming-uniform
(a = √5), vectors and scalars 0, so the layer equals the base at init. C, D, E need the base bias (as PEFT).
Defaults (PEFT's): A, B "lora", C "lora", D, E "scalar", r = 4 (the paper's rank) — one config for all
layers unless `configs` names per-layer ones. The paper's evolutionary search over per-layer configs
(supernet + search) is not implemented here. Checked against its own known answers and against PEFT's
`tuners/glora` on an nn.Linear (tests/test_methods_glora.py: outputs and merged weights equal in float64).
PEFT's is the same method with two differences: A and B share one kind, and D and E another (here each
support has its own), and it adapts nn.Linear only (not GPT-2's Conv1D, so no GPT-2 adapter is exchanged).

GLoRA is not LoRA-shaped (five supports, four kinds), so GLoRALinear wraps the Linear itself rather
than subclass LoRALinear; it has the same interface: merge, unmerge, enabled, adapter_parameters.
"""

from __future__ import annotations

import math

from tinylora import functional as F
from tinylora import nn
from tinylora.engine.tensor import zeros
from tinylora.lora.adapter_io import remember_base
from tinylora.lora.apply import TARGETS, _check_layers, _check_targets, all_or_nothing

KINDS = {"A": ("lora", "vector", "scalar", "none"), "B": ("lora", "vector", "scalar", "none"),
         "C": ("lora", "vector", "none"), "D": ("vector", "scalar", "none"), "E": ("vector", "scalar", "none")}
DEFAULT_CONFIG = {"A": "lora", "B": "lora", "C": "lora", "D": "scalar", "E": "scalar"}


class GLoRALinear(nn.Module):
    """A frozen nn.Linear with GLoRA's supports A..E (kinds in `config`, rank r for the "lora" kinds)."""

    def __init__(self, base: nn.Linear, r: int = 4, config: dict | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"GLoRALinear wraps an nn.Linear, got {type(base).__name__}")
        config = {**DEFAULT_CONFIG, **(config or {})}
        for name, kind in config.items():
            if name not in KINDS or kind not in KINDS[name]:
                allowed = KINDS.get(name, "none: supports are A, B, C, D, E")
                raise ValueError(f"GLoRALinear: support {name} cannot be {kind!r}; allowed: {allowed}")
        if base.bias is None and any(config[s] != "none" for s in "CDE"):
            raise ValueError("GLoRALinear: C, D and E act on the bias, but this Linear has none; set them to 'none'")
        d, k = base.out_features, base.in_features
        if not 1 <= r <= min(d, k):
            raise ValueError(f"GLoRALinear: rank r={r} must satisfy 1 <= r <= min(d, k) = {min(d, k)}")
        self.base, self.r, self.config = base, int(r), config
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        device, dtype = base.weight.device, base.weight.dtype
        rows = {"A": d, "B": d, "C": k, "D": d, "E": d}  # the length of each support's "vector"
        cols = {"A": k, "B": k, "C": 1}  # the width of the low-rank supports
        for name, kind in config.items():
            if kind == "lora":
                down = nn.Parameter(zeros(rows[name], r, device=device, dtype=dtype))  # (rows, r), 0
                up = nn.Parameter(zeros(r, cols[name], device=device, dtype=dtype))  # (r, cols)
                nn.init.kaiming_uniform_(up, a=math.sqrt(5))
                setattr(self, f"{name}_down", down)
                setattr(self, f"{name}_up", up)
            elif kind == "vector":
                shape = (rows[name], 1) if name in "ABC" else (rows[name],)
                setattr(self, name, nn.Parameter(zeros(*shape, device=device, dtype=dtype)))
            elif kind == "scalar":
                setattr(self, name, nn.Parameter(zeros(1, device=device, dtype=dtype)))
        self.merged, self.enabled = False, True

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def adapter_parameters(self) -> list:
        return [p for name, p in self._parameters.items()]

    def support(self, name: str):
        """Support `name` as a Tensor in the graph (A, B: (d, k), (d, 1) or (1,); C: (k, 1); D, E: (d,) or (1,)),
        or None for "none"."""
        kind = self.config[name]
        if kind == "none":
            return None
        if kind == "lora":
            return getattr(self, f"{name}_down") @ getattr(self, f"{name}_up")
        return getattr(self, name)

    def effective(self):
        """(W, b) = (W0 + W0 ⊙ A + B, b0 + D ⊙ b0 + E + W0 C) as graph Tensors (b None without a bias)."""
        W0, b0 = self.base.weight, self.base.bias
        A, B, C, D, E = (self.support(name) for name in "ABCDE")
        W = W0 if A is None else W0 + W0 * A  # (d, k)
        if B is not None:
            W = W + B
        if b0 is None:
            return W, None
        b = b0 if D is None else b0 + b0 * D  # (d,)
        if E is not None:
            b = b + E
        if C is not None:
            b = b + (W0 @ C).reshape(-1)  # (d, k)(k, 1) -> (d,)
        return W, b

    def forward(self, x):
        if self.merged or not self.enabled:
            return self.base(x)
        W, b = self.effective()
        return F.linear(x, W, b)  # (..., k) -> (..., d)

    # ------------------------------------------------------------ merging
    def merge(self) -> "GLoRALinear":
        """W0 <- W0 + W0 ⊙ A + B and b0 <- b0 + D ⊙ b0 + E + W0 C, in place. Does nothing if merged."""
        if not self.enabled:
            raise RuntimeError("GLoRALinear: cannot merge a disabled adapter; call enable() first")
        if not self.merged:
            W, b = self.effective()
            self.base.weight.data[...] = W.data
            if b is not None:
                self.base.bias.data[...] = b.data
            self.merged = True
        return self

    def unmerge(self) -> "GLoRALinear":
        """W0 = (W − B)/(1 + A), b0 = (b − E − W0 C)/(1 + D). Refused where 1 + A or 1 + D is 0."""
        if not self.merged:
            return self
        xp = self.base.weight.device.xp
        A, B, C, D, E = (None if self.support(n) is None else self.support(n).data for n in "ABCDE")
        one_plus_A = 1.0 + (A if A is not None else 0.0)
        one_plus_D = 1.0 + (D if D is not None else 0.0)
        if xp.any(xp.asarray(one_plus_A) == 0).item() or xp.any(xp.asarray(one_plus_D) == 0).item():
            raise ValueError("GLoRALinear: 1 + A or 1 + D is 0 somewhere, so W0, b0 cannot be recovered")
        W = self.base.weight.data - (B if B is not None else 0.0)
        self.base.weight.data[...] = W / one_plus_A
        if self.base.bias is not None:
            b = self.base.bias.data - (E if E is not None else 0.0)
            if C is not None:
                b = b - (self.base.weight.data @ C).reshape(-1)
            self.base.bias.data[...] = b / one_plus_D
        self.merged = False
        return self

    def disable(self) -> "GLoRALinear":
        self.unmerge()
        self.enabled = False
        return self

    def enable(self) -> "GLoRALinear":
        self.enabled = True
        return self

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{n}={k}" for n, k in self.config.items())
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, {kinds}, "
                f"merged={self.merged}")


def parameter_count(d: int, k: int, r: int, config: dict) -> int:
    """|Θ| of one GLoRALinear from the formula in the module docstring."""
    config = {**DEFAULT_CONFIG, **config}
    per_kind = {"A": {"lora": r * (d + k), "vector": d}, "B": {"lora": r * (d + k), "vector": d},
                "C": {"lora": r * (k + 1), "vector": k}, "D": {"vector": d}, "E": {"vector": d}}
    return sum(per_kind[n].get(kind, 1 if kind == "scalar" else 0) for n, kind in config.items())


def glora_layers(model):
    """Yield (name, GLoRALinear) for every GLoRA layer in `model`."""
    for name, module in model.named_modules():
        if isinstance(module, GLoRALinear):
            yield name, module


def apply_glora(model, r: int = 4, targets=("q", "v"), layers=None, config: dict | None = None, configs=None):
    """Wrap each target Linear in a GLoRALinear and train only the supports. Returns `model`.

    config:  the kinds for every layer (default DEFAULT_CONFIG);
    configs: optional {module name, e.g. "blocks.0.attn.q": kinds} overriding `config` per layer
             (what the paper's search would choose).
    """
    targets = _check_targets(targets)
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise TypeError(f"apply_glora: expected a GPT with .blocks, got {type(model).__name__}")
    configs = dict(configs or {})
    places = [(i, t) for i in _check_layers(layers, len(blocks)) for t in targets]
    unknown = sorted(set(configs) - {f"blocks.{i}.{TARGETS[t]}.{t}" for i, t in places})
    if unknown:
        raise ValueError(f"apply_glora: configs name modules that are not adapted: {unknown}")
    for i, t in places:
        linear = getattr(getattr(blocks[i], TARGETS[t]), t)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"apply_glora: blocks.{i}.{TARGETS[t]}.{t} already has an adapter "
                             f"({type(linear).__name__})")
    with all_or_nothing(model):  # a refused layer (a rank too large, C..E without a bias) leaves the model as it was
        remember_base(model)
        for i, t in places:
            parent = getattr(blocks[i], TARGETS[t])
            name = f"blocks.{i}.{TARGETS[t]}.{t}"
            setattr(parent, t, GLoRALinear(getattr(parent, t), r, {**(config or {}), **configs.get(name, {})}))
        train = {id(p) for _, layer in glora_layers(model) for p in layer.adapter_parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in train)
    return model


def merge_and_unload_glora(model):
    """Merge every GLoRA layer and put its plain Linear back: the model costs what the base costs. Returns `model`."""
    for name, layer in list(glora_layers(model)):
        layer.enable()
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)
    return model
