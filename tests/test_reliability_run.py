"""Reliability of a training run, the command and the data: bad inputs, faults and numerics.

Each bad input asserts the exit code (or the exact error class) and that the one-line message
names the culprit (the flag, the file and line, the setting, the tensor). The tables below are
what the README's "What is guaranteed" counts. Faults: Ctrl-C and SIGKILL then --resume, a killed
write's leftovers, a full disk (an injected ENOSPC everywhere; a real 64 KiB tmpfs where this
machine lets a test mount one). Numerics: a NaN/inf step is never applied, checkpointed or saved;
cross-entropy at extreme logits equals PyTorch's; a resume under another load is bitwise (the thread plan).
"""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_cli import C, FAST, N_LAYER, adapter, base, cli, short_pairs, some_text  # noqa: F401 (fixtures)

import tinylora
from tinylora import GPT, GPTConfig
from tinylora.cli import main
from tinylora.data import PairDataset, load_pairs, load_text_dataset, read_documents, read_pairs, write_e2e
from tinylora.io import NonFiniteError, load_tensors, read_json, remove_stale_temps, save_tensors
from tinylora.lora import apply_lora, lora_layers
from tinylora.tokenizers import ByteTokenizer
from tinylora.train import checkpoint as ckpt
from tinylora.train import loop as tl_train
from tinylora.train.loop import TrainConfig, train

TOK = ByteTokenizer()


def one_error_line(err: str) -> str:
    """The single `tinylora: error:` line of stderr (fails if there is more, or a traceback)."""
    lines = err.splitlines()
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("tinylora: error: "), err
    return lines[0]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TINYLORA_DEBUG", raising=False)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text(some_text(0), encoding="utf-8")
    return path


# ------------------------------------------------------------------ CLI: values out of range, named by flag
RANGE = {  # argv -> what the one line must name
    "max-steps 0": (["finetune", "--data", "x.txt", "--max-steps", "0"], "--max-steps"),
    "eval-every 0": (["finetune", "--data", "x.txt", "--eval-every", "0"], "--eval-every"),
    "eval-every -5": (["finetune", "--data", "x.txt", "--eval-every", "-5"], "--eval-every"),
    "checkpoint-every -1": (["finetune", "--data", "x.txt", "--checkpoint-every", "-1"], "--checkpoint-every"),
    "eval-batches 0": (["finetune", "--data", "x.txt", "--eval-batches", "0"], "--eval-batches"),
    "batch-size 0": (["finetune", "--data", "x.txt", "--batch-size", "0"], "--batch-size"),
    "lr 0": (["finetune", "--data", "x.txt", "--lr", "0"], "--lr"),
    "lr nan": (["finetune", "--data", "x.txt", "--lr", "nan"], "--lr"),
    "lr -1": (["pretrain", "--out", "m", "--lr", "-1"], "--lr"),
    "alpha inf": (["finetune", "--data", "x.txt", "--alpha", "inf"], "--alpha"),
    "rank 0": (["finetune", "--data", "x.txt", "--rank", "0"], "--rank"),
    "lora-dropout 1": (["finetune", "--data", "x.txt", "--lora-dropout", "1"], "--lora-dropout"),
    "val-fraction 1.5": (["finetune", "--data", "x.txt", "--val-fraction", "1.5"], "--val-fraction"),
    "val-fraction -0.1": (["finetune", "--data", "x.txt", "--val-fraction", "-0.1"], "--val-fraction"),
    "weight-decay -1": (["finetune", "--data", "x.txt", "--weight-decay", "-1"], "--weight-decay"),
    "grad-clip nan": (["finetune", "--data", "x.txt", "--grad-clip", "nan"], "--grad-clip"),
    "warmup-steps -1": (["finetune", "--data", "x.txt", "--warmup-steps", "-1"], "--warmup-steps"),
    "min-lr-ratio 2": (["finetune", "--data", "x.txt", "--min-lr-ratio", "2"], "--min-lr-ratio"),
    "seed -1": (["finetune", "--data", "x.txt", "--seed", "-1"], "--seed"),
    "layers a,b": (["finetune", "--data", "x.txt", "--layers", "a,b"], "--layers"),
    "targets empty": (["finetune", "--data", "x.txt", "--targets", ","], "--targets"),
    "block-size 0": (["pretrain", "--out", "m", "--block-size", "0"], "--block-size"),
    "demo steps 0": (["demo", "--steps", "0"], "--steps"),
    "info rank 0": (["info", "--rank", "0"], "--rank"),
    "temperature nan": (["generate", "--temperature", "nan"], "--temperature"),
    "temperature -1": (["generate", "--temperature", "-1"], "--temperature"),
    "top-p 0": (["generate", "--top-p", "0"], "--top-p"),
    "top-p 1.5": (["generate", "--top-p", "1.5"], "--top-p"),
    "top-k 0": (["generate", "--top-k", "0"], "--top-k"),
    "max-new-tokens -1": (["generate", "--max-new-tokens", "-1"], "--max-new-tokens"),
}


