"""Reliability of what the newer commands write and the flags they take: evaluate, serve, merge, analyze, course.

No output replaces an input: `--out` equal to (or inside, or holding) the data, the requests or the
adapter being read is refused, whatever --overwrite says, before anything is loaded. A model folder
is written whole and replaces an earlier one in one rename, so a run killed mid-write leaves the old
model or the new one, never new weights beside an old config.json. Every numeric flag has a range,
and a bad value is one line naming the flag.
"""

import errno
import json
import os

import pytest
from test_cli import adapter, base, cli, short_pairs, some_text  # noqa: F401 (fixtures)
from test_reliability_run import one_error_line

from tinylora.data import write_jsonl
from tinylora.io import read_json
from tinylora.model import load as load_module
from tinylora.model.load import load_model, save_model


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TINYLORA_DEBUG", raising=False)


@pytest.fixture
def held_out(tmp_path):
    path = tmp_path / "held_out.jsonl"
    write_jsonl([{"prompt": r["mr"] + " ||", "completion": r["ref"]} for r in short_pairs(4)], path)
    return path


@pytest.fixture
def requests(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text('{"adapter": "a", "prompt": "name[Ab] ||"}\n{"prompt": "name[Bo] ||"}\n', encoding="utf-8")
    return path


def _folder_state(folder) -> dict:
    """{file name: bytes} of every file directly in `folder`."""
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))
            if os.path.isfile(os.path.join(folder, name))}


# ------------------------------------------------------------------ no output names an input
def test_evaluate_out_equal_to_data_is_refused_and_the_data_kept(capsys, base, held_out):  # noqa: F811
    before = held_out.read_bytes()
    code, _, err = cli(capsys, "evaluate", "--model", base, "--data", held_out, "--out", held_out)
    assert code == 2 and "--data" in one_error_line(err) and held_out.read_bytes() == before


@pytest.mark.parametrize("where", ["the data file", "the data folder", "inside the base", "the base"])
def test_finetune_out_over_its_data_or_its_base_is_refused_and_nothing_written(capsys, tmp_path, base, where):  # noqa: F811
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "notes.txt").write_text(some_text(seed=3), encoding="utf-8")
    data = folder / "notes.txt" if where == "the data file" else folder
    out = {"the data file": data, "the data folder": folder, "inside the base": os.path.join(base, "run"),
           "the base": base}[where]
    base_before, data_before = _folder_state(base), _folder_state(folder)
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", out, "--overwrite",
                       "--max-steps", "1", "--no-progress")
    flag = "--base" if "base" in where else "--data"
    assert code == 2 and flag in one_error_line(err), err
    assert _folder_state(base) == base_before and _folder_state(folder) == data_before
    assert not os.path.exists(os.path.join(base, "run"))


def test_finetune_into_a_model_folder_is_refused_without_overwrite(capsys, tmp_path, base):  # noqa: F811
    model, tokenizer = load_model(base)
    save_model(model, tmp_path / "merged", tokenizer)
    (tmp_path / "notes.txt").write_text(some_text(seed=4), encoding="utf-8")
    before = _folder_state(tmp_path / "merged")
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", tmp_path / "notes.txt",
                       "--out", tmp_path / "merged", "--max-steps", "1", "--no-progress")
    assert code == 2 and "already holds a model" in one_error_line(err), err
    assert _folder_state(tmp_path / "merged") == before


def test_evaluate_out_inside_the_adapter_is_refused(capsys, base, adapter, held_out):  # noqa: F811
    out = os.path.join(adapter, "scores.json")
    code, _, err = cli(capsys, "evaluate", "--model", base, "--adapter", adapter, "--data", held_out, "--out", out)
    assert code == 2 and "lies inside --adapter" in one_error_line(err) and not os.path.exists(out)


def test_serve_out_equal_to_requests_is_refused_and_the_requests_kept(capsys, base, adapter, requests):  # noqa: F811
    before = requests.read_bytes()
    code, _, err = cli(capsys, "serve", "--model", base, "--adapter", f"a={adapter}", "--requests", requests,
                       "--out", requests)
    assert code == 2 and "--requests" in one_error_line(err) and requests.read_bytes() == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
