"""Reliability of every JSON and safetensors reader: one place (tinylora.io) names the file and says what is wrong.

Hostile JSON (nesting deeper than Python's parser goes, a number with more digits than Python
converts, an object where a list is expected or the reverse, a field of the wrong shape) and hostile
safetensors headers (shapes that overflow int64, negative or fractional dims, string offsets,
tensors that share bytes) are each one FileFormatError naming the file, and one line on the command line.
"""

import json
import os
import shutil
import struct

import pytest
from test_cli import adapter, base, cli  # noqa: F401 (fixtures)
from test_reliability_run import one_error_line

from tinylora.io import FileFormatError, load_tensors, read_json, tensor_shapes

HOSTILE_JSON = {  # file text -> words the error must hold besides the file's name
    "100,000-deep nesting": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "100,001-digit number": ('{"n": ' + "7" * 100_001 + "}", "unreadable JSON value"),
    "a list": ("[1, 2]", "JSON list"),
    "not JSON": ("{oops", "not valid JSON"),
    "not UTF-8": (b"\xff\xfe{}", "UTF-8"),
}


@pytest.mark.parametrize("name", list(HOSTILE_JSON))
def test_hostile_json_is_one_error_naming_the_file(tmp_path, name):
    text, words = HOSTILE_JSON[name]
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(FileFormatError) as err:
        read_json(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_a_list_shaped_adapter_config_is_one_line_in_generate(capsys, tmp_path, base, adapter):  # noqa: F811
    folder = tmp_path / "adapter"
    folder.mkdir()
    shutil.copy(os.path.join(adapter, "adapter.safetensors"), folder / "adapter.safetensors")
    (folder / "adapter_config.json").write_text("[1, 2]")
    code, _, err = cli(capsys, "generate", "--model", base, "--adapter", folder, "--max-new-tokens", "2")
    assert code == 2 and "adapter_config.json" in one_error_line(err) and "JSON list" in err


def test_wrong_shaped_method_settings_are_one_line(capsys, tmp_path, base, adapter):  # noqa: F811
    folder = tmp_path / "adapter"
    folder.mkdir()
    shutil.copy(os.path.join(adapter, "adapter.safetensors"), folder / "adapter.safetensors")
    config = {"format": "tinylora-method-adapter", "method": "dora", "settings": [1, 2], "base_model": {}}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "generate", "--model", base, "--adapter", folder, "--max-new-tokens", "2")
    assert code == 2 and "adapter_config.json" in one_error_line(err) and "'settings'" in err


@pytest.mark.parametrize("text", ["[1, 2]", "{}"])
def test_a_wrong_course_release_record_is_one_line(capsys, tmp_path, text):
    from tinylora.course.release import RELEASE_FILE

    (tmp_path / RELEASE_FILE).write_text(text)
    code, _, err = cli(capsys, "course", "solve", tmp_path)
    assert code == 2 and RELEASE_FILE in one_error_line(err)


# ------------------------------------------------------------------ hostile safetensors headers
def safetensors_file(path, header: dict, data: bytes = b"\0" * 16):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


HOSTILE_HEADERS = {  # header -> words the error must hold besides the file's name
    "shape overflows int64": ({"w": {"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 16]}},
                              "occupies 16 bytes"),
    "negative dim": ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "integers >= 0"),
    "float dim": ({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 16]}}, "integers >= 0"),
    "bool dim": ({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, "integers >= 0"),
    "string offsets": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, "data_offsets"),
    "three offsets": ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8, 16]}}, "data_offsets"),
    "list dtype": ({"w": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, "dtype"),
    "entry is a list": ({"w": [1, 2]}, "malformed"),
    "overlapping tensors": ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                            "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "overlap"),
    "metadata not strings": ({"__metadata__": {"k": 1}, "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                             "__metadata__"),
    "header is a list": ([1, 2], "JSON list"),
}


@pytest.mark.parametrize("name", list(HOSTILE_HEADERS))
@pytest.mark.parametrize("reader", [load_tensors, tensor_shapes])
def test_hostile_safetensors_header_is_one_error_naming_the_file(tmp_path, name, reader):
    header, words = HOSTILE_HEADERS[name]
    path = safetensors_file(tmp_path / "adapter.safetensors", header)
    with pytest.raises(FileFormatError) as err:
        reader(path)
    assert str(path) in str(err.value) and words in str(err.value), str(err.value)


def test_a_valid_header_still_reads(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}, "__metadata__": {"k": "v"}}
    tensors = load_tensors(safetensors_file(tmp_path / "ok.safetensors", header))
    assert sorted(tensors) == ["a", "b"] and tensors["a"].shape == (2,)


def test_a_metrics_line_cut_short_is_named_by_file_and_line(tmp_path):
    from tinylora.train.plot import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo', encoding="utf-8")
    with pytest.raises(FileFormatError, match=f"{path}:2"):
        read_metrics(path)


def test_a_checkpoint_state_without_its_extra_is_one_line(capsys, tmp_path, base):  # noqa: F811
    from test_cli import FAST, some_text

    data = tmp_path / "notes.txt"
    data.write_text(some_text(1), encoding="utf-8")
    args = ["finetune", "--base", base, "--data", data, "--out", tmp_path / "run", *FAST, "--checkpoint-every", "1"]
    assert cli(capsys, *args)[0] == 0
    state = tmp_path / "run" / "step-000003" / "state.json"
    saved = json.loads(state.read_text())
    del saved["extra"]
    state.write_text(json.dumps(saved))
    code, _, err = cli(capsys, *args, "--resume")
    assert code == 2 and "state.json" in one_error_line(err) and "'extra'" in err
