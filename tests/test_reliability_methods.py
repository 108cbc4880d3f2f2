"""Reliability of the LoRA-family methods and the command's error reporting.

AdaLoRA: every valid schedule runs (the final phase may start at the very first step), its flags are
range-checked in one line, and a killed run resumes bitwise (the RankAllocator's importance scores and
rank pattern are in every checkpoint). The command reports only tinylora's own user errors in one line:
a bare KeyError or TypeError from inside tinylora is a bug and keeps its traceback.
"""

import shutil

import numpy as np
import pytest
from test_cli import FAST, base, cli, some_text  # noqa: F401 (fixtures)
from test_reliability_run import assert_ctrl_c_at_step, one_error_line

import tinylora
from tinylora import GPT, GPTConfig
from tinylora.errors import MissingNameError
from tinylora.io import load_tensors
from tinylora.methods.adalora import RankAllocator, apply_adalora


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TINYLORA_DEBUG", raising=False)


@pytest.fixture
def notes(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(some_text(3), encoding="utf-8")
    return path


def adalora_args(base, data, *more):  # noqa: F811
    return ["finetune", "--base", base, "--data", data, "--method", "adalora", "--rank", "3", "--target-r", "2",
            "--batch-size", "4", "--eval-batches", "1", "--no-progress", *more]


# ------------------------------------------------------------------ AdaLoRA: every valid schedule runs
SCHEDULES = {  # the final phase (a fixed rank pattern) starts at step max_steps - tfinal
    "max-steps 1": ["--max-steps", "1"],
    "max-steps 4 tfinal 3": ["--max-steps", "4", "--tfinal", "3"],
    "tinit 1 tfinal 1 delta-t 5": ["--max-steps", "3", "--tinit", "1", "--tfinal", "1", "--delta-t", "5"],
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_valid_adalora_schedule_runs(capsys, tmp_path, base, notes, name):  # noqa: F811
    code, out, err = cli(capsys, *adalora_args(base, notes, *SCHEDULES[name]), "--out", tmp_path / "run")
    assert code == 0, err
    assert "adalora rank per layer" in out and (tmp_path / "run" / "adapter").is_dir()


def test_the_final_phase_at_the_first_step_prunes_by_that_steps_gradients():
    """max_steps - tfinal == 1: the budget is fixed at step 1, scored by step 1's own gradients."""
    tinylora.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=32, n_embd=16, n_layer=1))
    apply_adalora(model, init_r=4)
    allocator = RankAllocator(model, target_r=2, total_step=4, tfinal=3)
    for _, layer in allocator.layers:
        layer.lora_E.data[...] = 1.0
        for p in layer.adapter_parameters():
            p.grad = tinylora.tensor(np.ones(p.shape, dtype=np.float32))
    assert allocator.step(1) == 4  # b_T = target_r × 2 layers
    assert sum(allocator.rank_allocation().values()) <= 4
    for step in (2, 3, 4):
        allocator.step(step)  # re-applies the pattern fixed at step 1
    assert allocator.rank_pattern is not None


RANGES = {  # AdaLoRA flag -> what the one line names (the flag itself: checked when finetune parses it)
    "delta-t 0": (["--delta-t", "0"], "--delta-t: must be an integer >= 1"),
    "delta-t -2": (["--delta-t", "-2"], "--delta-t: must be an integer >= 1"),
    "tinit -1": (["--tinit", "-1"], "--tinit: must be an integer >= 0"),
    "tfinal -1": (["--tfinal", "-1"], "--tfinal: must be an integer >= 0"),
    "target-r above rank": (["--target-r", "9"], "--target-r 9 is more than the initial rank --rank 3"),
    "orth-reg-weight nan": (["--orth-reg-weight", "nan"], "--orth-reg-weight: must be a finite number"),
    "orth-reg-weight -1": (["--orth-reg-weight", "-1"], "--orth-reg-weight: must be >= 0.0"),
    "tinit past the end": (["--tinit", "3"], "needs --tinit < --max-steps - --tfinal"),
}


@pytest.mark.parametrize("name", list(RANGES))
def test_adalora_flags_out_of_range_are_one_line(capsys, tmp_path, base, notes, name):  # noqa: F811
    more, words = RANGES[name]
    code, _, err = cli(capsys, *adalora_args(base, notes, "--max-steps", "3", *more), "--out", tmp_path / "run")
    line = one_error_line(err)
    assert code == 2 and words in line, line
    assert not (tmp_path / "run" / "run.json").exists()  # refused before the run started


def test_allocator_arguments_are_checked_together():
    tinylora.manual_seed(0)
    model = apply_adalora(GPT(GPTConfig.tiny(vocab_size=32, n_embd=16, n_layer=1)), init_r=4)
    with pytest.raises(ValueError) as err:
        RankAllocator(model, target_r=0, total_step=5, tinit=-1, delta_t=0, beta1=float("nan"))
    for words in ("target_r", "tinit", "delta_t", "beta1"):
        assert words in str(err.value)


