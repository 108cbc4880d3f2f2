"""Reliability, files and the LoRA API: every bad input gets one error of a known class that names the culprit.

Each case in FILE_CASES and API_CASES builds one bad input (a hostile or careless
file, a bad call), runs the loader or function, and asserts the exact error class
and that the message names what is wrong: the file, the key, and what was found
(and where it helps, what was expected). The all-or-nothing tests check that a
failed call leaves the model exactly as it was (same modules, same flags, same
bits). Nothing here needs torch: Hugging Face folders are written by save_gpt2,
PEFT folders by export_peft.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import tinylora
from tinylora import GPT, GPTConfig
from tinylora.cli import main
from tinylora.io import FileFormatError, load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora import (
    BaseMismatchError, LoRALinear, apply_lora, export_peft, import_peft, load_adapter, lora_layers,
    lora_state_dict, merge_and_unload, merge_lora, save_adapter, set_adapter_weights,
)
from tinylora.model import hf_gpt2
from tinylora.model import load as load_module
from tinylora.model.hf_gpt2 import save_gpt2, to_hf_state_dict
from tinylora.model.load import load_gpt, load_model, save_model
from tinylora.tokenizers import ByteTokenizer
from tinylora.train import checkpoint as ckpt
from tinylora.train.loop import TrainConfig, make_optimizer

C = 16  # the width of every model here
CONFIG = GPTConfig.tiny(vocab_size=257, block_size=16, n_layer=2, n_head=2, n_embd=C, dropout=0.0)


def base_model(seed=0, config=CONFIG):
    tinylora.manual_seed(seed)
    return GPT(config).eval()


def snapshot(model) -> dict:
    """Everything a failed call must leave as it was: module types by name, every parameter's bits and flag."""
    return {
        "modules": [(name, type(m).__name__) for name, m in model.named_modules()],
        "params": {name: (p.detach().numpy().copy(), p.requires_grad) for name, p in model.named_parameters()},
    }


def assert_unchanged(model, before: dict):
    after = snapshot(model)
    assert after["modules"] == before["modules"], "the module tree changed"
    assert after["params"].keys() == before["params"].keys(), "the parameters changed"
    for name, (data, flag) in before["params"].items():
        assert np.array_equal(after["params"][name][0], data, equal_nan=True), f"'{name}' changed"
        assert after["params"][name][1] == flag, f"'{name}'.requires_grad changed"


def raises(error, names, call):
    """Run `call`, expect exactly `error` (not a subclass), and every string of `names` in its message."""
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error, f"expected {error.__name__}, got {type(info.value).__name__}: {info.value}"
    message = str(info.value)
    missing = [n for n in names if n not in message]
    assert not missing, f"the message does not name {missing}: {message}"
    return message


# ------------------------------------------------------------------ folders to break
@pytest.fixture
def folders(tmp_path):
    """A tinylora model folder, a Hugging Face GPT-2 folder (byte tokenizer), an adapter for the first."""
    model = base_model()
    save_model(model, tmp_path / "tiny", ByteTokenizer())
    save_gpt2(model, tmp_path / "hf", ByteTokenizer())
    tuned, _ = load_model(tmp_path / "tiny")
    apply_lora(tuned, r=2, targets=("q", "v"))
    for i, (_, layer) in enumerate(lora_layers(tuned)):
        layer.lora_B.data[...] = np.random.default_rng(i).normal(0, 0.3, layer.lora_B.shape)
    save_adapter(tuned, tmp_path / "adapter")
    return tmp_path


def edit_json(path, edit):
    """Rewrite the JSON file at `path` as edit(old content)."""
    write_json_atomic(path, edit(read_json(path)))


def with_gpt(**fields):
    return lambda c: {**c, "gpt": {**c["gpt"], **fields}}


def edit_modules(**fields):
    return lambda c: {**c, "modules": {n: {**s, **fields} for n, s in c["modules"].items()}}


def bpe_folder(root, vocab: str, merges: str):
    """Make the tinylora folder name a BPE tokenizer, with these vocab.json and merges.txt contents."""
    edit_json(root / "tiny/config.json", lambda c: {**c, "tokenizer": "bpe"})
    (root / "tiny/vocab.json").write_text(vocab)
    (root / "tiny/merges.txt").write_text(merges)


def shard_index(root, shard_name):
    """Turn the HF folder into a sharded one whose index lists `shard_name`."""
    hf = root / "hf"
    os.replace(hf / "model.safetensors", hf / "part-1.safetensors")
    names = list(load_tensors(hf / "part-1.safetensors"))
    write_json_atomic(hf / "model.safetensors.index.json", {"weight_map": {n: shard_name for n in names}})


def no_model_built(monkeypatch):
    """Make building a GPT fail loudly: a loader that allocates before checking is caught here."""
    def refuse(*args, **kwargs):
        raise AssertionError("a GPT was built before the files were checked")

    monkeypatch.setattr(load_module, "GPT", refuse)
    monkeypatch.setattr(hf_gpt2, "GPT", refuse)


