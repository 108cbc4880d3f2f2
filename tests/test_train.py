"""The training loop (tinylora/train/loop.py): exact resume, learning, metrics, LoRA's optimizer state, masked loss.

The resume test is the issue's "done when": a run interrupted after its checkpoint at step k
and resumed from it ends with bitwise the weights of a run that was never interrupted, for
LoRA and for full fine-tuning, with dropout on (so the saved RNG state matters).
"""

import dataclasses
import gc
import math
import os
import sys

import numpy as np
import pytest

import tinylora
from tinylora import GPT, GPTConfig
from tinylora.engine import random as tl_random
from tinylora.train import loop as tl_train
from tinylora.engine.backend import memory
from tinylora.data import PairDataset, TextDataset
from tinylora.io import load_tensors, read_json
from tinylora.lora import apply_lora, lora_layers
from tinylora.optim import lr_at
from tinylora.train.plot import read_metrics
from tinylora.tokenizers import ByteTokenizer
from tinylora.train import TrainConfig, eval_batches, evaluate, train

TOKENIZER = ByteTokenizer()  # 256 byte ids + <|endoftext|> = 257


def tiny_gpt(method: str, dropout: float = 0.1):
    """A 2-layer GPT (C = 32, T <= 16) with dropout; for "lora", LoRA r=2 on q, v (with LoRA dropout too)."""
    tinylora.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=TOKENIZER.vocab_size, block_size=16, n_embd=32, dropout=dropout))
    if method == "lora":
        apply_lora(model, r=2, targets=("q", "v"), dropout=dropout)
    return model


def text_data(text: str = "the quick brown fox jumps over the lazy dog. " * 20) -> TextDataset:
    return TextDataset(np.asarray(TOKENIZER.encode(text), dtype=np.int64), block_size=16)


def pair_data(n: int = 24, offset: int = 0) -> PairDataset:
    """Sums as prompt/completion pairs: "12+7=" -> "19"."""
    pairs = [{"prompt": f"{i}+{i % 7}=", "completion": str(i + i % 7)} for i in range(offset, offset + n)]
    return PairDataset(pairs, TOKENIZER, block_size=16)


def weights(model) -> dict:
    return {n: p.detach().numpy().copy() for n, p in model.named_parameters()}


def read_rows(run_dir) -> list:
    return read_metrics(os.path.join(run_dir, "metrics.jsonl"))


def interrupt_at(monkeypatch, step: int) -> None:
    """Make train() raise KeyboardInterrupt, as Ctrl-C would, when it fetches the batch of `step` (0-based)."""
    real = tl_train.batch_for_step

    def batch_or_interrupt(dataset, batch_size, seed, s):
        if s == step:
            raise KeyboardInterrupt
        return real(dataset, batch_size, seed, s)

    monkeypatch.setattr(tl_train, "batch_for_step", batch_or_interrupt)


# ------------------------------------------------------------------ resume exactness
RESUME = TrainConfig(max_steps=6, batch_size=4, lr=3e-3, warmup_steps=1, eval_every=3, eval_batches=1,
                     checkpoint_every=2, progress=False)


