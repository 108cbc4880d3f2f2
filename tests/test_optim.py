"""Optimizers, learning-rate schedules and gradient clipping.

Trajectories are compared with torch.optim in float64 on the same parameters
and the same gradients; schedules against values worked out by hand.
Every test runs twice: on Adam's readable lines (optim/adam.py) and on its fast path
(engine/kernels/adam.py), so a mistake in either fails here.
"""

from __future__ import annotations

import gc
import json
import math
import tracemalloc

import numpy as np
import pytest
from conftest import assert_close, require
from hypothesis import given
from hypothesis import strategies as st

import tinylora
from tinylora import nn
from tinylora.engine import kernels
from tinylora.engine.backend import memory
from tinylora.optim import SGD, Adam, AdamW, LRScheduler, clip_grad_norm_, lr_at



@pytest.fixture(autouse=True, params=[True, False], ids=["fast-path", "readable"])
def fast_paths(request, monkeypatch) -> bool:
    """Run the test with the kernels of engine/kernels/ on, then off (TINYLORA_KERNELS=0's lines)."""
    monkeypatch.setattr(kernels, "_enabled", request.param)
    return request.param


SHAPES = [(3, 4), (4,), (2, 3, 2)]  # a matrix, a vector (bias-like), a 3-D tensor
STEPS = 6


def _arrays(rng, shapes):
    return [rng.standard_normal(s) for s in shapes]


def _set_grads(ours, theirs, grads, torch):
    """Give both sets of parameters the same gradients (None leaves a parameter without one)."""
    for p, q, g in zip(ours, theirs, grads):
        p.grad = None if g is None else tinylora.Tensor(g.copy())
        q.grad = None if g is None else torch.tensor(g.copy())


# (name, make tinylora optimizer, make torch optimizer); both get the parameter list in SHAPES order
def _cases(torch):
    def groups(params, **second):  # first parameter in one group, the rest in another with its own settings
        return [{"params": params[:1]}, {"params": params[1:], **second}]

    def vectors_apart(params, wd):  # torch's AdamW decays everything: put vectors in a group with λ = 0
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": wd},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]

    return [
        ("sgd", lambda ps: SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
        ("sgd_momentum_wd", lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05),
         lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.05)),
        ("adam", lambda ps: Adam(ps, lr=0.05), lambda ps: torch.optim.Adam(ps, lr=0.05)),
        ("adam_l2", lambda ps: Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
         lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
        ("adamw_decay_1d", lambda ps: AdamW(ps, lr=0.05, weight_decay=0.3, decay_1d=True),
         lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.3)),
        ("adamw_default_no_1d_decay", lambda ps: AdamW(ps, lr=0.05, weight_decay=0.3),
         lambda ps: torch.optim.AdamW(vectors_apart(ps, 0.3), lr=0.05)),
        ("adam_groups", lambda ps: Adam(groups(ps, lr=0.2, betas=(0.5, 0.9)), lr=0.01),
         lambda ps: torch.optim.Adam(groups(ps, lr=0.2, betas=(0.5, 0.9)), lr=0.01)),
        ("sgd_groups", lambda ps: SGD(groups(ps, lr=0.5, momentum=0.5), lr=0.05),
         lambda ps: torch.optim.SGD(groups(ps, lr=0.5, momentum=0.5), lr=0.05)),
    ]


CASES = ["sgd", "sgd_momentum_wd", "adam", "adam_l2", "adamw_decay_1d", "adamw_default_no_1d_decay",
         "adam_groups", "sgd_groups"]


@pytest.mark.ref
@pytest.mark.parametrize("name", CASES)
def test_trajectory_matches_torch(name):
    torch = require("torch")
    cases = {case[0]: case for case in _cases(torch)}
    assert list(cases) == CASES
    _, make_ours, make_theirs = cases[name]
    rng = np.random.default_rng(CASES.index(name))
    start = _arrays(rng, SHAPES)
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in start]
    opt_ours, opt_theirs = make_ours(ours), make_theirs(theirs)
    for t in range(STEPS):
        grads = _arrays(rng, SHAPES)
        if t == 2:
            grads[1] = None  # a step without a gradient: no update, and Adam's per-parameter t stays behind
        _set_grads(ours, theirs, grads, torch)
        opt_ours.step()
        opt_theirs.step()
        for i, (p, q) in enumerate(zip(ours, theirs)):
            # float64, same formulas in the same order: only rounding differs
            assert_close(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-12, what=f"{name} step {t} param {i}")


