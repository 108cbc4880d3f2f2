"""The `tinylora` command (tinylora/cli/), run in-process through main([...]) on tiny models.

Every command that needs a base model gets a tiny GPT (2 layers, C = 32) saved once per module,
not the shipped base-mini. One test runs `python -m tinylora.cli` in a subprocess to check what
a user sees at the terminal.
"""

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close

import tinylora
from tinylora import GPT, GPTConfig
from tinylora.cli import COMMANDS, main
from tinylora.data import write_e2e, write_jsonl
from tinylora.model.generate import generate
from tinylora.io import load_tensors, read_json
from tinylora.lora import apply_lora, load_adapter, lora_layers, save_adapter
from tinylora.train.plot import read_metrics
from tinylora.model.load import load_model, save_model
from tinylora.tokenizers import ByteTokenizer

FAST = ["--max-steps", "3", "--batch-size", "4", "--eval-batches", "1", "--no-progress"]  # training flags for tests
C, N_LAYER = 32, 2  # the tiny base model's width and depth


def cli(capsys, *argv):
    """Run `tinylora ARGV...` in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as done:  # argparse exits for --help and for bad arguments
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def some_text(seed: int, n_sentences: int = 120) -> str:
    """Sentences this project has never seen, made up on the spot."""
    rng = np.random.default_rng(seed)
    animals, places = ["otter", "heron", "badger", "lynx"], ["canal", "orchard", "quarry", "meadow"]
    return " ".join(f"the {rng.choice(animals)} number {rng.integers(100)} naps by the {rng.choice(places)}."
                    for _ in range(n_sentences))


def short_pairs(n: int = 24) -> list:
    """E2E-style rows short enough for a block of 64 bytes: "name[Ab], food[Thai]" -> "Ab serves Thai food."."""
    names, foods = ["Ab", "Bo", "Cy", "Di", "Ed", "Fa"], ["Thai", "Greek", "Irish", "Cuban"]
    return [{"mr": f"name[{names[i % 6]}], food[{foods[i % 4]}]", "ref": f"{names[i % 6]} serves {foods[i % 4]} food."}
            for i in range(n)]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny untrained GPT saved as a tinylora model folder (byte tokenizer, block_size 64)."""
    tinylora.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=ByteTokenizer().vocab_size, n_embd=C, n_layer=N_LAYER, dropout=0.0))
    path = str(tmp_path_factory.mktemp("base"))
    save_model(model, path, ByteTokenizer())
    return path


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory) -> str:
    """An adapter for `base` with large random B (r=4 on q, v), so that it visibly changes the outputs."""
    model, _ = load_model(base)
    apply_lora(model, r=4, targets=("q", "v"))
    rng = np.random.default_rng(1)
    for _, layer in lora_layers(model):
        layer.lora_B.data[...] = rng.normal(0.0, 0.5, layer.lora_B.shape)
    path = str(tmp_path_factory.mktemp("adapter"))
    save_adapter(model, path)
    return path


def logits_of(model, ids) -> np.ndarray:
    with tinylora.no_grad():
        model.eval()
        return model(tinylora.tensor(ids))[0].numpy()  # (B, T, V)