def interrupted_then_resumed(method, data, run_dir, monkeypatch):
    """Train to step 5 with a checkpoint at step 4, crash (step 5 is lost), resume in a "new process"."""
    with monkeypatch.context() as patch:
        interrupt_at(patch, step=5)  # while fetching step 6's batch
        with pytest.raises(KeyboardInterrupt):
            train(tiny_gpt(method), data, data, RESUME, run_dir=run_dir)
    assert read_json(os.path.join(run_dir, "latest.json"))["step"] == 4
    resumed = tiny_gpt(method)  # as a new process would: same seed, fresh model, RNG back at its start
    result = train(resumed, data, data, RESUME, run_dir=run_dir, resume=True)
    return resumed, result


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("data", [text_data(), pair_data()], ids=["text", "pairs"])
def test_resumed_run_ends_with_the_uninterrupted_weights(tmp_path, monkeypatch, method, data):
    straight = tiny_gpt(method)
    train(straight, data, data, RESUME, run_dir=tmp_path / "straight")

    resumed, result = interrupted_then_resumed(method, data, tmp_path / "resumed", monkeypatch)

    assert [row["step"] for row in result.history] == [5, 6]  # it went on from the checkpoint at step 4
    expected, actual = weights(straight), weights(resumed)
    for name in expected:
        assert np.array_equal(actual[name], expected[name]), (
            f"{name}: max |diff| = {np.max(np.abs(actual[name] - expected[name])):.3e}")
    # metrics.jsonl: the lost step 5 is not there twice, and every loss, lr and grad norm is the straight run's
    noisy = ("seconds", "tokens_per_s", "memory_mib")  # timings, and memory that depends on the process's past
    rows = [[{k: v for k, v in row.items() if k not in noisy} for row in read_rows(tmp_path / run)]
            for run in ("resumed", "straight")]
    assert rows[0] == rows[1], f"metrics differ:\n{rows[0]}\n{rows[1]}"


def test_resume_depends_on_the_saved_rng_state(tmp_path, monkeypatch):
    """The control for the test above: if the checkpoint's RNG state were not restored, dropout masks
    would differ after the resume and so would the weights; the exactness above is not luck."""
    data = text_data()
    straight = tiny_gpt("full")
    train(straight, data, None, RESUME)
    monkeypatch.setattr(tl_random, "set_rng_state", lambda state: None)  # forget the saved RNG state
    resumed, _ = interrupted_then_resumed("full", data, tmp_path, monkeypatch)
    assert not np.array_equal(weights(resumed)["wte.weight"], weights(straight)["wte.weight"])


def test_resume_with_other_settings_is_refused(tmp_path):
    data = text_data()
    train(tiny_gpt("lora"), data, None, RESUME, run_dir=tmp_path)
    other = dataclasses.replace(RESUME, max_steps=8, lr=1e-3)  # the schedule would change
    with pytest.raises(ValueError, match=r"max_steps=6, lr=0.003.*max_steps=8, lr=0.001"):
        train(tiny_gpt("lora"), data, None, other, run_dir=tmp_path, resume=True)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    data = text_data()
    model = tiny_gpt("lora")
    train(model, data, data, RESUME, run_dir=tmp_path)
    again = tiny_gpt("lora")
    result = train(again, data, data, RESUME, run_dir=tmp_path, resume=True)
    assert result.history == [] and result.val_loss_before is None
    assert all(np.array_equal(weights(again)[n], w) for n, w in weights(model).items())
    assert [row["step"] for row in read_rows(tmp_path)] == list(range(7))


# ------------------------------------------------------------------ learning and logging
def test_loss_decreases_on_a_tiny_task():
    data = text_data()
    config = TrainConfig(max_steps=20, batch_size=8, lr=1e-2, eval_every=20, eval_batches=2, progress=False)
    result = train(tiny_gpt("full", dropout=0.0), data, data, config)
    assert result.val_loss_before > math.log(200)  # about uniform over 257 ids at the start (ln 257 = 5.55)
    assert result.val_loss_after < 0.6 * result.val_loss_before, (result.val_loss_before, result.val_loss_after)
    assert len(result.step_times) == 20 and result.median_step_time > 0


