"""Adapter files (tinylora.lora.adapter_io) and the safe-file helpers under them (tinylora.io)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from conftest import require

import tinylora
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.io import FileFormatError, load_metadata, load_tensors, read_json, save_tensors, write_json_atomic
from tinylora.lora import apply_lora, load_adapter, lora_layers, mark_only_lora_as_trainable, merge_lora, save_adapter

CONFIG = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
IDX = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(2, 8))


def _base(config=CONFIG):
    """The same base model every time: GPT init draws from tinylora's seeded generator."""
    tinylora.manual_seed(123)
    return GPT(config).eval()


def _randomise(params, seed=0):
    rng = np.random.default_rng(seed)
    for p in params:
        p.data[...] = rng.normal(0.0, 0.3, p.shape).astype(p.dtype)


def _lora_params(model):
    return [p for _, layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


def _logits(model):
    with tinylora.no_grad():
        return model.eval()(tinylora.tensor(IDX))[0].numpy()


# ------------------------------------------------------------------ save / load adapters
def test_round_trip_onto_a_fresh_base(tmp_path):
    model = apply_lora(_base(), r=4, alpha=8, targets=("q", "v", "fc"))
    _randomise(_lora_params(model))
    save_adapter(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["adapter.safetensors", "adapter_config.json"]
    config = read_json(tmp_path / "adapter_config.json")
    assert (config["r"], config["alpha"], config["targets"], config["layers"]) == (4, 8, ["q", "v", "fc"], None)
    assert config["bias"] == "none" and config["base_model"]["n_embd"] == 16
    assert config["tinylora_version"] == tinylora.__version__
    # only A and B are stored: r(d + k) numbers per adapted layer
    stored = load_tensors(tmp_path / "adapter.safetensors")
    assert sum(v.size for v in stored.values()) == 2 * (2 * 4 * (16 + 16) + 4 * (16 + 64))

    fresh = load_adapter(_base(), tmp_path)
    assert fresh.blocks[1].mlp.fc.r == 4 and fresh.blocks[0].attn.q.scaling == 2.0
    def trainable(m):
        return {n for n, p in m.named_parameters() if p.requires_grad}

    assert trainable(fresh) == trainable(model)
    np.testing.assert_array_equal(_logits(fresh), _logits(model))  # same numbers, same ops: bit for bit


def test_mixed_ranks_layers_and_trained_biases_round_trip(tmp_path):
    model = apply_lora(_base(), r=4, alpha=8, targets=("q", "v"))
    apply_lora(model, r=2, alpha=1, targets=("proj",), layers=[0], dropout=0.1)
    mark_only_lora_as_trainable(model, bias="lora_only")
    trainable = [p for p in model.parameters() if p.requires_grad]
    _randomise(trainable, seed=1)  # A, B and the biases of the wrapped Linears
    save_adapter(model, tmp_path)
    config = read_json(tmp_path / "adapter_config.json")
    assert config["r"] is None and config["bias"] == "lora_only"  # layers differ: no single r
    assert config["modules"]["blocks.0.mlp.proj"] == {"r": 2, "alpha": 1, "rslora": False, "dropout": 0.1,
                                                      "init": "kaiming"}

    fresh = load_adapter(_base(), tmp_path)
    assert fresh.blocks[0].mlp.proj.lora_dropout.p == 0.1 and not hasattr(fresh.blocks[1].mlp.proj, "lora_A")
    assert fresh.blocks[0].attn.q.base.bias.requires_grad and not fresh.blocks[0].attn.k.bias.requires_grad
    np.testing.assert_array_equal(_logits(fresh), _logits(model))


def test_load_into_a_model_with_the_same_lora(tmp_path):
    model = apply_lora(_base(), r=2, targets=("q", "v"))
    _randomise(_lora_params(model), seed=2)
    save_adapter(model, tmp_path)
    other = apply_lora(_base(), r=2, targets=("q", "v"))  # different random A, B = 0
    assert not np.array_equal(_logits(other), _logits(model))
    np.testing.assert_array_equal(_logits(load_adapter(other, tmp_path)), _logits(model))


def test_save_refuses_what_an_adapter_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(_base(), tmp_path)
    model = apply_lora(_base(), r=2)
    model.ln_f.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="ln_f.weight"):
        save_adapter(model, tmp_path)


def test_load_errors_name_what_differs(tmp_path):
    model = apply_lora(_base(), r=4, targets=("q", "v"))
    save_adapter(model, tmp_path)

    wider = _base(GPTConfig(**{**CONFIG.__dict__, "n_embd": 32}))
    with pytest.raises(ValueError, match="n_embd: adapter 16 vs model 32"):
        load_adapter(wider, tmp_path)
    assert not any(True for _ in lora_layers(wider))  # nothing changed on failure

    with pytest.raises(ValueError, match="already has LoRA"):
        load_adapter(apply_lora(_base(), r=4, targets=("q",)), tmp_path)
    with pytest.raises(ValueError, match="merged"):
        load_adapter(merge_lora(apply_lora(_base(), r=4, targets=("q", "v"))), tmp_path)

    tensors = load_tensors(tmp_path / "adapter.safetensors")
    save_tensors(tmp_path / "adapter.safetensors", {k: v for k, v in tensors.items() if k != "blocks.1.attn.v.lora_B"})
    with pytest.raises(KeyError, match=r"blocks\.1\.attn\.v\.lora_B"):
        load_adapter(_base(), tmp_path)

    save_tensors(tmp_path / "adapter.safetensors", {**tensors, "blocks.1.attn.v.lora_B": np.zeros((16, 3), np.float32)})
    with pytest.raises(ValueError, match=r"blocks\.1\.attn\.v\.lora_B.*\(16, 3\).*\(16, 4\)"):
        load_adapter(_base(), tmp_path)


def test_load_adapter_points_peft_files_to_import_peft(tmp_path):
    write_json_atomic(tmp_path / "adapter_config.json", {"peft_type": "LORA", "r": 8})
    with pytest.raises(ValueError, match="import_peft"):
        load_adapter(_base(), tmp_path)


# ------------------------------------------------------------------ tinylora.io
def test_tensors_round_trip_with_metadata(tmp_path):
    arrays = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not contiguous
        "f64": np.linspace(0, 1, 5),
        "f16": np.array([1.5, -2.25], dtype=np.float16),
        "i64": np.array([[1, -2]], dtype=np.int64),
        "scalar": np.array(3.0, dtype=np.float32),
    }
    save_tensors(tmp_path / "t.safetensors", {**arrays, "tensor": tinylora.ones(2, 2)}, metadata={"step": "7"})
    back = load_tensors(tmp_path / "t.safetensors")
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    np.testing.assert_array_equal(back["tensor"], np.ones((2, 2), np.float32))
    assert load_metadata(tmp_path / "t.safetensors") == {"step": "7"}