# name -> (set-up(root, monkeypatch), call(root), error class, strings the message must hold)
FILE_CASES = {
    # tinylora model folders
    "config claims n_embd 4096 (tiny weights)": (
        lambda r, mp: (edit_json(r / "tiny/config.json", with_gpt(n_embd=4096)), no_model_built(mp)),
        lambda r: load_model(r / "tiny"), ValueError, ["model.safetensors", "wte.weight", "(257, 16)", "(257, 4096)"]),
    "config.json is a JSON list": (
        lambda r, mp: (r / "tiny/config.json").write_text("[1, 2]"),
        lambda r: load_model(r / "tiny"), FileFormatError, ["config.json", "JSON object", "list"]),
    "'gpt' is a list": (
        lambda r, mp: edit_json(r / "tiny/config.json", lambda c: {**c, "gpt": [1]}),
        lambda r: load_model(r / "tiny"), FileFormatError, ["config.json", "'gpt'", "list"]),
    "layer_norm_eps = -1": (
        lambda r, mp: edit_json(r / "tiny/config.json", with_gpt(layer_norm_eps=-1)),
        lambda r: load_model(r / "tiny"), ValueError, ["config.json", "layer_norm_eps", "-1"]),
    "bias: \"false\" (a string)": (
        lambda r, mp: edit_json(r / "tiny/config.json", with_gpt(bias="false")),
        lambda r: load_model(r / "tiny"), ValueError, ["config.json", "bias", "'false'"]),
    "n_layer: \"2\" (a string)": (
        lambda r, mp: edit_json(r / "tiny/config.json", with_gpt(n_layer="2")),
        lambda r: load_model(r / "tiny"), ValueError, ["config.json", "n_layer", "'2'"]),
    "unknown GPTConfig field": (
        lambda r, mp: edit_json(r / "tiny/config.json", with_gpt(n_embed=16)),
        lambda r: load_model(r / "tiny"), FileFormatError, ["config.json", "n_embed"]),
    "unknown tokenizer name": (
        lambda r, mp: edit_json(r / "tiny/config.json", lambda c: {**c, "tokenizer": "gpt2"}),
        lambda r: load_model(r / "tiny"), ValueError, ["config.json", "unknown tokenizer", "'gpt2'"]),
    "tokenizer larger than the model's vocabulary": (
        lambda r, mp: save_model(base_model(config=GPTConfig(**{**CONFIG.__dict__, "vocab_size": 200})),
                                 r / "small", ByteTokenizer()),
        lambda r: load_model(r / "small"), ValueError, ["config.json", "257", "200"]),
    "integer weights": (
        lambda r, mp: save_tensors(r / "tiny/model.safetensors",
                                   {k: v.astype(np.int32) if k == "ln_f.bias" else v
                                    for k, v in load_tensors(r / "tiny/model.safetensors").items()}),
        lambda r: load_model(r / "tiny"), ValueError, ["model.safetensors", "ln_f.bias", "I32"]),
    "NaN in a weight": (
        lambda r, mp: save_tensors(r / "tiny/model.safetensors",
                                   {k: v * np.nan if k == "blocks.1.mlp.fc.weight" else v
                                    for k, v in load_tensors(r / "tiny/model.safetensors").items()},
                                   allow_nonfinite=True),
        lambda r: load_model(r / "tiny"), ValueError, ["tiny", "blocks.1.mlp.fc.weight", "NaN"]),
    "inf in a Hugging Face weight": (
        lambda r, mp: save_tensors(r / "hf/model.safetensors",
                                   {k: v * np.inf if k == "transformer.h.0.attn.c_attn.weight" else v
                                    for k, v in load_tensors(r / "hf/model.safetensors").items()},
                                   allow_nonfinite=True),
        lambda r: load_model(r / "hf"), ValueError, ["hf", "blocks.0.attn.q.weight", "inf"]),
    "a shard missing from the folder": (
        lambda r, mp: os.remove(r / "tiny/model.safetensors"),
        lambda r: load_model(r / "tiny"), FileNotFoundError, ["model.safetensors"]),
    "an adapter folder passed as a model": (
        lambda r, mp: None,
        lambda r: load_model(r / "adapter"), FileNotFoundError, ["adapter", "not a model", "load_adapter"]),
    "'gpt2' looks like a hub id": (
        lambda r, mp: mp.chdir(r),
        lambda r: load_gpt("gpt2"), FileNotFoundError, ["'gpt2'", "never downloads", "hub id"]),
    "dtype int32 (weights would become integers)": (
        lambda r, mp: None,
        lambda r: load_model(r / "tiny", dtype="int32"), ValueError, ["dtype", "float32 or float64", "int32"]),
    "a model path that is an int": (
        lambda r, mp: None,
        lambda r: load_gpt(123), TypeError, ["int", "123", "folder"]),
    "a tokenizer that is an int": (
        lambda r, mp: None,
        lambda r: load_model(r / "tiny", tokenizer=123), TypeError, ["tokenizer", "int", "123"]),
    "BPE vocab.json is not JSON": (
        lambda r, mp: bpe_folder(r, "{not json", "#version: 0.2\n"),
        lambda r: load_model(r / "tiny"), FileFormatError, ["vocab.json", "not valid JSON"]),
    "BPE vocab.json has a string id": (
        lambda r, mp: bpe_folder(r, '{"a": "x"}', "#version: 0.2\n"),
        lambda r: load_model(r / "tiny"), ValueError, ["vocab.json", "'a'", "'x'"]),
    "BPE merges.txt line with three tokens": (
        lambda r, mp: bpe_folder(r, '{"a": 0}', "#version: 0.2\na b c\n"),
        lambda r: load_model(r / "tiny"), ValueError, ["merges.txt", "line 2", "'a b c'"]),
    # Hugging Face folders
    "HF config claims n_embd 65536": (
        lambda r, mp: (edit_json(r / "hf/config.json", lambda c: {**c, "n_embd": 65536}), no_model_built(mp)),
        lambda r: load_model(r / "hf"), ValueError, ["model.safetensors", "wte.weight", "(257, 16)", "65536"]),
    "HF config.json is a list": (
        lambda r, mp: (r / "hf/config.json").write_text("[]"),
        lambda r: load_model(r / "hf"), FileFormatError, ["config.json", "list"]),
    "HF layer_norm_epsilon = -1": (
        lambda r, mp: edit_json(r / "hf/config.json", lambda c: {**c, "layer_norm_epsilon": -1}),
        lambda r: load_model(r / "hf"), ValueError, ["config.json", "layer_norm_epsilon", "-1"]),
    "HF resid_pdrop is a string": (
        lambda r, mp: edit_json(r / "hf/config.json", lambda c: {**c, "resid_pdrop": "0.1"}),
        lambda r: load_model(r / "hf"), ValueError, ["config.json", "resid_pdrop", "'0.1'"]),
    "HF n_head does not divide n_embd": (
        lambda r, mp: edit_json(r / "hf/config.json", lambda c: {**c, "n_head": 3}),
        lambda r: load_model(r / "hf"), ValueError, ["config.json", "n_embd=16", "n_head=3"]),
    "HF folder without vocab.json and merges.txt": (
        lambda r, mp: edit_json(r / "hf/config.json", lambda c: {k: v for k, v in c.items() if k != "tinylora_tokenizer"}),
        lambda r: load_model(r / "hf"), FileNotFoundError, ["hf", "vocab.json and merges.txt", "tokenizer="]),
    "HF folder with vocab.json but no merges.txt": (
        lambda r, mp: (r / "hf/vocab.json").write_text("{}"),
        lambda r: load_model(r / "hf"), FileNotFoundError, ["hf", "without merges.txt"]),
    "HF index names ../outside.safetensors": (
        lambda r, mp: shard_index(r, "../outside.safetensors"),
        lambda r: load_model(r / "hf"), FileFormatError, ["model.safetensors.index.json", "../outside.safetensors", "outside"]),
    "HF index names an absolute path": (
        lambda r, mp: shard_index(r, "/etc/passwd"),
        lambda r: load_model(r / "hf"), FileFormatError, ["model.safetensors.index.json", "/etc/passwd"]),
    "HF index weight_map is a list": (
        lambda r, mp: (shard_index(r, "part-1.safetensors"),
                       write_json_atomic(r / "hf/model.safetensors.index.json", {"weight_map": ["part-1.safetensors"]})),
        lambda r: load_model(r / "hf"), FileFormatError, ["model.safetensors.index.json", "weight_map"]),
    "HF index names a missing shard": (
        lambda r, mp: shard_index(r, "part-2.safetensors"),
        lambda r: load_model(r / "hf"), FileNotFoundError, ["part-2.safetensors"]),
    # adapter folders
    "adapter config is a JSON list": (
        lambda r, mp: (r / "adapter/adapter_config.json").write_text("[]"),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "list"]),
    "adapter \"modules\": []": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "modules": []}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "'modules'", "[]"]),
    "adapter \"modules\": {}": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "modules": {}}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "'modules'", "{}"]),
    "adapter r is a string": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", edit_modules(r="2")),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "['r']", "'2'"]),
    "adapter r = 0": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", edit_modules(r=0)),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "['r']", "0"]),
    "adapter alpha = -1": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", edit_modules(alpha=-1)),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "['alpha']", "-1"]),
    "adapter dropout = 1.5": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", edit_modules(dropout=1.5)),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "['dropout']", "1.5"]),
    "adapter init = \"xavier\"": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", edit_modules(init="xavier")),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "['init']", "'xavier'"]),
    "adapter bias: \"false\"": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "bias": "false"}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "'bias'", "'false'"]),
    "adapter module in block 9 of 2": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json",
                                lambda c: {**c, "modules": {"blocks.9.attn.q": {"r": 2, "alpha": 2}}}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "blocks.9.attn.q"]),
    "adapter module on an unknown target": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json",
                                lambda c: {**c, "modules": {"blocks.0.attn.wq": {"r": 2, "alpha": 2}}}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "blocks.0.attn.wq"]),
    "adapter r larger than the layer": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**edit_modules(r=99)(c), "r": 99}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter.safetensors", "r=99", "16"]),
    "adapter says bias none but holds ln_f.bias": (
        lambda r, mp: save_tensors(r / "adapter/adapter.safetensors",
                                   {**load_tensors(r / "adapter/adapter.safetensors"), "ln_f.bias": np.ones(C, np.float32)}),
        lambda r: load_adapter(base_model(), r / "adapter"), ValueError, ["adapter.safetensors", "'ln_f.bias'", "'none'"]),
    "adapter says lora_only but holds ln_f.bias": (
        lambda r, mp: (edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "bias": "lora_only"}),
                       save_tensors(r / "adapter/adapter.safetensors",
                                    {**load_tensors(r / "adapter/adapter.safetensors"), "ln_f.bias": np.ones(C, np.float32)})),
        lambda r: load_adapter(base_model(), r / "adapter"), ValueError, ["adapter.safetensors", "'ln_f.bias'", "'lora_only'"]),
    "adapter holds NaN": (
        lambda r, mp: save_tensors(r / "adapter/adapter.safetensors",
                                   {k: v * np.nan if k == "blocks.1.attn.v.lora_B" else v
                                    for k, v in load_tensors(r / "adapter/adapter.safetensors").items()},
                                   allow_nonfinite=True),
        lambda r: load_adapter(base_model(), r / "adapter"), ValueError, ["blocks.1.attn.v.lora_B", "NaN"]),
    "adapter A has another rank than its config": (
        lambda r, mp: save_tensors(r / "adapter/adapter.safetensors",
                                   {**load_tensors(r / "adapter/adapter.safetensors"),
                                    "blocks.0.attn.q.lora_A": np.zeros((3, C), np.float32)}),
        lambda r: load_adapter(base_model(), r / "adapter"), ValueError,
        ["adapter.safetensors", "blocks.0.attn.q.lora_A", "(3, 16)", "(2, 16)"]),
    "adapter trained on another base (same shapes)": (
        lambda r, mp: None,
        lambda r: load_adapter(base_model(seed=1), r / "adapter"), BaseMismatchError,
        ["adapter_config.json", str(os.sep) + "tiny", "hash", "force=True"]),
    "a run folder passed as the adapter": (
        lambda r, mp: shutil.copytree(r / "adapter", r / "run" / "adapter"),
        lambda r: load_adapter(base_model(), r / "run"), FileNotFoundError, ["did you mean", os.path.join("run", "adapter")]),
    "adapter config without base_model": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {k: v for k, v in c.items() if k != "base_model"}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "'base_model'"]),
    "adapter base.name is a number": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "base": {"name": 5}}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "base.name", "5"]),
    "adapter weights_sha256 is not a hash": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "base": {"weights_sha256": 7}}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "weights_sha256", "7"]),
    "adapter targets disagree with modules": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "targets": ["fc"]}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "'targets'", "['fc']", "['q', 'v']"]),
    "adapter r disagrees with modules": (
        lambda r, mp: edit_json(r / "adapter/adapter_config.json", lambda c: {**c, "r": 99}),
        lambda r: load_adapter(base_model(), r / "adapter"), FileFormatError, ["adapter_config.json", "'r'", "99", "[2]"]),
    "an adapter path that is an int": (
        lambda r, mp: None,
        lambda r: load_adapter(base_model(), 5), TypeError, ["adapter", "int", "5"]),
    "load_adapter given None for the model": (
        lambda r, mp: None,
        lambda r: load_adapter(None, r / "adapter"), TypeError, ["load_adapter", "NoneType"]),
    "save_adapter onto a file": (
        lambda r, mp: (r / "a-file").write_text(""),
        lambda r: save_adapter(load_adapter(base_model(), r / "adapter", force=True), r / "a-file"),
        FileExistsError, ["a-file", "is a file"]),
    "PEFT adapter passed to load_adapter": (
        lambda r, mp: write_json_atomic(r / "adapter/adapter_config.json", {"peft_type": "LORA", "r": 8}),
        lambda r: load_adapter(base_model(), r / "adapter"), ValueError, ["adapter_config.json", "import_peft"]),
    # PEFT folders
    "PEFT config is a list": (
        lambda r, mp: (export_peft(load_adapter(base_model(), r / "adapter"), r / "peft"),
                       (r / "peft/adapter_config.json").write_text("[]")),
        lambda r: import_peft(base_model(), r / "peft"), FileFormatError, ["adapter_config.json", "list"]),
    "PEFT lora_alpha is a string": (
        lambda r, mp: (export_peft(load_adapter(base_model(), r / "adapter"), r / "peft"),
                       edit_json(r / "peft/adapter_config.json", lambda c: {**c, "lora_alpha": "8"})),
        lambda r: import_peft(base_model(), r / "peft"), FileFormatError, ["adapter_model.safetensors", "lora_alpha", "'8'"]),
    "PEFT lora_dropout = 2.0": (
        lambda r, mp: (export_peft(load_adapter(base_model(), r / "adapter"), r / "peft"),
                       edit_json(r / "peft/adapter_config.json", lambda c: {**c, "lora_dropout": 2.0})),
        lambda r: import_peft(base_model(), r / "peft"), FileFormatError, ["adapter_config.json", "lora_dropout", "2.0"]),
    "PEFT r is a string": (
        lambda r, mp: (export_peft(load_adapter(base_model(), r / "adapter"), r / "peft"),
                       edit_json(r / "peft/adapter_config.json", lambda c: {**c, "r": "4"})),
        lambda r: import_peft(base_model(), r / "peft"), FileFormatError, ["adapter_config.json", "'r'", "'4'"]),
    "PEFT rank_pattern is a list": (
        lambda r, mp: (export_peft(load_adapter(base_model(), r / "adapter"), r / "peft"),
                       edit_json(r / "peft/adapter_config.json", lambda c: {**c, "rank_pattern": ["c_attn"]})),
        lambda r: import_peft(base_model(), r / "peft"), FileFormatError, ["adapter_config.json", "rank_pattern", "['c_attn']"]),
    # checkpoints
    "latest.json names a link that leads out of the run": (
        lambda r, mp: (os.makedirs(r / "run"), os.symlink(r / "tiny", r / "run/step-000002"),
                       write_json_atomic(r / "run/latest.json", {"checkpoint": "step-000002"})),
        lambda r: ckpt.latest_checkpoint(r / "run"), FileFormatError, ["latest.json", "step-000002", "outside"]),
    "latest.json points outside the run": (
        lambda r, mp: (os.makedirs(r / "run"), write_json_atomic(r / "run/latest.json", {"checkpoint": "../tiny", "step": 1})),
        lambda r: ckpt.latest_checkpoint(r / "run"), FileFormatError, ["latest.json", "'../tiny'", "step-NNNNNN"]),
    "latest.json points at an absolute path": (
        lambda r, mp: (os.makedirs(r / "run"), write_json_atomic(r / "run/latest.json", {"checkpoint": "/etc", "step": 1})),
        lambda r: ckpt.latest_checkpoint(r / "run"), FileFormatError, ["latest.json", "'/etc'"]),
    "latest.json is a list": (
        lambda r, mp: (os.makedirs(r / "run"), (r / "run/latest.json").write_text("[]")),
        lambda r: ckpt.latest_checkpoint(r / "run"), FileFormatError, ["latest.json", "JSON list"]),
    "latest.json names a missing step": (
        lambda r, mp: (os.makedirs(r / "run"), write_json_atomic(r / "run/latest.json", {"checkpoint": "step-000009"})),
        lambda r: ckpt.latest_checkpoint(r / "run"), FileNotFoundError, ["latest.json", "step-000009"]),
}


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_bad_file_gets_one_clear_error(folders, monkeypatch, name):
    set_up, call, error, names = FILE_CASES[name]
    set_up(folders, monkeypatch)
    raises(error, names, lambda: call(folders))