def test_metrics_rows(tmp_path):
    config = TrainConfig(max_steps=5, batch_size=4, lr=1e-2, warmup_steps=2, schedule="linear", min_lr_ratio=0.1,
                         eval_every=2, eval_batches=1, progress=False)
    result = train(tiny_gpt("lora"), text_data(), text_data(), config, run_dir=tmp_path)
    rows = read_rows(tmp_path)

    assert rows[0] == {"step": 0, "val_loss": result.val_loss_before}  # before any training
    assert [row["step"] for row in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[1:] == result.history
    for row in rows[1:]:
        assert {"loss", "lr", "seconds", "tokens_per_s", "memory_mib", "grad_norm"} <= set(row)
        assert math.isfinite(row["loss"]) and row["seconds"] > 0 and row["grad_norm"] > 0
        assert row["tokens_per_s"] == pytest.approx(4 * 16 / row["seconds"])  # B * T tokens per step
        # the learning rate that step used: step s (1-based) is schedule step s - 1
        assert row["lr"] == lr_at(row["step"] - 1, 1e-2, 2, 5, "linear", 0.1)
    assert [row["step"] for row in rows if "val_loss" in row] == [0, 2, 4, 5]  # every 2 steps, and the last
    assert rows[-1]["val_loss"] == result.val_loss_after


def test_loss_plot_written_when_matplotlib_is_there(tmp_path):
    pytest.importorskip("matplotlib")
    config = TrainConfig(max_steps=2, batch_size=2, eval_every=1, eval_batches=1, progress=False)
    train(tiny_gpt("lora"), text_data(), text_data(), config, run_dir=tmp_path)
    with open(tmp_path / "loss.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_no_matplotlib_means_no_plot_and_no_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    config = TrainConfig(max_steps=2, batch_size=2, eval_batches=1, progress=False)
    train(tiny_gpt("lora"), text_data(), text_data(), config, run_dir=tmp_path)
    assert not (tmp_path / "loss.png").exists() and (tmp_path / "metrics.jsonl").exists()
    assert "matplotlib is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------ LoRA: only A and B carry state
def test_lora_run_keeps_optimizer_state_for_a_and_b_only(tmp_path):
    model = tiny_gpt("lora")
    lora = {f"{name}.{ab}": getattr(layer, ab).size  # parameter name -> size, for every A and B
            for name, layer in lora_layers(model) for ab in ("lora_A", "lora_B")}
    config = TrainConfig(max_steps=2, batch_size=2, eval_batches=1, progress=False)
    gc.collect()  # optimizers of earlier tests may still wait in reference cycles: free their state
    optimizer_bytes_before = memory.stats()["current"]["optimizer"]
    result = train(model, text_data(), None, config, run_dir=tmp_path)

    assert result.trainable == sum(lora.values()) == 2 * 2 * 2 * (32 + 32)  # layers * targets * r (d + k)
    moments = load_tensors(tmp_path / "step-000002" / "optimizer.safetensors")
    assert set(moments) == {f"{name}/{slot}" for name in lora for slot in ("m", "v")}
    added = result.peak_split["optimizer"] - optimizer_bytes_before
    assert added == 2 * 4 * result.trainable  # m and v, float32, nothing else
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)  # W0 and the rest: no gradient either


def test_nothing_to_train_is_an_error():
    model = tiny_gpt("full")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        train(model, text_data(), None, TrainConfig(max_steps=1, progress=False))


# ------------------------------------------------------------------ pairs: loss on completions only
def test_val_loss_counts_completion_tokens_only():
    model = tiny_gpt("full")
    val = pair_data(n=10, offset=100)  # completions of different lengths: "100", "102", ...
    batches = eval_batches(val, batch_size=4, n_batches=3)  # 4 + 4 + 2 examples
    loss = evaluate(model, batches)

    nll, is_target = [], []  # per position, by hand in float64
    with tinylora.no_grad():
        model.eval()
        for x, y in batches:
            logits = model(tinylora.tensor(x))[0].numpy().astype(np.float64)  # (B, L, V)
            logits -= logits.max(axis=-1, keepdims=True)
            log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
            safe_y = np.where(y == -100, 0, y)
            nll.append(-np.take_along_axis(log_p, safe_y[..., None], axis=-1)[..., 0].ravel())
            is_target.append((y != -100).ravel())
    nll, is_target = np.concatenate(nll), np.concatenate(is_target)
    completion_only = nll[is_target].mean()  # the completion tokens and the end token, over every batch

    n_completion = sum(len(str(100 + i + (100 + i) % 7)) + 1 for i in range(10))  # digits + <|endoftext|>
    assert is_target.sum() == n_completion
    assert loss == pytest.approx(completion_only, rel=1e-5)  # float32 forward vs float64 by hand
    assert abs(nll.mean() - completion_only) > 1e-3  # the prompt and padding positions would change it
