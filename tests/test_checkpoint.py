"""Checkpoints (tinylora/train/checkpoint.py): exact round trips, atomic writes, no pickle, clear mismatch errors.

A checkpoint folder holds the trainable parameters, the optimizer state (Adam's m and v), the
scheduler step and the RNG state. These tests save one after a few real training steps, so
every part of it holds something non-trivial.
"""

import json
import os
import pickle

import numpy as np
import pytest

import tinylora
from tinylora import GPT, GPTConfig
from tinylora.train import checkpoint as ckpt
from tinylora.engine import random as tl_random
from tinylora.lora import apply_lora
from tinylora.train.loop import TrainConfig, make_optimizer

CONFIG = TrainConfig(max_steps=10, lr=1e-2, warmup_steps=2)


def tiny_gpt(lora_targets=None, r=2, seed=0):
    """A 2-layer GPT with C = 16; with `lora_targets`, LoRA of rank r on them (only A and B train)."""
    tinylora.manual_seed(seed)
    model = GPT(GPTConfig.tiny(vocab_size=32, block_size=8, n_embd=16, dropout=0.1))
    if lora_targets:
        apply_lora(model, r=r, targets=lora_targets)
    return model


def take_steps(model, optimizer, scheduler, n=2):
    """n AdamW steps on random tokens: parameters, m, v, the schedule and the RNG all move."""
    x = tinylora.tensor(np.arange(16).reshape(2, 8) % 32)  # (B, T) = (2, 8)
    for _ in range(n):
        _, loss = model(x, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def trained(lora_targets=("q", "v")):
    """(model, optimizer, scheduler) after two training steps."""
    model = tiny_gpt(lora_targets)
    optimizer, scheduler = make_optimizer(model, CONFIG)
    take_steps(model, optimizer, scheduler)
    return model, optimizer, scheduler


def trainable_arrays(model) -> dict:
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters() if p.requires_grad}


def assert_same_arrays(a: dict, b: dict, what: str):
    assert a.keys() == b.keys(), f"{what}: names differ"
    for name in a:
        assert np.array_equal(a[name], b[name]), f"{what}: '{name}' differs"


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("targets", [("q", "v"), None], ids=["lora", "full"])
def test_round_trip_restores_everything_exactly(tmp_path, targets):
    model, optimizer, scheduler = trained(targets)
    saved_params, saved_opt = trainable_arrays(model), optimizer.state_dict()
    ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {"note": "hi"})
    next_draws = tl_random.host_rng().random(5)  # what the RNG gives after the checkpoint

    fresh = tiny_gpt(targets, seed=1)  # other initial weights and another RNG state
    fresh_opt, fresh_sched = make_optimizer(fresh, CONFIG)
    state = ckpt.load_checkpoint(tmp_path, fresh, fresh_opt, fresh_sched)  # the run folder: its latest checkpoint

    assert state["step"] == 2 and state["extra"] == {"note": "hi"}
    assert_same_arrays(trainable_arrays(fresh), saved_params, "parameters")
    loaded_opt = fresh_opt.state_dict()
    assert loaded_opt["step"] == saved_opt["step"] and loaded_opt["param_groups"] == saved_opt["param_groups"]
    for name, slots in saved_opt["state"].items():
        assert_same_arrays(loaded_opt["state"][name], slots, f"optimizer state of {name}")
    assert fresh_sched.t == scheduler.t == 2 and fresh_sched.lr == scheduler.lr
    assert np.array_equal(tl_random.host_rng().random(5), next_draws), "RNG state not restored"


def test_latest_checkpoint_names_the_newest(tmp_path):
    model, optimizer, scheduler = trained()
    assert ckpt.latest_checkpoint(tmp_path) is None  # an empty run folder
    ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler)
    ckpt.save_checkpoint(tmp_path, 4, model, optimizer, scheduler)
    assert ckpt.latest_checkpoint(tmp_path) == os.path.join(tmp_path, "step-000004")
    assert sorted(os.listdir(tmp_path)) == ["latest.json", "step-000002", "step-000004"]  # no temp folders left