@pytest.mark.parametrize("name", list(RANGE))
def test_out_of_range_flag_is_refused_by_name(capsys, name):
    argv, flag = RANGE[name]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert f"argument {flag}" in line, line


LORA_FLAG_WITH_FULL = {"--rank": "8", "--alpha": "16", "--targets": "q,k", "--layers": "0", "--lora-dropout": "0.1"}


@pytest.mark.parametrize("flag", list(LORA_FLAG_WITH_FULL))
def test_lora_flag_with_method_full_is_refused(capsys, tmp_path, text_file, base, flag):
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", text_file, "--method", "full",
                       flag, LORA_FLAG_WITH_FULL[flag], "--out", tmp_path / "run", *FAST)
    assert code == 2 and flag in one_error_line(err) and "--method full" in err
    assert not (tmp_path / "run").exists(), "refused before anything was written"


def test_help_shows_every_default_and_descriptions(capsys):
    """Every flag with a default shows it; every command has a description; --version answers."""
    from tinylora.cli import build_parser

    parser = build_parser()
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        if name not in ("demo", "pretrain", "finetune", "generate", "merge", "info"):
            continue  # analyze, serve, download: tests/test_cli_multi.py
        assert sub.description, f"tinylora {name} has no description"
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False) and action.help != "==SUPPRESS==":
                if action.dest == "help":
                    continue
                assert "default" in (sub.formatter_class(name)._get_help_string(action)), (name, action.dest)
        assert "(default: " in text
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"tinylora {tinylora.__version__}"


def test_internal_error_keeps_its_traceback(capsys, monkeypatch):
    """A bug (here an IndexError) is not dressed up as a user error: traceback, one 'internal error' line, exit 1."""
    from tinylora.cli import info

    def broken(args):
        raise IndexError("list index out of range")

    monkeypatch.setattr(info, "run", broken)
    code, _, err = cli(capsys, "info")
    assert code == 1 and "Traceback" in err
    assert err.splitlines()[-1].startswith("tinylora: internal error (a bug in tinylora")


# ------------------------------------------------------------------ CLI: nothing overwritten by accident
def test_finetune_into_an_earlier_run_is_refused_then_overwrite_clears_it(capsys, tmp_path, text_file, base):
    run = tmp_path / "run"
    first = ["finetune", "--base", base, "--data", text_file, "--out", run, *FAST]
    assert cli(capsys, *first, "--max-steps", "4", "--checkpoint-every", "2")[0] == 0
    before = sorted(os.listdir(run))
    adapter_bytes = (run / "adapter" / "adapter.safetensors").read_bytes()

    code, _, err = cli(capsys, *first)
    line = one_error_line(err)
    assert code == 2 and str(run) in line and "--resume" in line and "--overwrite" in line
    assert sorted(os.listdir(run)) == before and (run / "adapter" / "adapter.safetensors").read_bytes() == adapter_bytes

    (run / "my-notes.md").write_text("mine", encoding="utf-8")  # not the run's: --overwrite keeps it
    assert cli(capsys, *first, "--overwrite")[0] == 0  # 3 steps this time
    names = sorted(os.listdir(run))
    assert "step-000004" not in names and "step-000002" not in names and "step-000003" in names
    assert (run / "my-notes.md").read_text(encoding="utf-8") == "mine"


def test_resume_and_overwrite_together_are_refused(capsys, tmp_path, text_file, base):
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", text_file, "--out", tmp_path / "r", "--resume",
                       "--overwrite", *FAST)
    assert code == 2 and "--resume" in one_error_line(err) and "--overwrite" in err


def test_merge_never_replaces_a_model_without_overwrite(capsys, tmp_path, base, adapter):
    base_bytes = open(os.path.join(base, "model.safetensors"), "rb").read()
    code, _, err = cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", base)
    assert code == 2 and "is the base model itself" in one_error_line(err)
    assert open(os.path.join(base, "model.safetensors"), "rb").read() == base_bytes

    assert cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", tmp_path / "m")[0] == 0
    code, _, err = cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", tmp_path / "m")
    assert code == 2 and "already holds a model" in one_error_line(err) and "--overwrite" in err
    assert cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", tmp_path / "m", "--overwrite")[0] == 0


def test_pretrain_into_an_existing_model_is_refused(capsys, tmp_path, base):
    code, _, err = cli(capsys, "pretrain", "--data", "stdlib", "--out", base, "--config", "tiny", *FAST)
    assert code == 2 and "already holds a model" in one_error_line(err)


def test_adapter_flag_given_a_run_folder_says_did_you_mean(capsys, tmp_path, base, adapter):
    run = tmp_path / "run"
    os.makedirs(run)
    os.symlink(adapter, run / "adapter")
    for command in (["generate", "--model", base], ["merge", "--base", base, "--out", tmp_path / "m"]):
        code, _, err = cli(capsys, *command, "--adapter", run)
        assert code == 2 and f"did you mean --adapter {run / 'adapter'}" in one_error_line(err)