def test_bfloat16_is_widened_exactly(tmp_path):
    torch = require("torch")
    from safetensors.torch import save_file

    values = torch.randn(4, 3).bfloat16()
    save_file({"w": values}, str(tmp_path / "bf16.safetensors"))
    w = load_tensors(tmp_path / "bf16.safetensors")["w"]
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, values.float().numpy())


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "t.safetensors"
    save_tensors(target, {"a": np.ones(3, np.float32)})
    with pytest.raises(Exception):
        save_tensors(target, {"a": np.array(["not", "numbers"])})  # safetensors refuses strings mid-write
    np.testing.assert_array_equal(load_tensors(target)["a"], np.ones(3, np.float32))
    write_json_atomic(tmp_path / "c.json", {"x": 1})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "c.json", {"x": object()})
    assert read_json(tmp_path / "c.json") == {"x": 1}
    assert sorted(os.listdir(tmp_path)) == ["c.json", "t.safetensors"]  # no temp files left behind


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("content, message", [
    (b"", "only 0 bytes"),
    (struct.pack("<Q", 10**12) + b"{}", "header claims"),
    (struct.pack("<Q", 4) + b"{{{{", "not valid JSON"),
    (_safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"1234"), "truncated"),
    (_safetensors_bytes({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"12345678"), "occupies 8 bytes"),
    (_safetensors_bytes({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"1"), "F8_E4M3"),
    (_safetensors_bytes({"w": {"shape": [1]}}, b""), "malformed"),
])
def test_corrupt_tensor_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=message):
        load_tensors(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        load_tensors(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_json(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(TypeError, match="metadata"):
        save_tensors(tmp_path / "m.safetensors", {"a": np.ones(1)}, metadata={"step": 7})