@pytest.mark.parametrize("where", ["the adapter", "inside the adapter"])
def test_merge_never_writes_into_the_adapter_it_reads(capsys, tmp_path, base, adapter, where, overwrite):  # noqa: F811
    before = _folder_state(adapter)
    out = adapter if where == "the adapter" else os.path.join(adapter, "merged")
    code, _, err = cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", out, *overwrite)
    assert code == 2 and "--adapter" in one_error_line(err)
    assert _folder_state(adapter) == before


# ------------------------------------------------------------------ a model folder is replaced in one rename

def test_merge_overwrite_killed_between_its_writes_leaves_the_old_model(capsys, monkeypatch, tmp_path, base,  # noqa: F811
                                                                        adapter):  # noqa: F811
    out = tmp_path / "merged"
    assert cli(capsys, "merge", "--base", base, "--out", out, "--adapter", adapter)[0] == 0
    # make the folder's current model visibly different from what the merge will write
    model, tokenizer = load_model(base)
    save_model(model, out, tokenizer)
    old = _folder_state(out)
    real = load_module.write_json_atomic

    def killed(path, obj):  # the weights are written, then the process dies before config.json
        if os.path.basename(path) == "config.json":
            raise KeyboardInterrupt
        return real(path, obj)

    monkeypatch.setattr(load_module, "write_json_atomic", killed)
    assert cli(capsys, "merge", "--base", base, "--out", out, "--adapter", adapter, "--overwrite")[0] == 130
    monkeypatch.undo()
    assert _folder_state(out) == old  # the old model whole: not new weights beside the old config.json
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # the half-written folder is gone
    assert cli(capsys, "merge", "--base", base, "--out", out, "--adapter", adapter, "--overwrite")[0] == 0
    assert _folder_state(out)["model.safetensors"] != old["model.safetensors"]  # the new model, whole
    assert read_json(out / "config.json")["merged_from"]["adapter"] == str(adapter)


def test_merge_overwrite_refuses_a_folder_holding_more_than_a_model(capsys, tmp_path, base, adapter):  # noqa: F811
    out = tmp_path / "merged"
    assert cli(capsys, "merge", "--base", base, "--out", out, "--adapter", adapter)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "merge", "--base", base, "--out", out, "--adapter", adapter, "--overwrite")
    assert code == 2 and "notes.txt" in one_error_line(err) and (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ serve, evaluate, analyze, course: flag ranges
FLAGS = {  # argv after the command -> the flag the one line must name
    "serve batch-size -1": (["serve", "--requests", "r.jsonl", "--out", "o.jsonl", "--batch-size", "-1"],
                            "--batch-size"),
    "serve batch-size 0": (["serve", "--requests", "r.jsonl", "--out", "o.jsonl", "--batch-size", "0"],
                           "--batch-size"),
    "serve temperature nan": (["serve", "--requests", "r.jsonl", "--out", "o.jsonl", "--temperature", "nan"],
                              "--temperature"),
    "serve temperature -1": (["serve", "--requests", "r.jsonl", "--out", "o.jsonl", "--temperature", "-1"],
                             "--temperature"),
    "serve max-new-tokens 0": (["serve", "--requests", "r.jsonl", "--out", "o.jsonl", "--max-new-tokens", "0"],
                               "--max-new-tokens"),
    "serve seed -1": (["serve", "--requests", "r.jsonl", "--out", "o.jsonl", "--seed", "-1"], "--seed"),
    "evaluate max-prompts -1": (["evaluate", "--data", "d.jsonl", "--max-prompts", "-1"], "--max-prompts"),
    "evaluate max-new-tokens 0": (["evaluate", "--data", "d.jsonl", "--max-new-tokens", "0"], "--max-new-tokens"),
    "analyze ranks a": (["analyze", "--ranks", "a"], "--ranks"),
    "analyze ranks 0": (["analyze", "--ranks", "1,0"], "--ranks"),
    "analyze steps 0": (["analyze", "--steps", "0"], "--steps"),
    "analyze seed -1": (["analyze", "--seed", "-1"], "--seed"),
    "analyze lr nan": (["analyze", "--lr", "nan"], "--lr"),
    "grade timeout nan": (["course", "grade", "somewhere", "--timeout", "nan"], "--timeout"),
    "grade timeout 0": (["course", "grade", "somewhere", "--timeout", "0"], "--timeout"),
    "solve task 0": (["course", "solve", "somewhere", "--task", "0"], "--task"),
}


@pytest.mark.parametrize("name", list(FLAGS))
def test_flag_out_of_range_is_one_line_naming_it(capsys, name):
    argv, flag = FLAGS[name]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and flag in one_error_line(err)


def test_a_list_shaped_adapter_in_a_request_is_one_line(capsys, tmp_path, base, adapter):  # noqa: F811
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"adapter": ["a"], "prompt": "hi"}\n', encoding="utf-8")
    code, _, err = cli(capsys, "serve", "--model", base, "--adapter", f"a={adapter}", "--requests", requests,
                       "--out", tmp_path / "out.jsonl")
    assert code == 2 and f"{requests}:1" in one_error_line(err) and '"adapter"' in err