# ------------------------------------------------------------------ CLI: resume refuses any change of result
@pytest.fixture(scope="module")
def finished_run(base, tmp_path_factory):
    """A 2-step LoRA run with a checkpoint at step 1 (so --resume has something to compare)."""
    folder = tmp_path_factory.mktemp("resume")
    data = folder / "notes.txt"
    data.write_text(some_text(7), encoding="utf-8")
    argv = ["finetune", "--base", base, "--data", str(data), "--out", str(folder / "run"), "--max-steps", "2",
            "--checkpoint-every", "1", "--batch-size", "2", "--eval-batches", "1", "--no-progress"]
    assert main(argv) == 0
    return folder, argv


def _other_base(folder) -> str:
    """A base of the same shape with other weights (a different seed)."""
    from tinylora.model.load import save_model

    tinylora.manual_seed(99)
    model = GPT(GPTConfig.tiny(vocab_size=TOK.vocab_size, n_embd=C, n_layer=N_LAYER, dropout=0.0))
    save_model(model, folder / "other-base", TOK)
    return str(folder / "other-base")


CHANGES = {  # a changed flag -> the setting the refusal must name
    "--alpha": (["--alpha", "8"], "alpha"),
    "--rank": (["--rank", "2"], "rank"),
    "--lora-dropout": (["--lora-dropout", "0.1"], "lora_dropout"),
    "--targets": (["--targets", "q,k,v"], "targets"),
    "--layers": (["--layers", "0"], "layers"),
    "--val-fraction": (["--val-fraction", "0.2"], "val_fraction"),
    "--too-long": (["--too-long", "error"], "too_long"),
    "--lr": (["--lr", "0.5"], "lr"),
    "--seed": (["--seed", "3"], "seed"),
    "--method": (["--method", "full"], "method"),
    "--data (new content)": (None, "data_sha256"),
    "--base (other weights)": (None, "base_sha256"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_with_a_changed_setting_is_refused_and_names_it(capsys, tmp_path, finished_run, change):
    folder, argv = finished_run
    argv = list(argv)
    flags, setting = CHANGES[change]
    if change.startswith("--data"):
        data = tmp_path / "notes.txt"
        data.write_text(some_text(8), encoding="utf-8")  # same path idea, other content
        argv[argv.index("--data") + 1] = str(data)
        flags = []
    elif change.startswith("--base"):
        argv[argv.index("--base") + 1] = _other_base(tmp_path)
        flags = []
    before = sorted(os.listdir(os.path.join(folder, "run")))
    code, _, err = cli(capsys, *argv, *flags, "--resume")
    line = one_error_line(err)
    assert code == 2 and "cannot resume" in line and f"{setting}=" in line, line
    assert sorted(os.listdir(os.path.join(folder, "run"))) == before


def test_resume_lists_every_difference(capsys, finished_run):
    _, argv = finished_run
    code, _, err = cli(capsys, *argv, "--alpha", "8", "--lora-dropout", "0.2", "--val-fraction", "0.3", "--resume")
    line = one_error_line(err)
    assert code == 2 and all(f"{s}=" in line for s in ("alpha", "lora_dropout", "val_fraction")), line


def test_resume_with_the_same_settings_is_accepted(capsys, finished_run):
    _, argv = finished_run
    code, _, err = cli(capsys, *argv, "--resume")
    assert code == 0, err


# ------------------------------------------------------------------ faults: interrupted, killed, disk full
def assert_ctrl_c_at_step(step: int, capsys, monkeypatch, *argv) -> None:
    """Run `tinylora ARGV...` with a Ctrl-C as batch `step` is drawn: the command must stop with exit 130."""
    real = tl_train.batch_for_step

    def ctrl_c(dataset, batch_size, seed, at):
        if at == step:
            raise KeyboardInterrupt
        return real(dataset, batch_size, seed, at)

    monkeypatch.setattr(tl_train, "batch_for_step", ctrl_c)
    assert cli(capsys, *argv)[0] == 130
    monkeypatch.undo()


def test_ctrl_c_then_resume_is_exact(capsys, monkeypatch, tmp_path, text_file, base):
    """The in-process interrupt of tests/test_cli.py, here with the run record: resume is accepted and exact."""
    args = ["finetune", "--base", base, "--data", text_file, "--max-steps", "4", "--checkpoint-every", "2",
            "--batch-size", "4", "--eval-batches", "1", "--no-progress"]
    assert cli(capsys, *args, "--out", tmp_path / "straight")[0] == 0
    assert_ctrl_c_at_step(3, capsys, monkeypatch, *args, "--out", tmp_path / "resumed")
    assert cli(capsys, *args, "--out", tmp_path / "resumed")[0] == 2  # without --resume: refused, nothing lost
    assert cli(capsys, *args, "--out", tmp_path / "resumed", "--resume")[0] == 0
    a = load_tensors(tmp_path / "straight" / "adapter" / "adapter.safetensors")
    b = load_tensors(tmp_path / "resumed" / "adapter" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_then_resume_is_exact(tmp_path, text_file, base):
    """A real `kill -9` of `tinylora finetune` after its first checkpoint; --resume ends bitwise as a straight run."""
    args = [sys.executable, "-m", "tinylora.cli", "finetune", "--base", base, "--data", str(text_file),
            "--max-steps", "40", "--checkpoint-every", "2", "--batch-size", "4", "--eval-batches", "1",
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(args + ["--out", str(tmp_path / "straight")], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "step-000004").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "adapter").exists()
    done = subprocess.run(args + ["--out", str(run), "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")], "a killed write's leftovers stayed"
    a = load_tensors(tmp_path / "straight" / "adapter" / "adapter.safetensors")
    b = load_tensors(run / "adapter" / "adapter.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    """What a SIGKILL mid-write leaves (a temp file, a temp checkpoint folder) goes at the next write there;
    a live writer's temp file stays."""
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f".model.safetensors.{dead}-0badf00d.tmp").write_bytes(b"half")
    os.makedirs(tmp_path / f".step-000002.{dead}-0badf00d.tmp")
    (tmp_path / f".other.json.{alive}-12345678.tmp").write_bytes(b"mine, in progress")
    save_tensors(tmp_path / "model.safetensors", {"w": np.ones(2, np.float32)})
    assert sorted(os.listdir(tmp_path)) == [f".other.json.{alive}-12345678.tmp", "model.safetensors"]
    assert remove_stale_temps(tmp_path) == []


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_tensors(tmp_path / "a.safetensors", {"w": np.ones(2, np.float32)})
        os.umask(0o077)
        save_tensors(tmp_path / "b.safetensors", {"w": np.ones(2, np.float32)})
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.safetensors").st_mode & 0o777 == 0o644
    assert os.stat(tmp_path / "b.safetensors").st_mode & 0o777 == 0o600


# the exact error the safetensors library raises when the disk fills up (measured on a full tmpfs)
SAFETENSORS_ENOSPC = "Error while serializing: I/O error: No space left on device (os error 28)"


def test_disk_full_while_checkpointing_is_one_line_and_keeps_the_previous_checkpoint(capsys, monkeypatch, tmp_path,
                                                                                    text_file, base):
    from safetensors import SafetensorError
    from safetensors import numpy as st_numpy

    real, calls = st_numpy.save_file, []

    def fill_up(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 2:  # the first checkpoint's two files are written, then the disk is full
            raise SafetensorError(SAFETENSORS_ENOSPC)
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(st_numpy, "save_file", fill_up)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", text_file, "--out", run, "--max-steps", "4",
                       "--checkpoint-every", "2", "--batch-size", "2", "--eval-batches", "1", "--no-progress")
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "step-000004" in line
    assert "step-000002 is intact" in line and "trainable.safetensors" in line
    assert read_json(run / "latest.json")["checkpoint"] == "step-000002"
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]
    monkeypatch.undo()
    assert cli(capsys, "finetune", "--base", base, "--data", text_file, "--out", run, "--max-steps", "4",
               "--checkpoint-every", "2", "--batch-size", "2", "--eval-batches", "1", "--no-progress",
               "--resume")[0] == 0  # space again: the run continues from step 2


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs, where this machine lets the test mount one (root on Linux); else the test skips."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): the injected ENOSPC test covers it")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_really_full_disk_is_one_line_and_keeps_the_previous_checkpoint(capsys, monkeypatch, small_tmpfs,
                                                                         text_file, base):
    """The same on a real full disk: fill the tmpfs right after the checkpoint at step 2."""
    real = ckpt.save_checkpoint

    def save_then_fill(run_dir, step, *args, **kwargs):
        path = real(run_dir, step, *args, **kwargs)
        if step == 2:
            try:
                with open(small_tmpfs / "filler", "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_fill)
    run = small_tmpfs / "run"
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", text_file, "--out", run, "--max-steps", "4",
                       "--checkpoint-every", "2", "--batch-size", "2", "--eval-batches", "1", "--no-progress")
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and str(run) in line, line
    assert read_json(run / "latest.json")["checkpoint"] == "step-000002"
    assert load_tensors(run / "step-000002" / "trainable.safetensors")  # intact and readable


# ------------------------------------------------------------------ numerics: nothing non-finite applied or saved
def tiny_lora():
    tinylora.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=TOK.vocab_size, block_size=16, n_embd=32, dropout=0.0))
    apply_lora(model, r=2, targets=("q", "v"))
    return model


