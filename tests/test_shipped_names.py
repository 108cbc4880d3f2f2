"""A shipped name ("base-mini") against a folder of the same name: never resolved silently.

The rule (tinylora.model.load.resolve, tinylora.cli.flags.refuse_shipped_name): a path with a separator
("./base-mini") is always the folder; a bare shipped name that is also a folder in the current directory
is refused when loaded; and no command writes a model or run to a bare shipped name.
"""

import os
import shutil

import pytest
from test_cli import FAST, adapter, base, cli, some_text  # noqa: F401  (base, adapter are fixtures)

from tinylora.model.load import SHIPPED, load_model, resolve


def test_a_bare_shipped_name_is_the_shipped_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./base-mini here
    assert resolve("base-mini") == SHIPPED["base-mini"]
    monkeypatch.chdir(os.path.dirname(SHIPPED["base-mini"]))  # here ./base-mini IS the shipped folder: no conflict
    assert resolve("base-mini") == SHIPPED["base-mini"]


def test_a_shipped_name_that_is_also_a_folder_here_is_refused_and_dot_slash_means_the_folder(
        tmp_path, monkeypatch, base):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    shutil.copytree(base, "base-mini")  # a local model folder named like the shipped base
    with pytest.raises(ValueError) as caught:
        load_model("base-mini")
    message = str(caught.value)
    assert "shipped base" in message and "./base-mini" in message and len(message.splitlines()) == 1
    model, _ = load_model("./base-mini")  # the folder, always
    assert model.config == load_model(base)[0].config != load_model(SHIPPED["base-mini"])[0].config


@pytest.mark.parametrize("command", ["merge", "finetune", "pretrain"])
def test_commands_refuse_to_write_to_a_bare_shipped_name(capsys, tmp_path, monkeypatch, base, adapter, command):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(some_text(3))
    argv = {"merge": ["--base", base, "--adapter", adapter],
            "finetune": ["--base", base, "--data", "notes.txt", *FAST],
            "pretrain": ["--data", "notes.txt", "--config", "tiny", *FAST]}[command]
    code, _, err = cli(capsys, command, *argv, "--out", "base-mini")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'base-mini' is the name of a shipped base" in err and "./base-mini" in err
    assert not os.path.exists("base-mini")  # refused before anything was written


def test_merge_into_dot_slash_name_then_load_it_by_path_not_by_bare_name(capsys, tmp_path, monkeypatch,
                                                                          base, adapter):  # noqa: F811
    """What a user following the README does: merge, then use the merged model."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", "./base-mini")
    assert code == 0, err
    code, out, err = cli(capsys, "info", "--model", "base-mini")  # the shipped one, or the merged folder?
    assert code == 2 and "shipped base" in err and "./base-mini" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "info", "--model", "./base-mini")
    assert code == 0, err
    assert out.strip().startswith(f"trainable: {load_model(base)[0].num_parameters():,} of ")
