"""The adapter contract, with hostile files: for every method, a damaged adapter file changes nothing and names
what is wrong (a base weight slipped in, NaN, a missing or extra tensor, a wrong shape, another base).

Also: failed applies leave the model as it was (DoRA on a zero row, GLoRA on a rank too large, PiSSA's
residual), and the QLoRA adapter records its quantization and loads onto the base rebuilt the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import FAST, base, cli, some_text  # noqa: F401  (base is a fixture)

import tinylora
from tinylora.io import load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora import lora_layers, save_adapter
from tinylora.lora.adapter_io import BaseMismatchError
from tinylora.methods import apply_method, load_any_adapter, save_method_adapter
from tinylora.methods.files import declared_tensors
from tinylora.methods.table import METHODS
from tinylora.model.gpt import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
SETTINGS = {"lora": {"r": 2}, "lora-fa": {"r": 2}, "rslora": {"r": 4, "alpha": 2}, "loraplus": {"r": 2},
            "dora": {"r": 2}, "pissa": {"r": 2}, "olora": {"r": 2}, "adalora": {"init_r": 3},
            "glora": {"r": 2}, "top2": {}, "bitfit": {}, "prefix-embed": {"prefix_len": 2},
            "prefix-layer": {"prefix_len": 2}, "adapter-h": {"r": 2}, "adapter-l": {"r": 2}}
ADAPTERS = sorted(SETTINGS)  # every method that writes an adapter (full fine-tuning writes a model)
IDX = tinylora.tensor(np.arange(12).reshape(2, 6) % CONFIG.vocab_size)


def test_every_adapter_method_is_covered():
    assert set(ADAPTERS) == {name for name, row in METHODS.items() if row.files != "model"}


def fresh(state={}):  # noqa: B006  (one random base for the file)
    if not state:
        tinylora.manual_seed(0)
        state.update(GPT(CONFIG).state_dict())
    model = GPT(CONFIG)
    model.load_state_dict(state)
    return model.eval()


def saved(method, path):
    """A trained-looking adapter of `method` in `path`: every declared tensor moved off its init."""
    model = apply_method(fresh(), method, SETTINGS[method])
    rng = np.random.default_rng(1)
    for _, p in sorted(declared_tensors(model).items()):
        p.data[...] = p.data + rng.normal(0.0, 0.1, size=p.shape).astype(p.dtype)
    if METHODS[method].files == "lora":
        save_adapter(model, path)
    else:
        save_method_adapter(model, path, method, SETTINGS[method])
    return path


def snapshot(model):
    """What a failed load must leave exactly as it was: the module tree, every array, the logits."""
    with tinylora.no_grad():
        logits = model(IDX)[0].numpy()
    return ([type(m).__name__ for m in model.modules()], {n: p.data.copy() for n, p in model.named_parameters()},
            {n: p.requires_grad for n, p in model.named_parameters()}, logits)


def assert_unchanged(model, before):
    after = snapshot(model)
    assert after[0] == before[0], "the module tree changed"
    assert after[1].keys() == before[1].keys() and after[2] == before[2]
    for name, value in before[1].items():
        np.testing.assert_array_equal(after[1][name], value, err_msg=name)
    np.testing.assert_array_equal(after[3], before[3])


def tamper(path, change):
    """Rewrite the adapter's tensors (and the list in its config, for method adapters) with change(tensors)."""
    tensors = load_tensors(path / "adapter.safetensors")
    change(tensors)
    save_tensors(path / "adapter.safetensors", tensors, allow_nonfinite=True)
    config = read_json(path / "adapter_config.json")
    if "tensors" in config:
        config["tensors"] = sorted(tensors)
        write_json_atomic(path / "adapter_config.json", config)