def text_data():
    from tinylora.data import TextDataset

    return TextDataset(np.asarray(TOK.encode("the quick brown fox jumps over the lazy dog. " * 20)), block_size=16)


def poison_at(monkeypatch, model, step: int, value=float("nan")) -> None:
    """Before the batch of `step` (0-based) is fetched, put `value` into one LoRA B: the next loss is non-finite."""
    real = tl_train.batch_for_step

    def batch(dataset, batch_size, seed, s):
        if s == step:
            next(layer for _, layer in lora_layers(model)).lora_B.data[0, 0] = value
        return real(dataset, batch_size, seed, s)

    monkeypatch.setattr(tl_train, "batch_for_step", batch)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_step_is_not_applied_and_the_last_checkpoint_stays(monkeypatch, tmp_path, value):
    model = tiny_lora()
    poison_at(monkeypatch, model, step=3, value=value)
    config = TrainConfig(max_steps=6, batch_size=2, lr=1e-2, eval_every=100, eval_batches=1, checkpoint_every=2,
                         progress=False)
    with pytest.raises(NonFiniteError) as caught:
        train(model, text_data(), text_data(), config, run_dir=tmp_path)
    message = str(caught.value)
    assert "step 4" in message and "not applied" in message and "step-000002" in message and "--lr" in message
    assert read_json(tmp_path / "latest.json")["checkpoint"] == "step-000002"
    assert all(np.isfinite(a).all() for a in load_tensors(tmp_path / "step-000002" / "trainable.safetensors").values())
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl", encoding="utf-8")]  # strict JSON
    assert [r["step"] for r in rows] == [0, 1, 2, 3]  # step 4 was refused, not logged