def test_a_191_byte_config_claiming_n_embd_4096_fails_before_allocating(folders, monkeypatch):
    """The issue's case: config.json (about 200 bytes) claims n_embd 4096 next to small weights."""
    config = read_json(folders / "tiny/config.json")
    small = {"format": "tinylora-gpt", "gpt": {**config["gpt"], "n_embd": 4096}, "tokenizer": "byte"}
    (folders / "tiny/config.json").write_text(json.dumps(small))
    assert os.path.getsize(folders / "tiny/config.json") < 400
    no_model_built(monkeypatch)  # building the 4096-wide GPT would raise AssertionError instead
    raises(ValueError, ["wte.weight", "(257, 4096)"], lambda: load_model(folders / "tiny"))


# ------------------------------------------------------------------ all or nothing
def test_apply_lora_that_fails_midway_leaves_the_model_as_it_was(monkeypatch):
    model = base_model()
    before = snapshot(model)
    made = []
    reset = LoRALinear.reset_lora_parameters

    def third_fails(layer):  # the third LoRALinear fails late in __init__, after freezing its W0
        if len(made) == 2:
            raise ValueError("LoRALinear: simulated failure on the third layer")
        made.append(1)
        reset(layer)

    monkeypatch.setattr(LoRALinear, "reset_lora_parameters", third_fails)
    raises(ValueError, ["third layer"], lambda: apply_lora(model, r=2, targets=("q", "v")))
    assert_unchanged(model, before)