# ------------------------------------------------------------------ no pickle
def test_files_are_safetensors_and_json_only(tmp_path, monkeypatch):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")  # a dependency of tinylora, so always there
    model, optimizer, scheduler = trained()

    def no_pickle(*args, **kwargs):
        raise AssertionError("a checkpoint must not use pickle")

    for name in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, name, no_pickle)
    folder = ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler)
    ckpt.load_checkpoint(folder, model, optimizer, scheduler)

    assert sorted(os.listdir(folder)) == ["optimizer.safetensors", "state.json", "trainable.safetensors"]
    trainable = safetensors_numpy.load_file(os.path.join(folder, "trainable.safetensors"))  # the reference reader
    assert_same_arrays(trainable, trainable_arrays(model), "trainable.safetensors")
    moments = safetensors_numpy.load_file(os.path.join(folder, "optimizer.safetensors"))
    assert set(moments) == {f"{n}/{slot}" for n in trainable for slot in ("m", "v")}
    with open(os.path.join(folder, "state.json"), encoding="utf-8") as f:
        assert json.load(f)["step"] == 2
    with open(os.path.join(tmp_path, "latest.json"), encoding="utf-8") as f:
        assert json.load(f) == {"checkpoint": "step-000002", "step": 2}


# ------------------------------------------------------------------ atomic writes
def crash_on_call(monkeypatch, function_name, n, error):
    """Make checkpoint.<function_name> raise `error` on its n-th call (1-based); earlier calls work."""
    real = getattr(ckpt, function_name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, function_name, crashing)
    return calls


@pytest.mark.parametrize(
    "function_name, n, error",
    [
        ("save_tensors", 1, OSError("disk full")),  # before anything is written
        ("save_tensors", 2, OSError("disk full")),  # midway: trainable.safetensors written, optimizer not
        ("save_tensors", 2, KeyboardInterrupt()),  # Ctrl-C midway
        ("write_json_atomic", 2, OSError("disk full")),  # the folder is complete, latest.json not yet updated
    ],
    ids=["first-file", "midway", "ctrl-c-midway", "pointer"],
)
def test_crash_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch, function_name, n, error):
    model, optimizer, scheduler = trained()
    ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler)
    at_step_2 = trainable_arrays(model)
    take_steps(model, optimizer, scheduler)  # the run goes on: weights change
    with open(os.path.join(tmp_path, "latest.json"), "rb") as f:
        pointer = f.read()

    calls = crash_on_call(monkeypatch, function_name, n, error)
    with pytest.raises(type(error)):
        ckpt.save_checkpoint(tmp_path, 4, model, optimizer, scheduler)
    assert len(calls) == n, "the crash did not happen where the test meant it to"
    monkeypatch.undo()

    with open(os.path.join(tmp_path, "latest.json"), "rb") as f:
        assert f.read() == pointer, "latest.json changed"
    assert ckpt.latest_checkpoint(tmp_path) == os.path.join(tmp_path, "step-000002")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")], "a temporary folder was left behind"
    if function_name == "save_tensors":
        assert not os.path.exists(os.path.join(tmp_path, "step-000004")), "a half-written checkpoint appeared"

    fresh = tiny_gpt(("q", "v"), seed=1)
    fresh_opt, fresh_sched = make_optimizer(fresh, CONFIG)
    assert ckpt.load_checkpoint(tmp_path, fresh, fresh_opt, fresh_sched)["step"] == 2
    assert_same_arrays(trainable_arrays(fresh), at_step_2, "parameters after the crash")


# ------------------------------------------------------------------ mismatches
@pytest.mark.parametrize(
    "other, error, words",
    [
        (dict(lora_targets=None), KeyError, "unexpected"),  # a LoRA checkpoint into full fine-tuning
        (dict(lora_targets=("q", "k", "v")), KeyError, "missing"),  # other targets
        (dict(lora_targets=("q", "v"), r=4), ValueError, "(2, 16) saved, (4, 16) in the model"),  # another rank
    ],
    ids=["full", "targets", "rank"],
)
def test_loading_into_other_trainable_parameters_is_a_clear_error(tmp_path, other, error, words):
    model, optimizer, scheduler = trained(("q", "v"))  # LoRA r=2 on q, v
    ckpt.save_checkpoint(tmp_path, 2, model, optimizer, scheduler)

    target = tiny_gpt(**other)
    before = {n: p.detach().numpy().copy() for n, p in target.named_parameters()}
    target_opt, target_sched = make_optimizer(target, CONFIG)
    with pytest.raises(error) as info:
        ckpt.load_checkpoint(tmp_path, target, target_opt, target_sched)
    message = str(info.value)
    assert "does not match the model's trainable parameters" in message and words in message, message
    after = {n: p.detach().numpy() for n, p in target.named_parameters()}
    assert_same_arrays(after, before, "the model after a refused load")  # nothing was half-loaded