def test_a_diverging_learning_rate_stops_with_one_line_and_writes_no_model(capsys, tmp_path, text_file, base):
    """The issue's case: a huge lr made 'validation loss 5.52 -> nan', exit 0 and a NaN model. Now: exit 2."""
    run = tmp_path / "run"
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", text_file, "--method", "full", "--lr", "1e30",
                       "--grad-clip", "0", "--max-steps", "3", "--batch-size", "2", "--eval-every", "1",
                       "--eval-batches", "1", "--no-progress", "--out", run)
    line = one_error_line(err)
    assert code == 2 and "training stopped" in line and "--lr" in line, line
    assert not (run / "model").exists() and not (run / "latest.json").exists()
    for row in open(run / "metrics.jsonl", encoding="utf-8"):
        json.loads(row)  # strict: no bare NaN
        assert "NaN" not in row and "Infinity" not in row


def test_non_finite_tensors_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteError, match="'blocks.0.w' holds 1 NaN/inf"):
        save_tensors(tmp_path / "x.safetensors", {"ok": np.ones(2, np.float32),
                                                  "blocks.0.w": np.array([1.0, np.inf], np.float32)})
    assert os.listdir(tmp_path) == []


def test_train_config_ranges_are_checked():
    for bad in ({"max_steps": 0}, {"eval_every": 0}, {"eval_batches": 0}, {"checkpoint_every": -1},
                {"lr": float("nan")}, {"lr": 0.0}, {"grad_clip": float("inf")}, {"batch_size": 0}):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=f"{name} must be"):
            TrainConfig(**bad)


# ------------------------------------------------------------------ data
def test_non_utf8_text_names_file_offset_and_line(tmp_path, capsys, base):
    path = tmp_path / "latin1.txt"
    path.write_bytes("line one\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt: not UTF-8 text: byte 0xe9 at offset 12 \(line 2\)"):
        read_documents(path)
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", path, "--out", tmp_path / "run", *FAST)
    assert code == 2 and "offset 12" in one_error_line(err)


def test_a_byte_order_mark_is_read(tmp_path):
    (tmp_path / "bom.csv").write_bytes("mr,ref\nname[Ab],Ab is here.\n".encode("utf-8-sig"))
    assert read_pairs(tmp_path / "bom.csv")[0]["prompt"] == "name[Ab] ||"
    (tmp_path / "bom.jsonl").write_bytes('{"prompt": "a", "completion": "b"}\n'.encode("utf-8-sig"))
    assert read_pairs(tmp_path / "bom.jsonl") == [{"prompt": "a", "completion": "b"}]
    (tmp_path / "bom.txt").write_bytes("hello".encode("utf-8-sig"))
    assert read_documents(tmp_path / "bom.txt") == ["hello"]


BAD_PAIRS = {  # file name -> (bytes, what the message names)
    "bad json line": ("p.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": \n', "p.jsonl, line 2"),
    "jsonl not an object": ("p.jsonl", b'{"prompt": "a", "completion": "b"}\n[1, 2]\n', "p.jsonl, line 2"),
    "jsonl not utf-8": ("p.jsonl", b'{"prompt": "a", "completion": "\xff"}\n', "p.jsonl: not UTF-8"),
    "csv empty ref": ("p.csv", b"mr,ref\nname[A],A.\nname[B],\n", "p.csv, line 3"),
    "csv field too large": ("p.csv", b"mr,ref\nname[A],A.\nname[B],\"" + b"x" * 200_000 + b"\"\n", "p.csv, line 3"),
    "csv missing column": ("p.csv", b"meaning,text\na,b\n", "missing column"),
    "csv not utf-8": ("p.csv", b"mr,ref\nname[Caf\xe9],x\n", "p.csv: not UTF-8"),
}


@pytest.mark.parametrize("name", list(BAD_PAIRS))
def test_bad_pairs_file_names_file_and_line(capsys, tmp_path, base, name):
    file_name, raw, named = BAD_PAIRS[name]
    (tmp_path / file_name).write_bytes(raw)
    with pytest.raises(ValueError, match="^" + str(tmp_path).replace("\\", "\\\\")):
        read_pairs(tmp_path / file_name)
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", tmp_path / file_name, "--out", tmp_path / "r",
                       *FAST)
    assert code == 2 and named in one_error_line(err), err