def test_apply_lora_on_an_adapted_layer_changes_nothing():
    model = apply_lora(base_model(), r=2, targets=("v",), layers=[1])
    before = snapshot(model)
    raises(ValueError, ["blocks.1.attn.v", "already has LoRA"], lambda: apply_lora(model, r=2, targets=("q", "v")))
    assert_unchanged(model, before)


def test_failed_load_adapter_into_a_model_with_lora_keeps_its_a_and_b(folders):
    model = apply_lora(base_model(), r=2, targets=("q", "v"))
    before = snapshot(model)
    tensors = load_tensors(folders / "adapter/adapter.safetensors")
    save_tensors(folders / "adapter/adapter.safetensors", {**tensors, "ln_f.bias": np.ones(C, np.float32)})
    raises(ValueError, ["'ln_f.bias'"], lambda: load_adapter(model, folders / "adapter", force=True))
    assert_unchanged(model, before)


def test_failed_load_adapter_into_a_plain_model_adds_nothing(folders):
    model = base_model()
    before = snapshot(model)
    tensors = load_tensors(folders / "adapter/adapter.safetensors")
    save_tensors(folders / "adapter/adapter.safetensors", {**tensors, "ln_f.bias": np.ones(C, np.float32)})
    raises(ValueError, ["'ln_f.bias'"], lambda: load_adapter(model, folders / "adapter", force=True))
    assert_unchanged(model, before)