def test_a_byte_order_mark_in_requests_is_read_like_training_data(capsys, tmp_path, base, adapter):  # noqa: F811
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b"\xef\xbb\xbf" + '{"adapter": "a", "prompt": "name[Ab] ||"}\n'.encode())
    out = tmp_path / "out.jsonl"
    code, _, err = cli(capsys, "serve", "--model", base, "--adapter", f"a={adapter}", "--requests", requests,
                       "--out", out, "--max-new-tokens", "2")
    assert code == 0, err
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0])["adapter"] == "a"


def test_course_release_all_refuses_a_taken_part_before_writing_anything(capsys, tmp_path):
    (tmp_path / "part" / "A3").mkdir(parents=True)
    (tmp_path / "part" / "A3" / "mine.txt").write_text("keep")
    code, _, err = cli(capsys, "course", "release", "all", "--out", tmp_path / "part")
    assert code == 2 and "A3" in one_error_line(err)
    assert sorted(os.listdir(tmp_path / "part")) == ["A3"]  # A1 and A2 were not written either


# ------------------------------------------------------------------ side outputs never stop a run
def test_a_full_disk_while_writing_the_loss_plot_still_saves_the_adapter(capsys, monkeypatch, tmp_path, base):  # noqa: F811
    """loss.png is a side output: ENOSPC while it is written is one warning, and the adapter is saved."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    def disk_full(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")  # the disk fills half way through the file
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_full)
    data = tmp_path / "notes.txt"
    data.write_text(some_text(2), encoding="utf-8")
    run = tmp_path / "run"
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", run, "--max-steps", "2",
                         "--batch-size", "4", "--eval-batches", "1", "--no-progress")
    assert code == 0, err
    assert (run / "adapter" / "adapter.safetensors").exists()
    warning = [line for line in err.splitlines() if "loss.png" in line]
    assert len(warning) == 1 and warning[0].startswith("tinylora: warning: ") and "No space left" in warning[0]
    assert not (run / "loss.png").exists() and not [n for n in os.listdir(run) if n.endswith(".tmp")]


def test_requests_that_are_not_utf8_name_file_offset_and_line(capsys, tmp_path, base, adapter):  # noqa: F811
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(b'{"prompt": "hi"}\n{"prompt": "caf\xe9"}\n')
    code, _, err = cli(capsys, "serve", "--model", base, "--requests", requests, "--out", tmp_path / "out.jsonl")
    line = one_error_line(err)
    assert code == 2 and str(requests) in line and "line 2" in line


@pytest.mark.parametrize("can_exchange", [True, False])
def test_a_folder_written_over_an_old_one_is_whole_and_leaves_nothing_behind(monkeypatch, tmp_path, can_exchange):
    """write_folder_atomic over an existing folder, with the atomic exchange and with the two-rename fallback."""
    from tinylora import io

    if not can_exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "old.txt").write_text("old")

    def write(temp):
        with open(os.path.join(temp, "new.txt"), "w") as f:
            f.write("new")

    io.write_folder_atomic(folder, write)
    assert sorted(os.listdir(folder)) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["model"]

    def fails(temp):
        write(temp)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="cannot write"):
        io.write_folder_atomic(folder, fails)
    assert sorted(os.listdir(folder)) == ["new.txt"] and sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.slow
def test_merge_overwrite_killed_at_any_moment_leaves_the_old_model_or_the_new(tmp_path, base, adapter):  # noqa: F811
    """A real `kill -9` of `merge --overwrite` at spread-out moments: the folder is always one whole model."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    merge = [sys.executable, "-m", "tinylora.cli", "merge", "--base", base, "--adapter", adapter, "--overwrite"]
    assert subprocess.run([*merge, "--out", tmp_path / "new"], env=env, capture_output=True).returncode == 0
    new = _folder_state(tmp_path / "new")
    out = tmp_path / "merged"
    for delay in (0.2, 0.6, 1.0, 1.4, 1.8, 2.2, 2.6, 3.0):
        model, tokenizer = load_model(base)
        save_model(model, out, tokenizer)  # the old model, again
        old = _folder_state(out)
        proc = subprocess.Popen([*merge, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = _folder_state(out)
        assert state in (old, new), f"killed after {delay} s: a mix of {sorted(state)}"


def test_a_model_folder_that_holds_a_run_is_replaced_whole_and_keeps_the_run(monkeypatch, tmp_path, base):  # noqa: F811
    """pretrain's --out holds run/ beside the model: the new model replaces the old in one rename, run/ stays."""
    folder = tmp_path / "model"
    model, tokenizer = load_model(base)
    save_model(model, folder, tokenizer)
    (folder / "run" / "step-000002").mkdir(parents=True)
    (folder / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    (folder / "run" / "step-000002" / "state.json").write_text("{}")
    old_model = _folder_state(folder)
    real = load_module.write_json_atomic

    def killed(path, obj):
        if os.path.basename(path) == "config.json":
            raise KeyboardInterrupt
        return real(path, obj)

    monkeypatch.setattr(load_module, "write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, folder, tokenizer, extra={"new": True})
    monkeypatch.undo()
    assert _folder_state(folder) == old_model and (folder / "run" / "step-000002" / "state.json").exists()
    save_model(model, folder, tokenizer, extra={"new": True})
    assert read_json(folder / "config.json")["new"] is True
    assert (folder / "run" / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert (folder / "run" / "step-000002" / "state.json").read_text() == "{}"
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary folder left


def test_without_hard_links_a_model_beside_a_run_is_written_file_by_file(monkeypatch, tmp_path, base):  # noqa: F811
    import errno

    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted", source)

    monkeypatch.setattr(os, "link", no_links)
    folder = tmp_path / "model"
    model, tokenizer = load_model(base)
    save_model(model, folder, tokenizer)
    (folder / "run").mkdir()
    (folder / "run" / "metrics.jsonl").write_text("{}\n")
    save_model(model, folder, tokenizer, extra={"new": True})
    assert read_json(folder / "config.json")["new"] is True and (folder / "run" / "metrics.jsonl").read_text() == "{}\n"
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_serve_takes_force_for_an_adapter_of_another_base_as_its_message_says(capsys, tmp_path, base, adapter, requests):  # noqa: F811
    model, tokenizer = load_model(base)
    model.wte.weight.data[0, 0] += 1.0  # the same shapes, other weights
    save_model(model, tmp_path / "other", tokenizer)
    code, _, err = cli(capsys, "serve", "--model", tmp_path / "other", "--adapter", f"a={adapter}",
                       "--requests", requests, "--out", tmp_path / "c.jsonl", "--max-new-tokens", "2")
    assert code == 2 and "--force" in one_error_line(err), err
    code, _, err = cli(capsys, "serve", "--model", tmp_path / "other", "--adapter", f"a={adapter}", "--force",
                       "--requests", requests, "--out", tmp_path / "c.jsonl", "--max-new-tokens", "2")
    assert code == 0, err
    assert len((tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()) == 2