def test_too_long_pairs_are_skipped_by_default_and_named_by_file_line(tmp_path):
    rows = short_pairs(6)
    rows.insert(3, {"mr": "name[" + "X" * 80 + "]", "ref": "Long."})  # CSV line 5 (header is line 1)
    n = len(TOK.encode(rows[3]["mr"] + " ||")) + len(TOK.encode(" Long.")) + 1  # tokens it needs: 96
    write_e2e(rows, tmp_path / "d.csv")
    with pytest.warns(UserWarning, match=rf"skipped 1 of 7 examples .*d.csv, line 5, {n} tokens.*--too-long truncate"):
        data = load_pairs(tmp_path / "d.csv", TOK, block_size=64)
    assert len(data) == 6 and data.skipped == [(f"{tmp_path / 'd.csv'}, line 5", n)]
    assert all(len(x) <= 64 for x, _ in data.examples) and data.truncated == []
    with pytest.raises(ValueError, match=rf"d.csv, line 5: prompt, completion and end token take {n} tokens"):
        load_pairs(tmp_path / "d.csv", TOK, block_size=64, too_long="error")
    with pytest.warns(UserWarning, match=r"1 of 7 examples .* cut off \(first: .*d.csv, line 5\)"):
        cut = load_pairs(tmp_path / "d.csv", TOK, block_size=64, too_long="truncate")
    assert len(cut) == 7 and cut.truncated == [3]
    with pytest.raises(ValueError, match="none of the 1 examples fits"):
        PairDataset([{"prompt": "p" * 100, "completion": "c"}], TOK, block_size=64)


def test_finetune_reports_skipped_examples_in_one_warning_line(capsys, tmp_path, base):
    rows = short_pairs(12)
    rows.insert(3, {"mr": "name[" + "X" * 80 + "]", "ref": "Long."})
    write_e2e(rows, tmp_path / "d.csv")
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", tmp_path / "d.csv", "--out", tmp_path / "r",
                       *FAST)
    assert code == 0, err
    assert err.splitlines() == [f"tinylora: warning: skipped 1 of 13 examples longer than block_size + 1 = 65 "
                                f"tokens (first: {tmp_path / 'd.csv'}, line 5, 96 tokens); too_long='truncate' "
                                "(--too-long truncate) keeps them with the start of their prompts cut off"]


@pytest.mark.parametrize("data", ["text", "one pair", "pairs"])
def test_finetune_without_validation_works(capsys, tmp_path, base, data):
    """--val-fraction 0 (or a one-example .jsonl) used to crash after training formatting None."""
    if data == "text":
        path = tmp_path / "notes.txt"
        path.write_text(some_text(1), encoding="utf-8")
        extra = ["--val-fraction", "0"]
    else:
        path = tmp_path / "p.jsonl"
        n = 1 if data == "one pair" else 8
        path.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f" a{i}"}) + "\n" for i in range(n)))
        extra = [] if data == "one pair" else ["--val-fraction", "0"]
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", path, "--out", tmp_path / "r", *FAST, *extra)
    assert code == 0, err
    assert "no validation set" in out and (tmp_path / "r" / "adapter" / "adapter.safetensors").exists()
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl", encoding="utf-8")]
    assert all("val_loss" not in r for r in rows)


def test_cannot_split_message_suggests_a_value_that_works(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text("a few words", encoding="utf-8")
    with pytest.raises(ValueError, match="--val-fraction 0") as caught:
        load_text_dataset(path, TOK, block_size=4)
    assert "cannot split" in str(caught.value)
    train_set, val = load_text_dataset(path, TOK, block_size=4, val_fraction=0.0)  # the suggestion works
    assert val is None and len(train_set) > 0


# ------------------------------------------------------------------ generation and progress
def test_generate_samples_the_same_with_an_adapter_and_merged(capsys, tmp_path, base, adapter):
    """With the same --seed and temperature > 0, model + adapter and the merged model print the same text."""
    assert cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", tmp_path / "m")[0] == 0
    sample = ["--prompt", "the otter", "--max-new-tokens", "40", "--temperature", "1.0", "--seed", "5"]
    code_a, with_adapter, _ = cli(capsys, "generate", "--model", base, "--adapter", adapter, *sample)
    code_m, merged, _ = cli(capsys, "generate", "--model", tmp_path / "m", *sample)
    code_b, plain, _ = cli(capsys, "generate", "--model", base, *sample)
    assert code_a == code_m == code_b == 0
    assert with_adapter == merged and with_adapter != plain


def test_generated_text_holds_no_end_of_text_marker(capsys, base, adapter):
    code, out, _ = cli(capsys, "generate", "--model", base, "--adapter", adapter, "--max-new-tokens", "30")
    assert code == 0 and "<|endoftext|>" not in out


def test_training_off_a_terminal_prints_progress_lines(capsys, tmp_path, text_file, base):
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", text_file, "--out", tmp_path / "r",
                         "--max-steps", "6", "--log-every", "2", "--batch-size", "2", "--eval-batches", "1")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/6", "4/6", "6/6"] and "loss" in lines[0]