def test_import_peft_that_fails_midway_leaves_the_model_as_it_was(folders, monkeypatch):
    export_peft(load_adapter(load_model(folders / "tiny")[0], folders / "adapter"), folders / "peft")
    model = base_model()
    before = snapshot(model)
    calls = []

    def second_fails(model, **kwargs):
        if calls:
            raise ValueError("apply_lora: simulated failure on the second module")
        calls.append(1)
        return apply_lora(model, **kwargs)

    monkeypatch.setattr("tinylora.lora.peft.apply_lora", second_fails)
    raises(ValueError, ["second module"], lambda: import_peft(model, folders / "peft"))
    assert_unchanged(model, before)


def test_load_checkpoint_whose_optimizer_does_not_fit_leaves_the_model(tmp_path):
    model = apply_lora(base_model(), r=2)
    config = TrainConfig(max_steps=2, lr=1e-2)
    optimizer, scheduler = make_optimizer(model, config)
    for p in model.trainable_parameters():  # values the checkpoint holds, different from the model's later
        p.data[...] = 0.5
    path = ckpt.save_checkpoint(tmp_path, 1, model, optimizer, scheduler)
    state = read_json(os.path.join(path, "state.json"))
    state["optimizer"]["param_groups"][0]["momentum"] = 0.9  # a setting AdamW does not have
    write_json_atomic(os.path.join(path, "state.json"), state)
    for p in model.trainable_parameters():
        p.data[...] = -1.0
    before = snapshot(model)
    raises(ValueError, ["momentum"], lambda: ckpt.load_checkpoint(tmp_path, model, optimizer, scheduler))
    assert_unchanged(model, before)


