"""Training checkpoints: what is needed to stop a run and resume it exactly.

A checkpoint is a folder:

    step-000200/
        trainable.safetensors   the trainable parameters only (a LoRA adapter's A and B,
                                or every weight for full fine-tuning), by parameter name
        optimizer.safetensors   the optimizer's state arrays (Adam's m and v, ...)
        state.json              step, optimizer/scheduler settings, RNG state, run config and thread
                                plan (extra: what train() passes, see train/loop.py)
        method_state.safetensors  a method's own training state, if it has one (AdaLoRA's importance
                                scores and rank pattern: RankAllocator.state_dict)

Frozen weights are not copied: they are whatever the base model was. The
folder is written under a temporary name and renamed into place when complete,
and `latest.json` (written atomically) names the newest one, so a crash never
leaves a half-written checkpoint that a resume would trust; the temporary
folder of a killed write is deleted by the next checkpoint. A full disk raises
one OSError that says the previous checkpoint is intact. Tensors holding NaN or
inf are never saved (tinylora.io.check_finite). Files are safetensors and JSON:
nothing is pickled.

The run folder around the checkpoints:

    run.json        what the run was (TrainConfig and setup: method, data and base hashes, ...)
    metrics.jsonl   one JSON object per step;  loss.png
    adapter/ or model/   what `tinylora finetune` writes at the end
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from tinylora.engine import random as tl_random
from tinylora.errors import MissingNameError
from tinylora.io import (FileFormatError, load_tensors, read_json, remove_stale_temps, save_tensors, temp_path_for,
                         write_json_atomic)

LATEST = "latest.json"
RUN_RECORD = "run.json"
METHOD_STATE = "method_state.safetensors"
# what a run writes into its folder: an earlier run is recognised, and --overwrite deletes, by these names
RUN_OUTPUTS = (LATEST, RUN_RECORD, "metrics.jsonl", "loss.png", "adapter", "model", "step-[0-9]*")


def earlier_run(run_dir) -> list:
    """The names in `run_dir` that an earlier run wrote (empty for a new or unrelated folder)."""
    return sorted(os.path.basename(p) for pattern in RUN_OUTPUTS
                  for p in glob.glob(os.path.join(glob.escape(os.fspath(run_dir)), pattern)))


def check_run_dir_free(run_dir) -> None:
    """Raise FileExistsError if `run_dir` holds an earlier run (saying how to continue or replace it)."""
    found = earlier_run(run_dir)
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise FileExistsError(f"{run_dir} holds an earlier run ({shown}); continue it with --resume, "
                              "replace it with --overwrite, or choose another folder")


def claim_run_dir(run_dir, overwrite: bool = False) -> None:
    """Make `run_dir` ready for a new run: refuse one that holds an earlier run, unless `overwrite`,
    which deletes that run's files (RUN_OUTPUTS) and nothing else."""
    if not overwrite:
        check_run_dir_free(run_dir)
    for name in earlier_run(run_dir):
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    os.makedirs(run_dir, exist_ok=True)


def _trainable_state(model) -> dict:
    return {name: p.data for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir, step: int, model, optimizer, scheduler=None, extra: dict | None = None,
                    method_state=None) -> str:
    """Write checkpoint `step` into `run_dir` (atomically) and point latest.json at it. Returns its path.

    method_state: an object with state_dict() -> {name: array} (AdaLoRA's RankAllocator), or None.
    """
    os.makedirs(run_dir, exist_ok=True)
    remove_stale_temps(run_dir)  # what a killed checkpoint write left behind
    name = f"step-{step:06d}"
    final = os.path.join(run_dir, name)
    temp = temp_path_for(final)
    os.makedirs(temp)
    try:
        save_tensors(os.path.join(temp, "trainable.safetensors"), _trainable_state(model))
        opt_state = optimizer.state_dict()
        flat = {f"{name}/{slot}": array for name, slots in opt_state["state"].items() for slot, array in slots.items()}
        save_tensors(os.path.join(temp, "optimizer.safetensors"), flat)
        if method_state is not None:
            save_tensors(os.path.join(temp, METHOD_STATE), method_state.state_dict())
        write_json_atomic(
            os.path.join(temp, "state.json"),
            {
                "step": step,
                "optimizer": {"param_groups": opt_state["param_groups"], "step": opt_state["step"]},
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "rng": tl_random.get_rng_state(),
                "extra": extra or {},
            },
        )
    except BaseException as err:  # a failed write (disk full, Ctrl-C) leaves no half folder behind
        shutil.rmtree(temp, ignore_errors=True)
        _add_what_is_kept(err, run_dir, name)
        raise
    if os.path.exists(final):  # re-saving the same step: replace the old folder
        shutil.rmtree(final)
    os.replace(temp, final)  # the folder appears complete or not at all
    try:
        write_json_atomic(os.path.join(run_dir, LATEST), {"checkpoint": name, "step": step})
    except OSError as err:
        _add_what_is_kept(err, run_dir, name)
        raise
    return final


