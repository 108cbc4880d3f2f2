"""AdaLoRA: adaptive budget allocation by importance (Zhang et al., ICLR 2023, arXiv 2303.10512).

    W = W0 + s P Λ Q          h = W0 x + s P (Λ (Q x))

an SVD-shaped update whose singular values are pruned during training, so the rank moves to the
matrices that need it:

    Q ∈ R^{r×k}   lora_A   "right singular vectors"   N(0, 0.02²) at init (PEFT and the original code)
    Λ ∈ R^{r}     lora_E   the singular values          0 at init: ΔW = 0, the model is unchanged
    P ∈ R^{d×r}   lora_B   "left singular vectors"     N(0, 0.02²) at init
    s = α / r     as LoRALinear (α = r, s = 1 by default; PEFT uses lora_alpha / (init_r + 1e-5))

|Θ| = r(d + k) + r per adapted d×k weight at the initial rank r = init_r.

Training adds an orthogonality regulariser to the loss so P, Q stay near-orthonormal,

    R(P, Q) = ‖PᵀP − I‖_F + ‖QQᵀ − I‖_F      averaged over all P and Q matrices, weight γ

This is PEFT's form (NON-squared Frobenius norms, mean over matrices, γ = orth_reg_weight = 0.5); the
paper writes squared norms (`squared=True` here) and the original code uses γ = 0.1.

Importance, for every entry w of P, Λ, Q after each backward (β1 = β2 = 0.85):

    I = |w · ∂L/∂w|,   Ī ← β1 Ī + (1 − β1) I,   Ū ← β2 Ū + (1 − β2) |I − Ī|,   score = Ī · Ū

(Ū uses the Ī just updated, as PEFT does.) Triplet i of a layer scores S_i = score(λ_i) +
mean_j score(Q_ij) + mean_j score(P_ji). Budget b(t), the number of λ kept over all layers, follows
the cubic schedule from b0 = Σ init_r to bT = target_r × #layers:

    t ≤ tinit:                    b = b0, no masking
    tinit < t ≤ T − tfinal:       b = int(bT + (b0 − bT)(1 − (t − tinit)/(T − tfinal − tinit))³), mask when t % ΔT == 0
    t > T − tfinal:               b = bT, the rank pattern fixed at t = T − tfinal re-applied every step

Masking sets λ_i = 0 for the b0 − b lowest-scoring triplets (score ≤ the (b0 − b)-th smallest); P and
Q are kept and still train, so a pruned triplet can come back before the final phase.
Call order: loss.backward(); optimizer.step(); allocator.step(t) (needs the gradients); zero_grad.
Checked against PEFT's AdaLoraConfig (tests/test_methods_peft.py).
"""

from __future__ import annotations

import numbers

import numpy as np  # the allocator's checkpoint state is host arrays

from tinylora import functional as F
from tinylora import nn
from tinylora.engine.backend import move, to_host
from tinylora.engine.tensor import Tensor, zeros
from tinylora.lora.apply import lora_layers
from tinylora.lora.layer import LoRALinear
from tinylora.methods.wrap import wrap_linears

BETA1 = BETA2 = 0.85
ORTH_REG_WEIGHT = 0.5  # PEFT's default γ (the original code: 0.1)