# ------------------------------------------------------------------ safe merge
def _with_nan(model, name="blocks.1.attn.v"):
    layer = dict(lora_layers(model))[name]
    layer.lora_B.data[0, 0] = np.nan
    return model


@pytest.mark.parametrize("merge", [merge_lora, merge_and_unload], ids=["merge_lora", "merge_and_unload"])
def test_merge_refuses_a_non_finite_update_and_leaves_every_w0(merge):
    model = apply_lora(base_model(), r=2, targets=("q", "v"))
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = 0.1
    _with_nan(model)
    before = snapshot(model)
    raises(ValueError, ["blocks.1.attn.v", "non-finite"], lambda: merge(model))
    assert_unchanged(model, before)
    assert not any(layer.merged for _, layer in lora_layers(model))


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_merge_that_overflows_float32_leaves_w0():
    """ΔW is finite but W0 + ΔW is not (3e38 + 3e38 = inf in float32): the sum is checked aside."""
    model = apply_lora(base_model(), r=1, targets=("q",), layers=[0])
    layer = model.blocks[0].attn.q
    layer.base.weight.data[...] = 3e38
    layer.lora_A.data[...] = 1.0
    layer.lora_B.data[...] = 3e38
    before = snapshot(model)
    raises(ValueError, ["blocks.0.attn.q", "non-finite", "unchanged"], lambda: merge_lora(model))
    assert_unchanged(model, before)


