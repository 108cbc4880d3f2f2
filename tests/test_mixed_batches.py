"""Mixed-adapter batches: each example of one batch gets exactly what it gets alone with its adapter."""

from __future__ import annotations

import numpy as np
import pytest

import tinylora
from tinylora.lora import add_adapter, merge_lora, mixed_adapters, set_adapter
from tinylora.lora.adapters import adapters_disabled
from tinylora.lora.apply import lora_layers
from tinylora.model.generate import generate
from tinylora.model.gpt import GPT, GPTConfig

# float32 throughout; the batched matmuls (B, T, k) @ (B, k, r) sum in another order than the
# single run's (B·T, k) @ (k, r), so rows agree to float32 rounding of O(1) logits, not bitwise
ATOL = 1e-5


def _model():
    model = GPT(GPTConfig.tiny(dropout=0.0))
    rng = np.random.default_rng(0)
    for name, r in (("a", 4), ("b", 2), ("c", 8)):
        add_adapter(model, name, r=r, alpha=4)
        set_adapter(model, name)
        for _, layer in lora_layers(model):
            layer.lora_B.data[...] = rng.normal(0, 0.5, layer.lora_B.shape)
    set_adapter(model, "a")
    model.eval()
    return model


def _alone(model, idx, name):
    """Logits of `idx` (B, T) with one adapter for the whole batch (or the base)."""
    with tinylora.no_grad():
        if name == "base":
            with adapters_disabled(model):
                return model(idx)[0].numpy()
        set_adapter(model, name)
        return model(idx)[0].numpy()


IDS = ["a", "base", "c", "b", "a", "c"]


@pytest.mark.parametrize("strategy", ["gather", "group"])
def test_a_mixed_batch_equals_each_example_alone_with_its_adapter(strategy):
    model = _model()
    idx = np.random.default_rng(1).integers(0, 256, (len(IDS), 10))
    with tinylora.no_grad(), mixed_adapters(model, IDS, strategy=strategy):
        mixed = model(idx)[0].numpy()
    for row, name in enumerate(IDS):
        alone = _alone(model, idx[row:row + 1], name)[0]
        diff = np.max(np.abs(mixed[row] - alone))
        assert diff <= ATOL, f"row {row} ({name}, {strategy}): max |diff| = {diff:.2e}"
    # "base" rows get ΔW x = 0 exactly: bit for bit what the base model gives the same batch
    base_rows = [i for i, n in enumerate(IDS) if n == "base"]
    assert np.array_equal(mixed[base_rows], _alone(model, idx, "base")[base_rows])


def test_adapter_ids_argument_of_the_model_and_row_order_invariance():
    model = _model()
    idx = np.random.default_rng(2).integers(0, 256, (len(IDS), 7))
    with tinylora.no_grad():
        mixed = model(idx, adapter_ids=IDS)[0].numpy()
        order = np.arange(len(IDS))[::-1]
        reversed_ = model(idx[order], adapter_ids=[IDS[i] for i in order])[0].numpy()
    np.testing.assert_allclose(reversed_[::-1], mixed, rtol=0, atol=ATOL)
    assert all(layer.per_example is None for _, layer in lora_layers(model))  # the context was left


def test_mixed_generation_with_kv_cache_equals_each_example_alone():
    model = _model()
    prompt = np.random.default_rng(3).integers(0, 256, (len(IDS), 5))
    mixed = generate(model, prompt, 12, greedy=True, adapter_ids=IDS).numpy()
    for row, name in enumerate(IDS):
        if name == "base":
            with adapters_disabled(model):
                alone = generate(model, prompt[row:row + 1], 12, greedy=True).numpy()
        else:
            set_adapter(model, name)
            alone = generate(model, prompt[row:row + 1], 12, greedy=True).numpy()
        assert np.array_equal(mixed[row], alone[0]), f"row {row} ({name})"
    # and the uncached path agrees with the cached one
    uncached = generate(model, prompt, 12, greedy=True, adapter_ids=IDS, use_cache=False).numpy()
    assert np.array_equal(uncached, mixed)


@pytest.mark.parametrize("ids, error, words", [
    (["a", "zzz"], KeyError, "no adapter named \\['zzz'\\]"),
    ("a", TypeError, "one adapter name per example"),
    ([], ValueError, "empty"),
])
def test_bad_adapter_ids(ids, error, words):
    model = _model()
    with pytest.raises(error, match=words):
        model(np.zeros((max(len(ids), 1), 3), dtype=np.int64), adapter_ids=ids)
    assert all(layer.per_example is None for _, layer in lora_layers(model))


def test_batch_size_training_mode_and_merged_layers_are_refused():
    model = _model()
    with pytest.raises(ValueError, match="names 2 examples, but the batch holds 3"):
        model(np.zeros((3, 4), dtype=np.int64), adapter_ids=["a", "b"])
    assert all(layer.per_example is None for _, layer in lora_layers(model))
    model.train()
    with pytest.raises(RuntimeError, match="inference only"):
        model(np.zeros((2, 4), dtype=np.int64), adapter_ids=["a", "b"])
    model.eval()
    merge_lora(model)
    with pytest.raises(RuntimeError, match="is merged"):
        model(np.zeros((2, 4), dtype=np.int64), adapter_ids=["a", "b"])
    with pytest.raises(ValueError, match="strategy"):
        with mixed_adapters(model, ["a"], strategy="fast"):
            pass