def test_one_learning_rate_default_for_lora_everywhere():
    """The command and the tutorials use the one measured LoRA default (tinylora.train.loop.LORA_LR); the demo's
    LoRA on every Linear uses the package's named rate for that setting, LORA_EVERY_LINEAR_LR."""
    from tinylora.cli.demo import LORA_TARGETS, SETTINGS

    assert SETTINGS["lora"][0] == tl_train.LORA_EVERY_LINEAR_LR and len(LORA_TARGETS) == 6
    tutorial = os.path.join(os.path.dirname(__file__), "..", "tutorials", "04_lora_in_15_minutes.ipynb")
    cells = json.load(open(tutorial, encoding="utf-8"))["cells"]
    assert any("lr=LORA_LR" in "".join(cell["source"]) for cell in cells)
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8").read()
    assert "LORA_LR = 3e-2" in readme and math.isclose(tl_train.LORA_LR, 3e-2)  # the README states the values
    assert "LORA_EVERY_LINEAR_LR = 1e-2" in readme and math.isclose(tl_train.LORA_EVERY_LINEAR_LR, 1e-2)


# ------------------------------------------------------------------ numerics: cross-entropy at extreme logits
@pytest.mark.parametrize("fast_paths", [True, False], ids=["kernels", "readable"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [1e6, 1e8])
def test_equal_logits_give_the_log_of_the_class_count_at_any_size(monkeypatch, fast_paths, dtype, value):
    """Known answer: 3 equal logits are a uniform softmax, loss ln 3, gradient (1/3 - onehot) / N. Writing the
    loss as z[t] - (m + log Σ exp(z - m)) rounds ln 3 away next to 1e8 (it gave 0 at 1e8, 1.125 at 1e6)."""
    from tinylora.engine import kernels

    monkeypatch.setattr(kernels, "_enabled", fast_paths)
    logits = tinylora.tensor(np.full((2, 3), value), dtype=dtype, requires_grad=True)
    loss = tinylora.functional.cross_entropy(logits, np.array([0, 2]))
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), (np.full((2, 3), 1 / 3) - np.eye(3)[[0, 2]]) / 2, atol=1e-7)


@pytest.mark.parametrize("fast_paths", [True, False], ids=["kernels", "readable"])
def test_cross_entropy_at_extreme_logits_equals_torch(monkeypatch, fast_paths):
    from conftest import require

    from tinylora.engine import kernels

    torch = require("torch")
    monkeypatch.setattr(kernels, "_enabled", fast_paths)
    rows = [([1e8, 1e8, 1e8], 1), ([1e6, 1e6, 1e6], 0), ([1e8, 0.0, -1e8], 1), ([3e4, 3e4 + 1, 3e4 - 1], 2),
            ([-1e8, -1e8, 5.0], 2), ([1e8, 1e8 + 8, 1e8 - 8], 0)]  # (float32 logits, target): ulp of 1e8 is 8
    for z, t in rows:
        z = np.array([z], dtype=np.float32)
        ours = tinylora.functional.cross_entropy(tinylora.tensor(z), np.array([t])).item()
        theirs = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor([t])).item()
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6), f"logits {z[0].tolist()}, target {t}"


# ------------------------------------------------------------------ resumes are bitwise whatever the load
# 4 C = 464 is not a multiple of 32: OpenBLAS splits the MLP's (256, 464) @ (464, 116) product differently on 1
# and 2 threads, so the thread count shows in the weights' last bits (at 4 C = 512 it does not, on this BLAS)
THREADED = GPTConfig(vocab_size=64, block_size=64, n_layer=1, n_head=4, n_embd=116, dropout=0.0)
THREADED_RUN = TrainConfig(max_steps=3, batch_size=4, lr=1e-3, checkpoint_every=1, eval_every=3, eval_batches=1,
                           progress=False)


_BATCH_FOR_STEP = tl_train.batch_for_step