def test_tinylora_merge_of_a_nan_adapter_exits_2_in_one_line(folders, capsys, monkeypatch):
    monkeypatch.delenv("TINYLORA_DEBUG", raising=False)
    tensors = load_tensors(folders / "adapter/adapter.safetensors")
    tensors["blocks.0.attn.q.lora_B"] = tensors["blocks.0.attn.q.lora_B"] * np.inf
    save_tensors(folders / "adapter/adapter.safetensors", tensors, allow_nonfinite=True)  # a hostile file
    code = main(["merge", "--adapter", str(folders / "adapter"), "--out", str(folders / "merged")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "blocks.0.attn.q.lora_B" in err, err
    assert not (folders / "merged").exists()


# ------------------------------------------------------------------ the base an adapter records
def test_adapter_records_its_base_and_the_cli_uses_it(folders, capsys):
    config = read_json(folders / "adapter/adapter_config.json")
    assert config["base"]["name"] == str(folders / "tiny") and len(config["base"]["weights_sha256"]) == 64
    # no --base: merge uses the recorded one; the merged model equals load_adapter + merge on that base
    assert main(["merge", "--adapter", str(folders / "adapter"), "--out", str(folders / "merged")]) == 0
    merged, _ = load_model(folders / "merged")
    expected = merge_and_unload(load_adapter(load_model(folders / "tiny")[0], folders / "adapter"))
    for (name, p), (_, q) in zip(merged.named_parameters(), expected.named_parameters()):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy()), name
    # another base of the same shape: refused in one line, accepted with --force
    save_model(base_model(seed=7), folders / "other", ByteTokenizer())
    argv = ["merge", "--base", str(folders / "other"), "--adapter", str(folders / "adapter"), "--out", str(folders / "m2")]
    capsys.readouterr()
    assert main(argv) == 2 and "different base" in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


def test_the_hash_ignores_dtype_and_the_biases_the_adapter_carries(folders):
    model64 = load_model(folders / "tiny", dtype="float64")[0]
    load_adapter(model64, folders / "adapter")  # float64 copy of the same base: same hash
    tuned = apply_lora(load_model(folders / "tiny")[0], r=2, targets=("q",))
    tinylora.lora.mark_only_lora_as_trainable(tuned, bias="lora_only")
    tuned.blocks[0].attn.q.base.bias.data[...] = 0.25  # a bias that trained
    save_adapter(tuned, folders / "with-bias")
    fresh = load_adapter(load_model(folders / "tiny")[0], folders / "with-bias")
    assert np.all(fresh.blocks[0].attn.q.base.bias.detach().numpy() == 0.25)


def test_info_describes_an_adapter_and_counts_gpt2_without_building_it(folders, capsys, monkeypatch):
    assert main(["info", "--adapter", str(folders / "adapter")]) == 0
    out = capsys.readouterr().out
    lora = 2 * 2 * 2 * (C + C)  # blocks * (q, v) * r(d + k)
    assert f"{lora:,} parameters" in out and "r=2" in out and "q,v" in out and "tiny" in out, out

    def refuse(*args, **kwargs):
        raise AssertionError("info built a model to count its parameters")

    monkeypatch.setattr(GPT, "__init__", refuse)
    assert main(["info", "--model", "gpt2", "--rank", "4"]) == 0
    assert capsys.readouterr().out.startswith("trainable: 147,456 of 124,587,264 parameters")


@pytest.mark.parametrize("config", [CONFIG, GPTConfig.tiny(bias=False), GPTConfig.mini(n_layer=3)],
                         ids=["tiny", "no-bias", "mini-3"])
def test_counts_from_the_config_equal_the_built_model(config):
    model = base_model(config=config)
    assert config.parameter_shapes() == {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert config.num_parameters() == model.num_parameters()
    lora = apply_lora(model, r=2, targets=("q", "fc", "proj"), layers=[0])
    expected = sum(layer.lora_A.size + layer.lora_B.size for _, layer in lora_layers(lora))
    assert tinylora.lora.apply.lora_parameter_count(config, 2, ("q", "fc", "proj"), [0]) == expected


# ------------------------------------------------------------------ API surprises
def test_load_gpt_returns_eval_mode_and_keeps_hf_dropout_rates(folders):
    edit_json(folders / "hf/config.json", lambda c: {**c, "embd_pdrop": 0.2, "attn_pdrop": 0.3, "resid_pdrop": 0.1})
    model = load_gpt(folders / "hf")
    assert not any(m.training for m in model.modules())
    assert (model.config.rate("embd"), model.config.rate("attn"), model.config.rate("resid")) == (0.2, 0.3, 0.1)
    assert model.drop.p == 0.2 and model.blocks[0].attn.attn_drop.p == 0.3 and model.blocks[0].mlp.drop.p == 0.1
    idx = tinylora.tensor(np.arange(8).reshape(1, 8))
    with tinylora.no_grad():
        first, second = model(idx)[0].numpy(), model(idx)[0].numpy()
    assert np.array_equal(first, second)  # dropout 0.1-0.3 in the config, off in eval mode
    hf = hf_gpt2.config_to_hf(model.config)
    assert (hf["embd_pdrop"], hf["attn_pdrop"], hf["resid_pdrop"]) == (0.2, 0.3, 0.1)


def test_to_hf_state_dict_in_memory(folders):
    model = base_model()
    state = to_hf_state_dict(model)
    assert {k.removeprefix("transformer."): v.shape for k, v in state.items()} == hf_gpt2.expected_hf_shapes(CONFIG)
    q, k, v = (getattr(model.blocks[1].attn, n).weight.detach().numpy() for n in "qkv")
    assert np.array_equal(state["transformer.h.1.attn.c_attn.weight"], np.concatenate([q.T, k.T, v.T], axis=1))
    assert state.keys() == load_tensors(folders / "hf/model.safetensors").keys()
    with_lora = apply_lora(base_model(), r=2)
    for _, layer in lora_layers(with_lora):
        layer.lora_B.data[...] = 0.1
    raises(ValueError, ["blocks.0.attn.q", "not merged"], lambda: to_hf_state_dict(with_lora))
    assert not np.array_equal(to_hf_state_dict(merge_lora(with_lora))["transformer.h.0.attn.c_attn.weight"],
                              to_hf_state_dict(base_model())["transformer.h.0.attn.c_attn.weight"])


def test_set_adapter_weights_from_arrays(folders):
    saved = load_tensors(folders / "adapter/adapter.safetensors")
    model = apply_lora(base_model(), r=2, targets=("q", "v"))
    set_adapter_weights(model, saved)
    expected = load_adapter(base_model(), folders / "adapter", force=True)
    for name, value in lora_state_dict(expected).items():
        assert np.array_equal(lora_state_dict(model)[name], value), name
    before = snapshot(model)
    raises(TypeError, ["dict", "list"], lambda: set_adapter_weights(model, list(saved.values())))
    raises(KeyError, ["blocks.0.attn.q.lora_A"],
           lambda: set_adapter_weights(model, {k: v for k, v in saved.items() if k != "blocks.0.attn.q.lora_A"}))
    raises(ValueError, ["blocks.1.attn.v.lora_B", "(16, 3)", "(16, 2)"],
           lambda: set_adapter_weights(model, {**saved, "blocks.1.attn.v.lora_B": np.zeros((C, 3), np.float32)}))
    raises(KeyError, ["'ln_f.bias'", "does not declare"],
           lambda: set_adapter_weights(model, {**saved, "ln_f.bias": np.zeros(C, np.float32)}))
    raises(KeyError, ["'blocks.0.attn.q.lora_C'", "not a parameter"],
           lambda: set_adapter_weights(model, {**saved, "blocks.0.attn.q.lora_C": np.zeros(C, np.float32)}))
    raises(ValueError, ["blocks.0.attn.v.lora_A", "NaN"],
           lambda: set_adapter_weights(model, {**saved, "blocks.0.attn.v.lora_A": saved["blocks.0.attn.v.lora_A"] * np.nan}))
    assert_unchanged(model, before)


def test_import_then_export_keeps_one_a_of_rank_r(tmp_path):
    """A fused c_attn LoRA of rank R imports as q, k, v with equal copies of A; exported again, it is rank R."""
    model = apply_lora(base_model(), r=2, targets=("q", "k", "v"))
    rng = np.random.default_rng(0)
    for block in model.blocks:
        A = rng.normal(0, 0.3, (2, C)).astype(np.float32)
        for name in "qkv":
            layer = getattr(block.attn, name)
            layer.lora_A.data[...] = A
            layer.lora_B.data[...] = rng.normal(0, 0.3, layer.lora_B.shape)
    export_peft(model, tmp_path / "peft")
    assert read_json(tmp_path / "peft/adapter_config.json")["r"] == 2  # one A shared by the row blocks: rank R
    back = import_peft(base_model(), tmp_path / "peft")
    idx = tinylora.tensor(np.arange(10).reshape(1, 10))
    with tinylora.no_grad():
        assert np.allclose(back(idx)[0].numpy(), model(idx)[0].numpy(), rtol=0, atol=1e-6)
    a = back.blocks[0].attn
    assert a.q.lora_A is not a.k.lora_A  # three Parameters ...
    assert np.array_equal(a.q.lora_A.detach().numpy(), a.k.lora_A.detach().numpy())  # ... equal at import
    export_peft(back, tmp_path / "again")
    assert read_json(tmp_path / "again/adapter_config.json")["r"] == 2
    a.k.lora_A.data[0, 0] += 1.0  # as one training step would: the copies drift apart
    export_peft(back, tmp_path / "drifted")
    drifted = read_json(tmp_path / "drifted/adapter_config.json")
    assert (drifted["r"], drifted["rank_pattern"]) == (6, {"h.1.attn.c_attn": 2})  # block 0: 3R, block 1: still R


# ------------------------------------------------------------------ one loader, LoRA knowledge in lora/
def _module_level_imports(path) -> set:
    import ast

    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in tree.body:  # module level only: a call-time import inside a function is not a cycle
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_converter_depends_on_the_model_never_the_reverse():
    root = os.path.dirname(tinylora.__file__)
    gpt = _module_level_imports(os.path.join(root, "model", "gpt.py"))
    assert not gpt & {"tinylora.model.hf_gpt2", "tinylora.model.load"}, gpt
    assert "tinylora.model.gpt" in _module_level_imports(os.path.join(root, "model", "hf_gpt2.py"))


def test_only_lora_knows_lora_parameters_by_name():
    """Outside lora/ (and methods/, the LoRA family; analysis/, which studies A and B themselves), no code reads
    .lora_A / .lora_B or rewrites '.base.' names."""
    import ast

    root = os.path.dirname(tinylora.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        if os.path.relpath(folder, root).split(os.sep)[0] in ("lora", "methods", "analysis"):
            continue
        for file in (f for f in files if f.endswith(".py")):
            path = os.path.join(folder, file)
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Attribute) and node.attr in ("lora_A", "lora_B"):
                    offenders.append(f"{path}:{node.lineno} .{node.attr}")
                if isinstance(node, ast.Constant) and node.value in ("lora_A", "lora_B", ".base."):
                    offenders.append(f"{path}:{node.lineno} {node.value!r}")
    assert not offenders, offenders