def assert_refused(path, *words, force=False):
    model = fresh()
    before = snapshot(model)
    with pytest.raises((ValueError, KeyError, TypeError)) as caught:
        load_any_adapter(model, path, force=force)
    message = str(caught.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert_unchanged(model, before)


@pytest.mark.parametrize("method", ADAPTERS)
def test_a_good_file_loads_and_a_base_weight_in_it_is_refused(method, tmp_path):
    path = saved(method, tmp_path / "a")
    load_any_adapter(fresh(), path)  # the untampered file loads
    tamper(path, lambda t: t.update({"wte.weight": np.zeros((CONFIG.vocab_size, CONFIG.n_embd), np.float32)}))
    assert_refused(path, "wte.weight")


@pytest.mark.parametrize("method", ADAPTERS)
def test_nan_is_refused(method, tmp_path):
    path = saved(method, tmp_path / "a")
    name = sorted(load_tensors(path / "adapter.safetensors"))[0]
    tamper(path, lambda t: t[name].reshape(-1).__setitem__(0, np.nan))
    assert_refused(path, name, "NaN")


@pytest.mark.parametrize("method", ADAPTERS)
def test_a_missing_tensor_is_named(method, tmp_path):
    path = saved(method, tmp_path / "a")
    name = sorted(load_tensors(path / "adapter.safetensors"))[-1]
    tamper(path, lambda t: t.pop(name))
    assert_refused(path, name)


@pytest.mark.parametrize("method", ADAPTERS)
def test_a_wrong_shape_is_named(method, tmp_path):
    path = saved(method, tmp_path / "a")
    name = sorted(load_tensors(path / "adapter.safetensors"))[0]
    tamper(path, lambda t: t.__setitem__(name, np.concatenate([t[name].reshape(-1), [0.0]]).astype(np.float32)))
    assert_refused(path, name, "shape")


@pytest.mark.parametrize("method", ADAPTERS)
def test_another_base_is_refused_unless_forced(method, tmp_path):
    path = saved(method, tmp_path / "a")
    model = fresh()
    model.blocks[0].mlp.fc.weight.data[0, 0] += 1.0  # same shapes, other weights
    before = snapshot(model)
    with pytest.raises(BaseMismatchError, match="different base"):
        load_any_adapter(model, path)
    assert_unchanged(model, before)
    load_any_adapter(model, path, force=True)


@pytest.mark.parametrize("method", ["dora", "pissa", "glora", "adalora"])
def test_a_failed_apply_leaves_the_model_as_it_was(method):
    model = fresh()
    model.blocks[1].attn.v.weight.data[3] = 0.0  # a zero row: DoRA has no direction to keep there
    before = snapshot(model)
    settings = {**SETTINGS[method], "targets": ["q", "v"]}
    if method != "dora":  # a rank larger than the last layer allows, so the first layers are wrapped first
        settings["r" if method != "adalora" else "init_r"] = CONFIG.n_embd + 1
    with pytest.raises(ValueError):
        apply_method(model, method, settings)
    assert_unchanged(model, before)
    assert not hasattr(model, "base_identity")


def test_pissa_to_lora_gives_the_original_weights_back_bit_for_bit(tmp_path):
    """So the plain-LoRA adapter written after the conversion loads on the original base without force."""
    from tinylora.methods import pissa_to_lora

    model = apply_method(fresh(), "pissa", {"r": 2, "rslora": True})
    pissa_to_lora(model)
    original = fresh()
    for i in range(CONFIG.n_layer):
        for t in ("q", "v"):
            np.testing.assert_array_equal(getattr(model.blocks[i].attn, t).base.weight.data,
                                          getattr(original.blocks[i].attn, t).weight.data)
    save_adapter(model, tmp_path)
    load_any_adapter(fresh(), tmp_path)  # no force needed


def test_qlora_adapter_records_its_quantization_and_loads_onto_the_rebuilt_base(tmp_path):
    from tinylora.cli.loading import load_adapter_onto
    from tinylora.lora import apply_lora
    from tinylora.methods import quantize_model

    model = fresh()
    quantize_model(model, "nf4", double_quant=False, compute_dtype="float32")
    apply_lora(model, r=2)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = 0.05
    with tinylora.no_grad():
        trained = model(IDX)[0].numpy()
    save_adapter(model, tmp_path)
    config = read_json(tmp_path / "adapter_config.json")
    assert config["quantization"]["method"] == "nf4" and config["base"]["weights_sha256"]
    with pytest.raises(ValueError, match="quantize the base the same way first"):
        load_any_adapter(fresh(), tmp_path)  # onto the float base: refused, not silently another function
    rebuilt = load_adapter_onto(fresh(), tmp_path)  # what generate and evaluate do
    with tinylora.no_grad():
        np.testing.assert_array_equal(rebuilt(IDX)[0].numpy(), trained)


def test_cli_merge_of_a_dora_file_with_a_zeroed_embedding_is_refused(capsys, tmp_path, base):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    code, _, err = cli(capsys, "finetune", "--base", base, "--data", data, "--method", "dora", "--out",
                       tmp_path / "run", *FAST)
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter"
    tamper(adapter, lambda t: t.update({"wte.weight": np.zeros((256, 8), np.float32)}))
    code, out, err = cli(capsys, "merge", "--adapter", adapter, "--out", tmp_path / "merged")
    assert code == 2 and err.count("\n") == 1 and "wte.weight" in err, err
    assert not (tmp_path / "merged").exists()
    code, out, err = cli(capsys, "info", "--adapter", tmp_path / "run" / "adapter")
    assert "dora" in out, out  # described, then refused as every other command refuses it
    assert code == 2 and err.count("\n") == 1 and "wte.weight" in err, err


def test_info_refuses_an_adapter_with_a_nan_as_generate_does(capsys, tmp_path, base):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(6))
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", tmp_path / "run", *FAST)
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter"
    code, out, err = cli(capsys, "info", "--adapter", adapter)
    assert code == 0 and "LoRA" in out, err
    name = next(n for n in load_tensors(adapter / "adapter.safetensors") if "lora_B" in n)
    tamper(adapter, lambda t: t[name].__setitem__((0, 0), np.nan))
    for command in ("info", "generate"):
        code, out, err = cli(capsys, command, "--adapter", adapter, *(["--max-new-tokens", "2"] if command ==
                                                                      "generate" else []))
        assert code == 2 and err.count("\n") == 1 and name in err, (command, err)


def test_cli_qlora_adapter_generates_evaluates_on_the_rebuilt_base_and_merges_to_float(capsys, tmp_path, base):  # noqa: F811
    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--quantize", "nf4", "--compute-dtype",
                         "float32", "--out", tmp_path / "run", *FAST)
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter"
    assert read_json(adapter / "adapter_config.json")["quantization"]["block_size"] == 64
    code, out, err = cli(capsys, "generate", "--adapter", adapter, "--max-new-tokens", "3")  # no --force needed
    assert code == 0, err
    code, out, err = cli(capsys, "info", "--adapter", adapter)
    assert code == 0 and "QLoRA" in out, err
    code, out, err = cli(capsys, "merge", "--adapter", adapter, "--out", tmp_path / "merged")
    assert code == 0 and "dequantized" in out, err


def test_a_folder_in_the_old_baseline_format_is_one_line(tmp_path):
    write_json_atomic(tmp_path / "method_config.json", {"format": "tinylora-method", "method": "bitfit"})
    with pytest.raises(FileNotFoundError, match="method_config.json, the baselines' format before"):
        load_any_adapter(fresh(), tmp_path)