def test_adam_first_step_moves_each_entry_by_lr():
    # by hand: at t = 1, m̂ = g and v̂ = g², so the step is lr·g/(|g| + ε) ≈ lr·sign(g)
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    p.grad = tinylora.Tensor(np.array([0.5, -4.0, 1e-3]))
    Adam([p], lr=0.1, eps=1e-12).step()
    assert_close(p.data, [0.9, -1.9, 2.9], rtol=0, atol=1e-9, what="Adam step 1")


@pytest.mark.parametrize("kind", ["Adam", "AdamW"])
def test_a_constant_gradient_moves_each_entry_by_lr_at_every_step(kind):
    # by hand: with g constant, m_t = (1 − β1^t)·g and v_t = (1 − β2^t)·g², so the bias corrections make
    # m̂ = g and v̂ = g² at every t, and each step is lr·g/(|g| + ε): five steps of 0.1·sign(g). A wrong
    # correction (1 − β instead of 1 − β^t), a wrong moment or a wrong step fails from step 2 on.
    p = nn.Parameter(np.array([1.0, -2.0, 3.0]))
    opt = getattr(tinylora.optim, kind)([p], lr=0.1, betas=(0.8, 0.9), eps=1e-12, weight_decay=0.0)
    for step in range(1, 6):
        p.grad = tinylora.Tensor(np.array([0.5, -4.0, 1e-3]))
        opt.step()
        assert_close(p.data, [1.0 - 0.1 * step, -2.0 + 0.1 * step, 3.0 - 0.1 * step], rtol=0, atol=1e-9,
                     what=f"{kind} step {step}")


def test_param_groups_use_their_own_lr():
    a, b = nn.Parameter(np.ones(3)), nn.Parameter(np.ones(2))
    opt = SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = tinylora.Tensor(np.full(3, 2.0)), tinylora.Tensor(np.full(2, 2.0))
    opt.step()
    assert_close(a.data, np.full(3, 1.0 - 0.5 * 2.0), rtol=0, atol=1e-15, what="group lr 0.5")
    assert_close(b.data, np.full(2, 1.0 - 0.1 * 2.0), rtol=0, atol=1e-15, what="default lr 0.1")


@pytest.mark.parametrize("decay_1d", [False, True])
def test_adamw_skips_vectors_by_default(decay_1d):
    # with g = 0 Adam's step is 0/(0 + ε) = 0, so only the decoupled decay θ·(1 − lr·λ) moves θ
    lr, wd = 0.1, 0.5
    weight, bias, scalar = nn.Parameter(np.ones((2, 2))), nn.Parameter(np.ones(2)), nn.Parameter(np.ones(()))
    for p in (weight, bias, scalar):
        p.grad = tinylora.Tensor(np.zeros(p.shape))
    AdamW([weight, bias, scalar], lr=lr, weight_decay=wd, decay_1d=decay_1d).step()
    decayed = 1.0 - lr * wd
    assert_close(weight.data, np.full((2, 2), decayed), rtol=0, atol=1e-15, what="matrix")
    expected_vector = decayed if decay_1d else 1.0
    assert_close(bias.data, np.full(2, expected_vector), rtol=0, atol=1e-15, what="vector")
    assert_close(scalar.data, expected_vector, rtol=0, atol=1e-15, what="0-d parameter")


class _FrozenBase(nn.Module):
    """A big frozen layer (W0) followed by a small trainable head."""

    def __init__(self):
        super().__init__()
        self.base = nn.Linear(64, 64, dtype="float64")
        self.base.requires_grad_(False)
        self.head = nn.Linear(64, 3, dtype="float64")

    def forward(self, x):
        return self.head(self.base(x))


@pytest.mark.parametrize("make, slots", [(lambda ps: Adam(ps, lr=1e-2, weight_decay=0.1), 2),  # m, v
                                         (lambda ps: SGD(ps, lr=1e-2, momentum=0.9), 1)],  # velocity
                         ids=["adam", "sgd"])
def test_frozen_parameters_get_no_state_and_no_update(make, slots):
    model = _FrozenBase()
    frozen_before = model.base.weight.data.copy()
    gc.collect()
    optimizer_bytes = memory.stats()["current"]["optimizer"]
    opt = make(model.parameters())
    y = model(tinylora.randn(5, 64, dtype="float64"))  # (5, 3)
    y.backward(tinylora.randn(5, 3, dtype="float64"))
    opt.step()
    trainable = [model.head.weight, model.head.bias]
    assert set(opt.state) == {id(p) for p in trainable}
    np.testing.assert_array_equal(model.base.weight.data, frozen_before)
    # "optimizer" memory is the state of the head alone (work buffers count as "other")
    added = memory.stats()["current"]["optimizer"] - optimizer_bytes
    assert added == slots * sum(p.data.nbytes for p in trainable), added