class AdaLoRALinear(LoRALinear):
    """A LoRALinear with a diagonal Λ between B (= P) and A (= Q): h = W0 x + s P diag(λ) Q x.

    Args: base, r (the initial rank, init_r), alpha, dropout as LoRALinear.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0):
        super().__init__(base, r, alpha=alpha, dropout=dropout)
        self.init = "adalora"
        self.lora_E = nn.Parameter(zeros(r, device=base.weight.device, dtype=base.weight.dtype))  # (r,) Λ = 0

    def adapter_parameters(self) -> list:
        return [self.lora_A, self.lora_B, self.lora_E]

    def reset_lora_parameters(self) -> None:
        """P, Q ~ N(0, 0.02²), Λ = 0."""
        if self.merged:
            raise RuntimeError("AdaLoRALinear: unmerge before resetting P, Λ, Q")
        nn.init.normal_(self.lora_A, 0.0, 0.02)
        nn.init.normal_(self.lora_B, 0.0, 0.02)
        if hasattr(self, "lora_E"):
            nn.init.zeros_(self.lora_E)

    def forward(self, x):
        h = self.base(x)  # (..., d)
        if self.merged or not self.enabled:
            return h
        z = F.linear(self.lora_dropout(x), self.lora_A) * self.lora_E  # (..., r): Λ Q x
        return h + F.linear(z * self.scaling, self.lora_B)  # (..., d): + s P Λ Q x

    def delta_weight(self):
        """ΔW = s P diag(λ) Q as a raw array (d, k)."""
        return ((self.lora_B.data * self.lora_E.data) @ self.lora_A.data) * self.scaling

    def rank(self) -> int:
        """How many λ are nonzero now (the triplets that contribute)."""
        return int((self.lora_E.data != 0).sum().item())


def adalora_layers(model):
    """[(name, AdaLoRALinear)] of `model`, in module order."""
    return [(name, layer) for name, layer in lora_layers(model) if isinstance(layer, AdaLoRALinear)]


def apply_adalora(model, init_r: int = 12, alpha: float | None = None, targets=("q", "v"), layers=None,
                  dropout: float = 0.0):
    """Put an AdaLoRALinear of rank init_r on each target Linear. Returns `model`; then make a RankAllocator."""
    return wrap_linears(model, lambda linear: AdaLoRALinear(linear, init_r, alpha=alpha, dropout=dropout),
                        targets=targets, layers=layers, who="apply_adalora")


def orthogonal_regulariser(model, squared: bool = False):
    """R = mean over every P and Q of ‖PᵀP − I‖_F and ‖QQᵀ − I‖_F (squared norms if `squared`): a Tensor."""
    terms = []
    for _, layer in adalora_layers(model):
        for gram in (layer.lora_B.T @ layer.lora_B, layer.lora_A @ layer.lora_A.T):  # (r, r) each
            eye = Tensor(gram.device.xp.eye(gram.shape[0], dtype=gram.dtype))
            square = ((gram - eye) ** 2).sum()
            terms.append(square if squared else square.sqrt())
    if not terms:
        raise ValueError("orthogonal_regulariser: the model has no AdaLoRA layers (call apply_adalora first)")
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total * (1.0 / len(terms))


def budget_schedule(step: int, init_budget: int, target_budget: int, total_step: int, tinit: int = 0,
                    tfinal: int = 0, delta_t: int = 1) -> tuple:
    """(b(t), mask now?) of the cubic schedule in the module docstring."""
    if step <= tinit:
        return init_budget, False
    if step > total_step - tfinal:
        return target_budget, True
    progress = (step - tinit) / (total_step - tfinal - tinit)
    budget = int((init_budget - target_budget) * (1 - progress) ** 3 + target_budget)
    return budget, step % delta_t == 0


class RankAllocator:
    """Tracks importance and masks Λ to the budget; `step(t)` after every optimizer step.

    Args:
        model:      a model with AdaLoRA layers (apply_adalora).
        target_r:   the average rank to end with (bT = target_r × #layers). PEFT's default 8.
        total_step: T, the number of training steps (required, as in PEFT).
        tinit, tfinal, delta_t: the schedule's warm-up, final phase and masking interval (PEFT: 0, 0, 1).
        beta1, beta2: the EMA factors (0.85, 0.85).
    Attributes: budget (the current b), rank_pattern ({layer name: [bool] * r}, None before any mask).
    state_dict() / load_state_dict(): Ī, Ū, b and the pattern as arrays, which every training checkpoint
    keeps (tinylora.train.checkpoint), so that a resumed run prunes exactly as an uninterrupted one.
    """

    def __init__(self, model, target_r: int = 8, total_step: int | None = None, tinit: int = 0, tfinal: int = 0,
                 delta_t: int = 1, beta1: float = BETA1, beta2: float = BETA2):
        self.layers = adalora_layers(model)
        if not self.layers:
            raise ValueError("RankAllocator: the model has no AdaLoRA layers (call apply_adalora first)")
        init_r = min(layer.r for _, layer in self.layers)
        wrong = [f"{name} must be an integer >= {low}, got {value!r}"
                 for name, value, low in (("total_step", total_step, 1), ("tinit", tinit, 0), ("tfinal", tfinal, 0),
                                          ("delta_t", delta_t, 1), ("target_r", target_r, 1))
                 if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low)]
        wrong += [f"{name} must be in (0, 1), got {value!r}" for name, value in (("beta1", beta1), ("beta2", beta2))
                  if not (isinstance(value, numbers.Real) and 0 < value < 1)]  # False for NaN too
        if not wrong and target_r > init_r:
            wrong.append(f"target_r={target_r} must be at most the initial rank {init_r}")
        if not wrong and not tinit < total_step - tfinal:
            wrong.append(f"need tinit < total_step - tfinal, got tinit={tinit}, total_step={total_step}, "
                         f"tfinal={tfinal}: no step would prune")
        if wrong:
            raise ValueError("RankAllocator: " + "; ".join(wrong))
        self.init_budget = sum(layer.r for _, layer in self.layers)
        self.target_budget = target_r * len(self.layers)
        self.total_step, self.tinit, self.tfinal, self.delta_t = total_step, tinit, tfinal, delta_t
        self.beta1, self.beta2 = beta1, beta2
        self.budget, self.rank_pattern = self.init_budget, None
        self.reset_importance()

    def _named(self):
        """[("<layer name>.lora_A", parameter), ...]: every P, Λ, Q, by a name that survives a checkpoint."""
        return [(f"{name}.{attr}", getattr(layer, attr)) for name, layer in self.layers
                for attr in ("lora_A", "lora_B", "lora_E")]

    def reset_importance(self) -> None:
        self.sensitivity, self.uncertainty = {}, {}  # parameter name (see _named) -> Ī, Ū arrays

    def update_importance(self) -> None:
        """Ī, Ū of every entry of P, Λ, Q from the current gradients (a parameter without grad counts as 0)."""
        for key, p in self._named():
            xp = p.device.xp
            grad = p.grad.data if p.grad is not None else xp.zeros_like(p.data)
            I = xp.abs(p.data * grad)
            I_bar = self.sensitivity.get(key, xp.zeros_like(p.data))
            U_bar = self.uncertainty.get(key, xp.zeros_like(p.data))
            I_bar = self.beta1 * I_bar + (1 - self.beta1) * I
            U_bar = self.beta2 * U_bar + (1 - self.beta2) * xp.abs(I - I_bar)
            self.sensitivity[key], self.uncertainty[key] = I_bar, U_bar

    def triplet_scores(self) -> dict:
        """{layer name: (r,) array}: S_i = score(λ_i) + mean_j score(Q_ij) + mean_j score(P_ji)."""
        def score(name, attr):
            return self.sensitivity[f"{name}.{attr}"] * self.uncertainty[f"{name}.{attr}"]

        return {name: score(name, "lora_E") + score(name, "lora_A").mean(axis=1) + score(name, "lora_B").mean(axis=0)
                for name, _ in self.layers}

    def mask_to_budget(self, budget: int) -> dict:
        """Zero the λ of the (b0 − budget) lowest-scoring triplets over all layers; returns the rank pattern."""
        scores = self.triplet_scores()
        xp = self.layers[0][1].lora_E.device.xp
        everything = xp.concatenate(list(scores.values()))
        pattern = {}
        if self.init_budget - budget > 0:
            threshold = xp.sort(everything)[self.init_budget - budget - 1]  # the (b0 − b)-th smallest
        else:
            threshold = -xp.inf
        for name, layer in self.layers:
            keep = scores[name] > threshold
            layer.lora_E.data[~keep] = 0.0
            pattern[name] = [bool(k) for k in keep.tolist()]
        return pattern

    def apply_pattern(self, pattern: dict) -> None:
        """Zero λ wherever `pattern` says a triplet was pruned."""
        for name, layer in self.layers:
            keep = layer.lora_E.device.xp.asarray(pattern[name])
            layer.lora_E.data[~keep] = 0.0

    def step(self, global_step: int):
        """PEFT's update_and_allocate(global_step): update importance, mask on schedule, freeze at T − tfinal.

        Returns the budget b(t) in force after this step.
        """
        final = self.total_step - self.tfinal
        if global_step < final:
            self.update_importance()
            self.budget, mask_now = budget_schedule(global_step, self.init_budget, self.target_budget,
                                                    self.total_step, self.tinit, self.tfinal, self.delta_t)
            if mask_now:
                self.rank_pattern = self.mask_to_budget(self.budget)
        elif global_step == final:
            if not self.sensitivity:  # the final phase starts at the first step: score it by its own gradients
                self.update_importance()
            self.budget = budget_schedule(global_step, self.init_budget, self.target_budget, self.total_step,
                                          self.tinit, self.tfinal, self.delta_t)[0]
            self.rank_pattern = self.mask_to_budget(self.budget)
            self.reset_importance()
        else:
            self.budget = self.target_budget
            self.apply_pattern(self.rank_pattern)
        return self.budget

    def state_dict(self) -> dict:
        """{name: host array}: what a checkpoint keeps so that a resumed run allocates exactly as an
        uninterrupted one (Ī and Ū of every P, Λ, Q; the budget; the rank pattern once fixed)."""
        state = {"budget": np.array([self.budget], dtype=np.int64)}
        for key in self.sensitivity:
            state[f"sensitivity/{key}"] = to_host(self.sensitivity[key])
            state[f"uncertainty/{key}"] = to_host(self.uncertainty[key])
        for name, keep in (self.rank_pattern or {}).items():
            state[f"rank_pattern/{name}"] = np.array(keep, dtype=np.uint8)
        return state

    def load_state_dict(self, state: dict, source: str = "the allocator state") -> None:
        """Restore what state_dict() returned (read back from `source`, named in errors)."""
        known = {key: p for key, p in self._named()}
        ranks = {name: layer.r for name, layer in self.layers}

        def expected(key: str) -> bool:
            kind, _, name = key.partition("/")
            return (key == "budget" or kind in ("sensitivity", "uncertainty") and name in known
                    or kind == "rank_pattern" and name in ranks and state[key].shape == (ranks[name],))

        unknown = [key for key in state if not expected(key)]
        if "budget" not in state or unknown:
            raise ValueError(f"{source}: not the allocator state of this model's AdaLoRA layers "
                             f"(unexpected {unknown[:3]}{', no budget' if 'budget' not in state else ''})")
        sensitivity, uncertainty, pattern = {}, {}, {}
        for key, value in state.items():
            kind, _, name = key.partition("/")
            if kind == "rank_pattern":
                pattern[name] = [bool(v) for v in value.tolist()]
            elif kind in ("sensitivity", "uncertainty"):
                if tuple(value.shape) != known[name].shape:
                    raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, the parameter "
                                     f"{known[name].shape}")
                (sensitivity if kind == "sensitivity" else uncertainty)[name] = move(value, known[name].device)
        self.sensitivity, self.uncertainty = sensitivity, uncertainty
        self.budget = int(state["budget"][0])
        self.rank_pattern = pattern or None

    def rank_allocation(self) -> dict:
        """{layer name: number of nonzero λ}: where the budget went."""
        return {name: layer.rank() for name, layer in self.layers}