def _add_what_is_kept(err: BaseException, run_dir, name: str) -> None:
    """Append to a failed write's OSError (disk full, ...) which checkpoint a resume would use."""
    if isinstance(err, OSError) and err.errno is not None:
        previous = latest_checkpoint(run_dir)
        kept = f"{previous} is intact and latest.json still names it" if previous else "no earlier checkpoint"
        err.strerror = f"{err.strerror}; checkpoint {name} was not written, {kept}"


def latest_checkpoint(run_dir) -> str | None:
    """The newest complete checkpoint folder in `run_dir`, or None.

    latest.json may name only a step-NNNNNN folder inside `run_dir` (what
    save_checkpoint writes): never a path that leads elsewhere.
    """
    pointer = os.path.join(run_dir, LATEST)
    if not os.path.exists(pointer):
        return None
    record = read_json(pointer)
    name = record.get("checkpoint") if isinstance(record, dict) else None
    if not isinstance(name, str) or not re.fullmatch(r"step-\d+", name):
        raise FileFormatError(f"{pointer}: 'checkpoint' must name a step-NNNNNN folder inside {run_dir}, "
                              f"got {name!r}")
    path = os.path.join(run_dir, name)
    root = os.path.realpath(run_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:  # a link that leads out of the run
        raise FileFormatError(f"{pointer}: {name} is a link to {os.path.realpath(path)}, outside {run_dir}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{pointer} points at {name}, but {path} does not exist")
    return path


def load_method_state(path, method_state) -> None:
    """Restore `method_state` (see save_checkpoint) from checkpoint folder `path`."""
    file = os.path.join(path, METHOD_STATE)
    if not os.path.exists(file):
        raise FileFormatError(f"{path} holds no {METHOD_STATE}, which this method needs to resume exactly "
                              "(a checkpoint written before it was saved?); start again with --overwrite")
    method_state.load_state_dict(load_tensors(file), source=file)


def load_checkpoint(path, model, optimizer, scheduler=None) -> dict:
    """Restore model's trainable parameters, the optimizer, the scheduler and the RNG from `path`.

    `path` may be a checkpoint folder or a run folder (then its latest checkpoint).
    Returns the state.json dict (with "step" and "extra"). All or nothing for the
    model: every file is read and checked first, and if restoring fails after
    all, the trainable parameters get their old values back.
    """
    if os.path.exists(os.path.join(path, LATEST)):
        path = latest_checkpoint(path)
    state = read_json(os.path.join(path, "state.json"))
    if not isinstance(state, dict) or not isinstance(state.get("optimizer"), dict) or "rng" not in state:
        raise FileFormatError(f"{os.path.join(path, 'state.json')}: expected an object with 'optimizer' "
                              "(an object) and 'rng'")
    trainable = load_tensors(os.path.join(path, "trainable.safetensors"))
    own = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(own) - set(trainable))
    unexpected = sorted(set(trainable) - set(own))
    if missing or unexpected:
        raise MissingNameError(
            f"checkpoint {path} does not match the model's trainable parameters: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]} (same --method, --rank and --targets?)"
        )
    shapes = [f"{n}: {tuple(a.shape)} saved, {own[n].shape} in the model"
              for n, a in trainable.items() if tuple(a.shape) != own[n].shape]
    if shapes:  # checked before anything is loaded, so a failed load leaves the model as it was
        raise ValueError(f"checkpoint {path} does not match the model's trainable parameters: "
                         f"{'; '.join(shapes[:3])} (same --rank?)")
    opt_state = dict(state["optimizer"], state={})
    for key, array in load_tensors(os.path.join(path, "optimizer.safetensors")).items():
        name, slot = key.rsplit("/", 1)
        opt_state["state"].setdefault(name, {})[slot] = array
    before = {name: p.data.copy() for name, p in own.items()}
    try:
        model.load_state_dict(trainable, strict=False)
        optimizer.load_state_dict(opt_state)
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        tl_random.set_rng_state(state["rng"])
    except BaseException:
        for name, data in before.items():  # the model exactly as it was
            own[name].data[...] = data
        raise
    return state