def test_frozen_parameter_with_a_stray_grad_is_ignored():
    frozen, live = nn.Parameter(np.ones(3), requires_grad=False), nn.Parameter(np.ones(3))
    opt = Adam([frozen, live], lr=0.1)
    frozen.grad, live.grad = tinylora.Tensor(np.ones(3)), tinylora.Tensor(np.ones(3))
    opt.step()
    np.testing.assert_array_equal(frozen.data, np.ones(3))
    assert id(frozen) not in opt.state and id(live) in opt.state


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.1, weight_decay=0.01),
    lambda ps: AdamW(ps, lr=0.1, weight_decay=0.01),
], ids=["sgd", "adam", "adamw"])
def test_step_updates_in_place_without_new_arrays(make, fast_paths):
    # every path keeps the parameter's and the state's buffers; SGD's lines and Adam's fast path (on the CPU:
    # engine/kernels/adam.py) also allocate nothing, where Adam's readable lines are plain array expressions
    params = [nn.Parameter(np.ones((64, 64)), device="cpu"), nn.Parameter(np.ones(64), device="cpu")]
    opt = make(params)
    grads = [tinylora.Tensor(np.full(p.shape, 0.1), device="cpu") for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()  # first step creates the state and the work buffers
    data_ids = [id(p.data) for p in params]
    state_ids = {(id(p), k): id(v) for p in params for k, v in opt.state[id(p)].items() if k != "step"}
    tracemalloc.start()
    opt.step()
    peak = tracemalloc.get_traced_memory()[1]  # NumPy reports its buffers to tracemalloc
    tracemalloc.stop()
    opt.step()
    assert [id(p.data) for p in params] == data_ids
    assert {(id(p), k): id(v) for p in params for k, v in opt.state[id(p)].items() if k != "step"} == state_ids
    assert all(p.grad is g for p, g in zip(params, grads)), "step must not replace .grad"
    np.testing.assert_array_equal(grads[0].data, np.full((64, 64), 0.1))  # nor change it
    if fast_paths or isinstance(opt, SGD):
        # one temporary as large as the 64×64 weight would be 32 KiB; small Python objects are allowed
        assert peak < params[0].data.nbytes // 4, f"a step allocated {peak} bytes"


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3, dtype="float64")
        self.ln = nn.LayerNorm(3, dtype="float64")


def _train(model, opt, grads):
    for step_grads in grads:
        for (_, p), g in zip(model.named_parameters(), step_grads):
            p.grad = tinylora.Tensor(g.copy())
        opt.step()


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    model = _Tiny()
    shapes = [p.shape for p in model.parameters()]
    grads = [_arrays(rng, shapes) for _ in range(6)]
    opt = AdamW(model.named_parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, opt, grads[:3])

    saved = opt.state_dict()
    settings = json.loads(json.dumps({"param_groups": saved["param_groups"], "step": saved["step"]}))
    saved = dict(settings, state=saved["state"])  # as a checkpoint stores it: JSON beside the arrays
    assert set(saved["state"]) == {"fc.weight", "fc.bias", "ln.weight", "ln.bias"}
    assert saved["step"] == {name: 3 for name in saved["state"]}
    assert set(saved["state"]["fc.weight"]) == {"m", "v"}
    m_saved = saved["state"]["fc.weight"]["m"].copy()

    clone = _Tiny()
    clone.load_state_dict(model.state_dict())
    opt_clone = AdamW(clone.named_parameters(), lr=0.5, weight_decay=0.0)  # settings come from the checkpoint
    opt_clone.load_state_dict(saved)
    assert opt_clone.param_groups[0]["lr"] == 1e-2 and opt_clone.param_groups[0]["betas"] == (0.9, 0.999)

    _train(model, opt, grads[3:])
    _train(clone, opt_clone, grads[3:])
    for (name, p), q in zip(model.named_parameters(), clone.parameters()):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    np.testing.assert_array_equal(saved["state"]["fc.weight"]["m"], m_saved)  # a snapshot, not a live view