# ------------------------------------------------------------------ help and errors
@pytest.mark.parametrize("command", [[]] + [[name] for name in COMMANDS], ids=["tinylora"] + list(COMMANDS))
def test_help(capsys, command):
    code, out, err = cli(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert out.startswith("usage: " + " ".join(["tinylora"] + command))


BAD = {  # name -> argv (with {base}, {tmp} filled in)
    "unknown command": ["frobnicate"],
    "bad int": ["finetune", "--data", "x.txt", "--rank", "four"],
    "bad choice": ["finetune", "--data", "x.txt", "--method", "half"],
    "missing required": ["merge", "--out", "{tmp}/m"],
    "missing data file": ["finetune", "--base", "{base}", "--data", "{tmp}/missing.txt", "--out", "{tmp}/run"],
    "missing corpus": ["pretrain", "--data", "{tmp}/nowhere", "--out", "{tmp}/model", "--config", "tiny"],
    "missing model": ["generate", "--model", "{tmp}/no-model"],
    "missing adapter": ["merge", "--base", "{base}", "--adapter", "{tmp}/no-adapter", "--out", "{tmp}/m"],
    "not a model folder": ["generate", "--model", "{tmp}"],
    "unknown model or preset": ["info", "--model", "gpt3"],
    "bad jsonl": ["finetune", "--base", "{base}", "--data", "{tmp}/bad.jsonl", "--out", "{tmp}/run"],
    "rank too big": ["finetune", "--base", "{base}", "--data", "{tmp}/ok.txt", "--rank", "99", "--out", "{tmp}/run"],
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_error(capsys, monkeypatch, tmp_path, base, name):
    monkeypatch.delenv("TINYLORA_DEBUG", raising=False)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"\n')
    (tmp_path / "ok.txt").write_text(some_text(0))
    argv = [a.format(base=base, tmp=tmp_path) for a in BAD[name]]
    code, _, err = cli(capsys, *argv)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinylora: error: "), err
    assert "Traceback" not in err


def test_error_at_the_terminal(tmp_path, base):
    """The real command in a fresh process: exit code 2, one line on stderr, nothing on stdout."""
    missing = tmp_path / "missing.txt"
    done = subprocess.run([sys.executable, "-m", "tinylora.cli", "finetune", "--base", base, "--data", str(missing)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "TINYLORA_DEBUG": ""})
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"tinylora: error: no such file or folder: {missing}"]
    assert done.stdout == ""


# ------------------------------------------------------------------ pretrain
def test_pretrain_writes_a_model_folder(capsys, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "a.txt").write_text(some_text(1))
    (corpus / "sub" / "b.txt").write_text(some_text(2))
    argv = ["pretrain", "--data", str(corpus), "--config", "tiny", "--block-size", "32", "--out", str(tmp_path / "m"),
            *FAST]
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert "model written to" in out

    config = read_json(tmp_path / "m" / "config.json")
    assert config["format"] == "tinylora-gpt" and config["tokenizer"] == "byte"
    assert config["gpt"]["block_size"] == 32 and config["gpt"]["n_layer"] == 2  # --block-size and the tiny preset
    assert config["pretrain"]["command"] == "tinylora " + shlex.join(argv)  # what to run to redo it
    model, tokenizer = load_model(tmp_path / "m")
    assert isinstance(tokenizer, ByteTokenizer) and model.config.vocab_size == tokenizer.vocab_size
    rows = read_metrics(tmp_path / "m" / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows] == [0, 1, 2, 3]
    assert config["pretrain"]["val_loss"] == rows[-1]["val_loss"]


# ------------------------------------------------------------------ finetune
@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_on_new_text(capsys, tmp_path, base, method):
    data = tmp_path / "notes.txt"
    data.write_text(some_text(3))
    run = tmp_path / "run"
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--method", method, "--out", run, *FAST)
    assert code == 0, err
    assert "validation loss" in out
    assert (run / "metrics.jsonl").exists() and (run / "step-000003" / "trainable.safetensors").exists()

    base_model, _ = load_model(base)
    if method == "lora":
        assert sorted(os.listdir(run / "adapter")) == ["adapter.safetensors", "adapter_config.json"]
        assert not (run / "model").exists()
        tensors = load_tensors(run / "adapter" / "adapter.safetensors")
        assert len(tensors) == N_LAYER * 2 * 2  # A and B of q and v in each block (the defaults)
        assert any(np.any(t != 0) for n, t in tensors.items() if n.endswith("lora_B"))  # B left zero: it trained
        load_adapter(base_model, run / "adapter")  # loads onto the base it came from
    else:
        assert sorted(os.listdir(run / "model")) == ["config.json", "model.safetensors"]
        assert not (run / "adapter").exists()
        tuned, _ = load_model(run / "model")
        before, after = base_model.state_dict(), tuned.state_dict()
        assert before.keys() == after.keys()
        assert not np.array_equal(before["blocks.0.attn.q.weight"], after["blocks.0.attn.q.weight"])


def test_finetune_ctrl_c_then_resume(capsys, monkeypatch, tmp_path, base):
    """Ctrl-C is reported in one line (exit code 130); --resume then ends with the adapter of an uninterrupted run."""
    from tinylora.train import loop as tl_train

    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    args = ["finetune", "--base", base, "--data", data, "--max-steps", "4", "--checkpoint-every", "2",
            "--batch-size", "4", "--eval-batches", "1", "--no-progress"]
    assert cli(capsys, *args, "--out", tmp_path / "straight")[0] == 0

    real = tl_train.batch_for_step

    def batch_or_ctrl_c(dataset, batch_size, seed, step):
        if step == 3:  # 0-based: the fourth step, after the checkpoint at step 2
            raise KeyboardInterrupt
        return real(dataset, batch_size, seed, step)

    with monkeypatch.context() as patch:
        patch.setattr(tl_train, "batch_for_step", batch_or_ctrl_c)
        code, _, err = cli(capsys, *args, "--out", tmp_path / "resumed")
    assert (code, err) == (130, "tinylora: interrupted\n")
    assert not (tmp_path / "resumed" / "adapter").exists()
    code, _, err = cli(capsys, *args, "--out", tmp_path / "resumed", "--resume")
    assert code == 0, err

    straight = load_tensors(tmp_path / "straight" / "adapter" / "adapter.safetensors")
    resumed = load_tensors(tmp_path / "resumed" / "adapter" / "adapter.safetensors")
    assert straight.keys() == resumed.keys()
    assert all(np.array_equal(resumed[name], a) for name, a in straight.items())


def test_finetune_switches_off_the_base_models_dropout(capsys, tmp_path, base):
    """A base whose config has dropout 0.1 (as a GPT-2 folder does) fine-tunes exactly like the same
    weights with dropout 0: finetune runs without dropout, whatever the base model's config says."""
    tinylora.manual_seed(0)
    noisy = GPT(GPTConfig.tiny(vocab_size=ByteTokenizer().vocab_size, n_embd=C, n_layer=N_LAYER, dropout=0.1))
    save_model(noisy, tmp_path / "noisy", ByteTokenizer())
    plain_model, _ = load_model(base)
    assert all(np.array_equal(a, plain_model.state_dict()[n]) for n, a in noisy.state_dict().items())
    data = tmp_path / "notes.txt"
    data.write_text(some_text(4))
    tuned = {}
    for name, folder in (("plain", base), ("noisy", tmp_path / "noisy")):
        code, _, err = cli(capsys, "finetune", "--base", folder, "--data", data, "--method", "full",
                           "--out", tmp_path / f"{name}-run", *FAST)
        assert code == 0, err
        tuned[name] = load_tensors(tmp_path / f"{name}-run" / "model" / "model.safetensors")
    assert read_json(tmp_path / "noisy-run" / "model" / "config.json")["gpt"]["dropout"] == 0.0
    for name, array in tuned["plain"].items():
        assert np.array_equal(tuned["noisy"][name], array), f"{name} differs: dropout was on"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_finetune_on_pairs(capsys, tmp_path, base, suffix):
    data = tmp_path / f"pairs{suffix}"
    rows = short_pairs()
    if suffix == ".csv":
        write_e2e(rows, data)  # columns mr,ref, like the E2E NLG files
    else:
        write_jsonl([{"prompt": r["mr"] + " ->", "completion": " " + r["ref"]} for r in rows], data)
    run = tmp_path / "run"
    code, out, err = cli(capsys, "finetune", "--base", base, "--data", data, "--out", run, "--eval-every", "1", *FAST)
    assert code == 0, err
    rows = read_metrics(run / "metrics.jsonl")
    assert [row["step"] for row in rows if "val_loss" in row] == [0, 1, 2, 3]
    assert (run / "adapter" / "adapter.safetensors").exists()


# ------------------------------------------------------------------ generate, merge, info
@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "adapter"])
def test_generate(capsys, base, adapter, with_adapter):
    extra = ["--adapter", adapter] if with_adapter else []
    code, out, err = cli(capsys, "generate", "--model", base, *extra, "--prompt", "the otter", "--max-new-tokens", "12",
                         "--temperature", "0")
    assert code == 0, err

    tokenizer = ByteTokenizer()
    expected = {}
    for adapted in (False, True):  # the same greedy generation through the Python API
        model, _ = load_model(base)
        if adapted:
            load_adapter(model, adapter)
        ids = generate(model, tinylora.tensor([tokenizer.encode("the otter")]), 12, temperature=0.0,
                       eos_token=tokenizer.eot_id)
        expected[adapted] = tokenizer.decode(ids.numpy()[0].tolist())
    assert expected[True] != expected[False], "the test adapter should change the generation"
    assert out == expected[with_adapter] + "\n"