def _run_at_load(monkeypatch, run_dir, free_cores: int, resume: bool = False, stop_before: int | None = None):
    """Train THREADED for THREADED_RUN with at most 2 threads while the load measurement sees `free_cores` free
    cores; stop_before: a Ctrl-C when the batch of that step is fetched. Returns the weights."""
    from tinylora.data import TextDataset
    from tinylora.engine.backend import threads

    monkeypatch.setattr(threads, "_limit", 2)
    monkeypatch.setattr(threads, "_adaptive", True)
    monkeypatch.setattr(threads, "free_cores", lambda: free_cores)

    def batch_or_interrupt(dataset, batch_size, seed, step):
        if step == stop_before:
            raise KeyboardInterrupt
        return _BATCH_FOR_STEP(dataset, batch_size, seed, step)

    monkeypatch.setattr(tl_train, "batch_for_step", batch_or_interrupt)
    tinylora.manual_seed(0)
    model = GPT(THREADED, device="cpu")
    data = TextDataset(np.random.default_rng(0).integers(0, 64, 4000), block_size=64)
    valid = TextDataset(np.random.default_rng(1).integers(0, 64, 400), block_size=64)
    train(model, data, valid, config=THREADED_RUN, run_dir=run_dir, resume=resume)
    return {name: p.detach().numpy().copy() for name, p in model.named_parameters()}


@pytest.mark.slow  # four short runs, each writing its loss plot: 5-10 s here
def test_a_resume_under_another_load_uses_the_runs_thread_plan_and_is_bitwise(monkeypatch, tmp_path):
    """The plan (each product's thread count, fixed for the run, engine/backend/threads.py) is measured when the
    run starts and kept in its checkpoints; a resume reuses it, so a run resumed on a busier machine multiplies
    with the same counts and ends with the same bits as a run never stopped."""
    from tinylora.engine import kernels

    pytest.importorskip("threadpoolctl")  # without it, tinylora never changes a thread count
    if not kernels.enabled():
        pytest.skip("TINYLORA_KERNELS=0: every product is a plain a @ b on BLAS's own thread count, nothing to plan")
    quiet = _run_at_load(monkeypatch, tmp_path / "quiet", free_cores=2)  # 2 threads for every large product
    busy = _run_at_load(monkeypatch, tmp_path / "busy", free_cores=1)
    if all(np.array_equal(quiet[n], busy[n]) for n in quiet):
        pytest.skip("this BLAS computes THREADED's products to the same bits on 1 and 2 threads: nothing to show")
    assert read_json(str(tmp_path / "quiet" / "step-000001" / "state.json"))["extra"]["threads"] == {
        "large_product_threads": 2, "small_flops": 2e6}

    with pytest.raises(KeyboardInterrupt):  # started quiet, stopped after the checkpoint of step 1 ...
        _run_at_load(monkeypatch, tmp_path / "resumed", free_cores=2, stop_before=1)
    resumed = _run_at_load(monkeypatch, tmp_path / "resumed", free_cores=1, resume=True)  # ... resumed busy
    for name in quiet:
        np.testing.assert_array_equal(resumed[name], quiet[name], err_msg=f"{name} after a resume under load")
    metrics = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    straight = [json.loads(line) for line in (tmp_path / "quiet" / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("val_loss") for r in metrics] == [r.get("val_loss") for r in straight]


def _stop_at_step_1(dataset, batch_size, seed, step):
    if step == 1:
        raise KeyboardInterrupt  # Ctrl-C after the checkpoint of step 1
    return _BATCH_FOR_STEP(dataset, batch_size, seed, step)


def test_a_damaged_thread_plan_in_a_checkpoint_is_one_error_naming_the_file(monkeypatch, tmp_path):
    from tinylora.data import TextDataset

    data = TextDataset(np.arange(200) % 64, block_size=8)
    tinylora.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=64, block_size=8, n_embd=16), device="cpu")
    config = TrainConfig(max_steps=2, batch_size=2, checkpoint_every=1, progress=False)
    monkeypatch.setattr(tl_train, "batch_for_step", _stop_at_step_1)
    with pytest.raises(KeyboardInterrupt):
        train(model, data, config=config, run_dir=tmp_path)
    monkeypatch.setattr(tl_train, "batch_for_step", _BATCH_FOR_STEP)
    state = tmp_path / "step-000001" / "state.json"
    record = json.loads(state.read_text())
    record["extra"]["threads"] = {"large_product_threads": "two", "small_flops": 2e6}
    state.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"step-000001/state.json: thread plan .*'large_product_threads': a positive"):
        train(model, data, config=config, run_dir=tmp_path, resume=True)


def test_a_bfloat16_qlora_adapter_without_ml_dtypes_is_one_line_in_every_command(capsys, monkeypatch, tmp_path, base):  # noqa: F811
    """QLoRA's default compute dtype needs ml_dtypes: without it, generate (like finetune) says what to install."""
    import sys as _sys

    (tmp_path / "notes.txt").write_text(some_text(seed=5), encoding="utf-8")
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", tmp_path / "notes.txt", "--quantize", "nf4",
                       "--out", tmp_path / "run", *FAST)
    if code != 0:
        pytest.skip(f"QLoRA with bfloat16 needs ml_dtypes to train at all here: {err.strip()}")
    monkeypatch.setitem(_sys.modules, "ml_dtypes", None)  # as if it were not installed
    code, _, err = cli(capsys, "generate", "--adapter", tmp_path / "run" / "adapter", "--prompt", "a",
                       "--max-new-tokens", "2")
    assert code == 2 and "ml-dtypes" in one_error_line(err) and "Traceback" not in err, err