def test_load_state_dict_refuses_a_mismatch():
    model = _Tiny()
    opt = Adam(model.named_parameters(), lr=1e-2)
    _train(model, opt, [_arrays(np.random.default_rng(2), [p.shape for p in model.parameters()])])
    saved = opt.state_dict()
    with pytest.raises(ValueError, match="settings"):
        SGD(model.named_parameters()).load_state_dict(saved)
    with pytest.raises(ValueError, match="parameters differ"):
        Adam(model.parameters(), lr=1e-2).load_state_dict(saved)  # unnamed: "0", "1", ... instead of names
    saved["state"]["fc.bias"]["m"] = np.zeros(5)
    saved["param_groups"][0]["lr"] = 0.5
    m_before = opt.state[id(model.fc.bias)]["m"].copy()
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["lr"] == 1e-2  # a refused checkpoint changes nothing
    np.testing.assert_array_equal(opt.state[id(model.fc.bias)]["m"], m_before)


def test_unnamed_parameters_are_named_by_position():
    a, frozen, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2), requires_grad=False), nn.Parameter(np.ones(2))
    opt = SGD([a, frozen, b], momentum=0.9)
    a.grad, b.grad = tinylora.Tensor(np.ones(2)), tinylora.Tensor(np.ones(2))
    opt.step()
    assert set(opt.state_dict()["state"]) == {"0", "2"}