def test_merge_matches_the_unmerged_adapter(capsys, tmp_path, base, adapter):
    code, out, err = cli(capsys, "merge", "--base", base, "--adapter", adapter, "--out", tmp_path / "merged")
    assert code == 0, err

    merged, _ = load_model(tmp_path / "merged")
    assert not any(name.endswith(("lora_A", "lora_B")) for name in merged.state_dict())
    assert read_json(tmp_path / "merged" / "config.json")["merged_from"]["adapter"] == adapter
    unmerged, _ = load_model(base)
    load_adapter(unmerged, adapter)
    plain, _ = load_model(base)
    ids = np.arange(2 * 24).reshape(2, 24) * 5 % 257  # (B, T) = (2, 24)
    expected = logits_of(unmerged, ids)
    assert np.max(np.abs(expected - logits_of(plain, ids))) > 0.1  # the adapter changes the logits
    # float32: W0 + (α/r) B A is rounded once per weight, so merged and unmerged products differ
    # by a few float32 ulps of the logits (~1e-7 relative); 1e-5 leaves room for the sums over C
    assert_close(logits_of(merged, ids), expected, rtol=1e-5, atol=1e-5, what="merged vs unmerged logits")


def test_info_counts_parameters(capsys, base):
    code, out, _ = cli(capsys, "info", "--model", base)
    model, _ = load_model(base)
    total = model.num_parameters()
    assert code == 0 and out.strip().startswith(f"trainable: {total:,} of {total:,} parameters")

    code, out, _ = cli(capsys, "info", "--model", base, "--rank", "4", "--targets", "q,v,o")
    lora = N_LAYER * 3 * 4 * (C + C)  # blocks * targets * r(d + k), d = k = C
    assert code == 0 and out.strip().startswith(f"trainable: {lora:,} of {total + lora:,} parameters")

    code, out, _ = cli(capsys, "info", "--model", base, "--rank", "4", "--detail")
    assert code == 0 and "blocks.1.attn.v" in out and "LoRALinear" in out


@pytest.mark.slow
def test_info_gpt2_rank_4(capsys):
    """The paper's GPT-2 setting: r = 4 on W_q and W_v of 12 blocks, 12 * 2 * 4 * (768 + 768) = 147,456.
    Builds the 124M-parameter model (about 4 s)."""
    code, out, _ = cli(capsys, "info", "--model", "gpt2", "--rank", "4")
    assert code == 0 and out.strip().startswith("trainable: 147,456 of ")