# ------------------------------------------------------------------ AdaLoRA: resume, bitwise
def test_adalora_ctrl_c_then_resume_is_bitwise(capsys, monkeypatch, tmp_path, base, notes):  # noqa: F811
    """Pruning on every step, a Ctrl-C after the step-2 checkpoint: the resumed adapter equals a straight run's."""
    args = adalora_args(base, notes, "--max-steps", "5", "--checkpoint-every", "2", "--tfinal", "1")
    assert cli(capsys, *args, "--out", tmp_path / "straight")[0] == 0
    assert_ctrl_c_at_step(3, capsys, monkeypatch, *args, "--out", tmp_path / "resumed")
    assert (tmp_path / "resumed" / "step-000002" / "method_state.safetensors").exists()
    code, _, err = cli(capsys, *args, "--out", tmp_path / "resumed", "--resume")
    assert code == 0, err
    a = load_tensors(tmp_path / "straight" / "adapter" / "adapter.safetensors")
    b = load_tensors(tmp_path / "resumed" / "adapter" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_adalora_resume_without_allocator_state_is_one_line(capsys, tmp_path, base, notes):  # noqa: F811
    args = adalora_args(base, notes, "--max-steps", "4", "--checkpoint-every", "2", "--out", tmp_path / "run")
    assert cli(capsys, *args)[0] == 0
    for step in ("step-000002", "step-000004"):
        (tmp_path / "run" / step / "method_state.safetensors").unlink()
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 2 and "method_state.safetensors" in one_error_line(err)


def test_allocator_state_round_trips():
    tinylora.manual_seed(0)
    model = apply_adalora(GPT(GPTConfig.tiny(vocab_size=32, n_embd=16, n_layer=1)), init_r=4)
    allocator = RankAllocator(model, target_r=2, total_step=6, tfinal=2)
    for _, layer in allocator.layers:
        for p in layer.adapter_parameters():
            p.grad = tinylora.tensor(np.random.default_rng(1).normal(size=p.shape).astype(np.float32))
    for step in (1, 2, 3, 4):
        allocator.step(step)
    again = RankAllocator(model, target_r=2, total_step=6, tfinal=2)
    again.load_state_dict(allocator.state_dict())
    assert again.budget == allocator.budget and again.rank_pattern == allocator.rank_pattern
    assert all(np.array_equal(again.sensitivity[k], allocator.sensitivity[k]) for k in allocator.sensitivity)
    with pytest.raises(ValueError, match="not the allocator state"):
        again.load_state_dict({"budget": np.array([1]), "sensitivity/nowhere.lora_A": np.zeros(2)})


# ------------------------------------------------------------------ --resume into a folder that holds no run
def test_resume_into_a_mistyped_folder_starts_nothing(capsys, tmp_path, base, notes):  # noqa: F811
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", notes, "--out", tmp_path / "rnu", "--resume",
                       *FAST)
    assert code == 2 and "holds no earlier run" in one_error_line(err)
    assert not (tmp_path / "rnu").exists()


# ------------------------------------------------------------------ user errors vs bugs
@pytest.mark.parametrize("bug", [KeyError("id"), TypeError("unhashable type: 'list'"), NotImplementedError("x")])
def test_a_bare_key_or_type_error_inside_tinylora_keeps_its_traceback(capsys, monkeypatch, bug):
    from tinylora.cli import info

    def broken(args):
        raise bug

    monkeypatch.setattr(info, "run", broken)
    code, _, err = cli(capsys, "info")
    assert code == 1 and "Traceback" in err and "internal error" in err.splitlines()[-1]


@pytest.mark.parametrize("mistake", [MissingNameError("no adapter named 'x'"), ValueError("--rank must be")])
def test_tinylora_user_errors_stay_one_line(capsys, monkeypatch, mistake):
    from tinylora.cli import info

    def wrong(args):
        raise mistake

    monkeypatch.setattr(info, "run", wrong)
    code, _, err = cli(capsys, "info")
    assert code == 2 and one_error_line(err) == f"tinylora: error: {mistake.args[0]}"


def test_user_error_paths_that_were_key_errors_are_still_one_line(capsys, tmp_path, base):  # noqa: F811
    """A model file that lacks a tensor its config.json implies (was a bare KeyError): one line naming the file."""
    from tinylora.io import save_tensors

    model = tmp_path / "model"
    shutil.copytree(base, model)
    tensors = load_tensors(model / "model.safetensors")
    tensors.pop(min(tensors))
    save_tensors(model / "model.safetensors", tensors)
    code, _, err = cli(capsys, "info", "--model", model)
    assert code == 2 and "model.safetensors" in one_error_line(err)


# ------------------------------------------------------------------ defects that outlived the first hardening
def test_info_checks_targets_without_rank(capsys):
    code, _, err = cli(capsys, "info", "--targets", "nonsense")
    assert code == 2 and "--targets" in one_error_line(err) and "nonsense" in err


@pytest.mark.parametrize("alpha", [float("inf"), float("nan"), -1.0])
def test_lora_alpha_must_be_finite_and_positive(alpha):
    from tinylora import nn
    from tinylora.lora import LoRALinear

    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        LoRALinear(nn.Linear(8, 8), r=2, alpha=alpha)


@pytest.mark.parametrize("val", [[], ["--val-fraction", "0"]])
def test_a_short_text_file_is_named_and_explained(capsys, tmp_path, base, val):  # noqa: F811
    short = tmp_path / "short.txt"
    short.write_text("hi there", encoding="utf-8")
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", short, "--out", tmp_path / "run", *FAST, *val)
    line = one_error_line(err)
    assert code == 2 and str(short) in line and "too short to train on" in line and "window" not in line


def test_a_copy_that_fills_the_disk_names_the_file_being_written():
    """shutil's copies put the source first in an ENOSPC error; the one line names the destination."""
    import errno

    from tinylora.cli.main import one_line

    err = OSError(errno.ENOSPC, "No space left on device", "/repo/tinylora/io.py", None, "/out/A1/tinylora/io.py")
    assert one_line(err) == "No space left on device: cannot write /out/A1/tinylora/io.py"
    other = OSError(errno.ENOENT, "No such file or directory", "/repo/x.py")
    assert one_line(other) == "No such file or directory: /repo/x.py"