@pytest.mark.parametrize("make, message", [
    (lambda: SGD([nn.Parameter(np.ones(2))], lr=0.0), "lr must be positive"),
    (lambda: SGD([nn.Parameter(np.ones(2))], momentum=1.0), "momentum"),
    (lambda: Adam([nn.Parameter(np.ones(2))], betas=(0.9, 1.0)), "betas"),
    (lambda: Adam([nn.Parameter(np.ones(2))], betas=(0.9,)), "betas"),
    (lambda: Adam([nn.Parameter(np.ones(2))], eps=0.0), "eps"),
    (lambda: AdamW([nn.Parameter(np.ones(2))], weight_decay=-1.0), "weight_decay"),
    (lambda: Adam([{"params": [nn.Parameter(np.ones(2))], "learning_rate": 1.0}]), "unknown setting"),
    (lambda: Adam([]), "empty"),
    (lambda: Adam([nn.Parameter(np.ones(2), requires_grad=False)]), "no parameter requires grad"),
    (lambda: (lambda p: Adam([p, p]))(nn.Parameter(np.ones(2))), "appears twice"),
    (lambda: Adam([nn.Parameter(np.ones(2)) * 2.0]), "not a leaf"),
])
def test_bad_optimizer_arguments_raise(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# ------------------------------------------------------------------ clipping
@pytest.mark.ref
@pytest.mark.parametrize("ratio", [0.1, 0.9, 1.5])  # max_norm / ‖g‖: clips hard, clips a little, no clipping
def test_clip_grad_norm_matches_torch(ratio):
    torch = require("torch")
    rng = np.random.default_rng(3)
    start = _arrays(rng, SHAPES)
    ours = [nn.Parameter(a.copy()) for a in start]
    theirs = [torch.nn.Parameter(torch.tensor(a.copy())) for a in start]
    grads = _arrays(rng, SHAPES)
    grads[2] = None  # a parameter without a gradient is skipped
    max_norm = ratio * math.sqrt(sum(float(np.sum(g**2)) for g in grads if g is not None))
    _set_grads(ours, theirs, grads, torch)
    total = clip_grad_norm_(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert_close(total, expected.item(), rtol=1e-12, atol=0, what="total norm")
    for i in (0, 1):
        assert_close(ours[i].grad.data, theirs[i].grad.numpy(), rtol=1e-12, atol=0, what=f"clipped grad {i}")
    assert ours[2].grad is None


def test_clip_grad_norm_by_hand():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = tinylora.Tensor(np.array([3.0, 0.0])), tinylora.Tensor(np.array([4.0]))  # ‖g‖ = 5
    assert clip_grad_norm_([a, b], 1.0, eps=0.0) == 5.0
    assert_close(a.grad.data, [0.6, 0.0], rtol=0, atol=1e-15, what="a")
    assert_close(b.grad.data, [0.8], rtol=0, atol=1e-15, what="b")


def test_clip_grad_norm_scales_in_place():
    p = nn.Parameter(np.ones((64, 64)))
    grad = p.grad = tinylora.Tensor(np.ones((64, 64)))
    buffer = grad.data
    tracemalloc.start()
    total = clip_grad_norm_([p], 1.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert p.grad is grad and p.grad.data is buffer
    assert_close(np.sqrt(np.sum(buffer**2)), 1.0, rtol=1e-6, atol=0, what="norm after clipping")  # ε = 1e-6
    assert total == pytest.approx(64.0)
    assert peak < buffer.nbytes // 4, f"clipping allocated {peak} bytes"


def test_clip_grad_norm_leaves_non_finite_gradients_alone():
    a = nn.Parameter(np.zeros(2))
    a.grad = tinylora.Tensor(np.array([np.inf, 1.0]))
    assert math.isinf(clip_grad_norm_([a], 1.0))
    np.testing.assert_array_equal(a.grad.data, [np.inf, 1.0])
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm_([a], 0.0)


# ----------------------------------------------------------------- schedules
BASE, W, T, MIN = 2e-3, 10, 110, 0.1  # peak lr, warm-up steps, total steps, min_lr_ratio (lr_min = 2e-4)


@pytest.mark.parametrize("kind, step, expected", [
    ("cosine", 0, 2e-4),            # first warm-up step: lr·1/W
    ("cosine", 4, 1e-3),            # lr·5/W
    ("cosine", 9, 2e-3),            # end of warm-up: the peak
    ("cosine", 10, 2e-3),           # decay starts at progress 0
    ("cosine", 35, 2e-4 + 1.8e-3 * (1 + math.sqrt(0.5)) / 2),  # progress 1/4: cos(π/4) = √½
    ("cosine", 60, 1.1e-3),         # midpoint: halfway between peak and minimum
    ("cosine", 110, 2e-4),          # end: the minimum
    ("cosine", 500, 2e-4),          # past the end: stays at the minimum
    ("linear", 9, 2e-3),
    ("linear", 35, 2e-4 + 1.8e-3 * 0.75),
    ("linear", 60, 1.1e-3),
    ("linear", 110, 2e-4),
    ("constant", 4, 1e-3),          # warm-up as for the others
    ("constant", 60, 2e-3),
    ("constant", 500, 2e-3),        # no decay, min_lr_ratio unused
])
def test_lr_at_hand_computed(kind, step, expected):
    assert lr_at(step, BASE, W, T, kind, MIN) == pytest.approx(expected, rel=1e-12)


@given(warmup=st.integers(0, 20), decay=st.integers(0, 50), ratio=st.floats(0.0, 1.0),
       kind=st.sampled_from(["cosine", "linear"]))
def test_lr_rises_then_falls_within_bounds(warmup, decay, ratio, kind):
    total = warmup + decay
    lrs = [lr_at(t, 1.0, warmup, total, kind, ratio) for t in range(total + 3)]
    peak = warmup - 1 if warmup else 0
    assert all(0.0 < lr <= 1.0 + 1e-12 for lr in lrs[:warmup])  # warm-up starts at lr/W, maybe below lr_min
    assert all(ratio - 1e-12 <= lr <= 1.0 + 1e-12 for lr in lrs[warmup:])
    assert all(x < y for x, y in zip(lrs[:peak], lrs[1 : peak + 1]))  # warm-up strictly increases
    assert all(x >= y - 1e-12 for x, y in zip(lrs[warmup:], lrs[warmup + 1 :]))  # decay never increases
    assert lrs[-1] == pytest.approx(ratio)


def test_scheduler_sets_each_group_and_resumes():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    sched = LRScheduler(opt, warmup_steps=4, total_steps=20, kind="linear", min_lr_ratio=0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25, 0.025])  # step 0 is set at once
    for _ in range(7):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr_at(7, 1.0, 4, 20, "linear", 0.5),
                                                                 lr_at(7, 0.1, 4, 20, "linear", 0.5)])
    assert sched.lr == opt.param_groups[0]["lr"]

    saved = json.loads(json.dumps(sched.state_dict()))
    opt2 = SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    resumed = LRScheduler(opt2, warmup_steps=4, total_steps=20, kind="linear", min_lr_ratio=0.5)
    resumed.load_state_dict(saved)
    sched.step()
    resumed.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize("args, message", [
    ((0, 1.0, 5, 3, "cosine", 0.0), "less than warmup_steps"),
    ((0, 1.0, -1, 3, "cosine", 0.0), "warmup_steps"),
    ((0, 1.0, 1, 3, "step", 0.0), "unknown kind"),
    ((0, 1.0, 1, 3, "cosine", 1.5), "min_lr_ratio"),
    ((-1, 1.0, 1, 3, "cosine", 0.0), "step must be"),
])
def test_bad_schedule_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        lr_at(*args)
