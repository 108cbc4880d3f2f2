"""The boundary matrix: every method of tinylora/methods/table.py × every boundary an adapter crosses.

    save → load          the method's file, loaded onto a fresh copy of the base (load_any_adapter)
    switch               add another adapter, switch to it and back (set_adapter)
    mixed                a batch mixing two adapters vs each example run alone (mixed_adapters)
    merge → unmerge      merged, then unmerged (or, for methods that only replace weights, merge_method)
    PEFT export → load   export_peft / export_method_peft, loaded by PEFT on the same HF weights
    PEFT save → import   a PEFT adapter saved by PEFT, imported by import_peft
    CLI                  `tinylora finetune` then what `generate --adapter` loads, against the run's last
                         checkpoint (bit for bit; QLoRA included: the NF4 base is rebuilt from the record)

Where a method supports a boundary (its row says so: `serve`, `merge`, `peft` is None), the logits must
not change: float64, 1e-10. Where it does not, the boundary is refused with one line (never computed
wrong). The PEFT columns need torch, transformers and peft and skip without them.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, random_hf_gpt2
from test_cli import FAST, base, cli, some_text  # noqa: F401  (base is a fixture: a tiny model folder)

import tinylora
from tinylora.lora import (add_adapter, export_peft, import_peft, lora_layers, merge_lora, mixed_adapters,
                           save_adapter, set_adapter, unmerge_lora)
from tinylora.lora.adapters import adapter_state
from tinylora.methods import apply_method, load_any_adapter, pissa_to_lora, save_method_adapter
from tinylora.methods.files import declared_tensors
from tinylora.methods.glora import glora_layers
from tinylora.methods.merge import merge_method
from tinylora.methods.peft_export import export_method_peft
from tinylora.methods.prefix import prompt_ids
from tinylora.methods.table import METHODS
from tinylora.model.gpt import GPT, GPTConfig
from tinylora.io import load_tensors
from tinylora.model.load import save_model

CONFIG = GPTConfig(vocab_size=40, block_size=24, n_layer=2, n_head=2, n_embd=16)
ATOL = 1e-10  # float64: the same sums, perhaps in another order
SETTINGS = {  # small settings for every row of the table, several targets and ranks where the method has them
    "lora": {"r": 2, "alpha": 3, "targets": ["q", "v", "fc"]},
    "lora-fa": {"r": 2, "targets": ["q", "k"]},
    "rslora": {"r": 4, "alpha": 2, "targets": ["q", "v", "o"]},
    "loraplus": {"r": 2, "ratio": 4.0, "targets": ["v", "proj"]},
    "dora": {"r": 2, "rslora": True, "targets": ["q", "v", "fc"]},
    "pissa": {"r": 2, "targets": ["q", "v", "fc"]},
    "olora": {"r": 2, "alpha": 4, "rslora": True, "targets": ["q", "v"]},
    "adalora": {"init_r": 3, "targets": ["q", "v", "fc"]},
    "glora": {"r": 2, "config": {"B": "vector"}, "targets": ["q", "fc"]},
    "full": {},
    "top2": {},
    "bitfit": {},
    "prefix-embed": {"prefix_len": 2, "infix_len": 1},
    "prefix-layer": {"prefix_len": 3},
    "adapter-h": {"r": 3},
    "adapter-l": {"r": 2},
}
IDS = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(2, 6))


def test_every_row_of_the_table_is_in_the_matrix():
    assert set(SETTINGS) == set(METHODS)


def base_model(state={}):  # noqa: B006  (one random base for the whole file, built once)
    if not state:
        tinylora.manual_seed(0)
        state.update(GPT(CONFIG, dtype="float64").state_dict())
    model = GPT(CONFIG, dtype="float64")
    model.load_state_dict(state)
    return model.eval()


def randomise(model, seed=1):
    """Move every tensor the method declares off its initial value, so that no boundary passes by accident."""
    rng = np.random.default_rng(seed)
    for _, p in sorted(declared_tensors(model).items()):
        p.data[...] = p.data + rng.normal(0.0, 0.1, size=p.shape)
    return model


def adapted(method):
    model = apply_method(base_model(), method, SETTINGS[method])
    return randomise(model).eval()


def logits(model, ids=IDS):
    rows = [prompt_ids(model, list(row)) for row in ids]  # prefix tuning: the virtual tokens around the prompt
    with tinylora.no_grad():
        return model(tinylora.tensor(np.array(rows)))[0].numpy()


def refused_in_one_line(call, *expected):
    with pytest.raises((ValueError, TypeError, RuntimeError, KeyError)) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message, message
    assert all(part in message for part in expected), message


# ------------------------------------------------------------------ save → load
@pytest.mark.parametrize("method", sorted(METHODS))
def test_save_then_load(method, tmp_path):
    model = adapted(method)
    before = logits(model)
    row = METHODS[method]
    if row.files == "model":  # full fine-tuning: a whole model folder
        save_model(model, tmp_path)
        loaded = GPT(CONFIG, dtype="float64")
        loaded.load_state_dict(load_tensors(tmp_path / "model.safetensors"))
    else:
        if row.files == "lora":
            save_adapter(model, tmp_path)
        else:
            save_method_adapter(model, tmp_path, method, SETTINGS[method])
        loaded = load_any_adapter(base_model(), tmp_path)
    assert_close(logits(loaded.eval()), before, rtol=0, atol=ATOL, what=f"{method} save -> load")


# ------------------------------------------------------------------ switch away and back
@pytest.mark.parametrize("method", sorted(METHODS))
def test_switch_away_and_back(method):
    model = adapted(method)
    before = logits(model)
    if METHODS[method].serve is not None:  # named adapters are the per-example ones
        refused_in_one_line(lambda: add_adapter(model, "other", r=1, targets=SETTINGS[method].get("targets", ["q"])))
        assert_close(logits(model), before, rtol=0, atol=0, what=f"{method}: a refused add changes nothing")
        return
    add_adapter(model, "other", r=3, alpha=5, targets=SETTINGS[method]["targets"])
    set_adapter(model, "other")
    assert np.abs(logits(model) - before).max() > 1e-6  # another function
    set_adapter(model, "default")
    assert_close(logits(model), before, rtol=0, atol=ATOL, what=f"{method} switched away and back")


# ------------------------------------------------------------------ mixed batch vs each example alone
@pytest.mark.parametrize("method", sorted(METHODS))
def test_mixed_batch_equals_each_example_alone(method):
    model = adapted(method)
    if METHODS[method].serve is not None:
        refused_in_one_line(lambda: mixed_adapters(model, ["default", "base"]).__enter__())
        return
    add_adapter(model, "other", r=3, alpha=5, targets=SETTINGS[method]["targets"])
    rng = np.random.default_rng(2)
    for _, layer in lora_layers(model):
        state = adapter_state(layer, "other")
        state.lora_B.data[...] = rng.normal(0.0, 0.1, size=state.lora_B.shape)
    if method == "rslora":  # the second adapter rank-stabilised too, with another rank: its own α/√r
        for _, layer in lora_layers(model):
            adapter_state(layer, "other").rslora = True
    alone = [logits(model, IDS[:1])]
    set_adapter(model, "other")
    alone.append(logits(model, IDS[1:]))
    set_adapter(model, "default")
    for strategy in ("gather", "group"):
        with mixed_adapters(model, ["default", "other"], strategy=strategy):
            mixed = logits(model)
        assert_close(mixed, np.concatenate(alone), rtol=0, atol=ATOL, what=f"{method} mixed ({strategy})")


# ------------------------------------------------------------------ merge → unmerge
@pytest.mark.parametrize("method", sorted(METHODS))
def test_merge_then_unmerge(method):
    model = adapted(method)
    before = logits(model)
    row = METHODS[method]
    if row.merge is not None:
        refused_in_one_line(lambda: merge_method(model, method), "cannot be merged")
        return
    if any(True for _ in lora_layers(model)) or any(True for _ in glora_layers(model)):
        merge_lora(model)
        for _, layer in glora_layers(model):
            layer.merge()
        assert_close(logits(model), before, rtol=0, atol=ATOL, what=f"{method} merged")
        unmerge_lora(model)
        for _, layer in glora_layers(model):
            layer.unmerge()
        assert_close(logits(model), before, rtol=0, atol=ATOL, what=f"{method} unmerged")
    merged, _ = merge_method(model, method)  # what `tinylora merge` writes: a plain GPT
    assert not any(True for _ in lora_layers(merged)) and not any(True for _ in glora_layers(merged))
    assert_close(logits(merged), before, rtol=0, atol=ATOL, what=f"{method} merge_method")


# ------------------------------------------------------------------ PEFT
HF_SIZES = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=40, n_positions=24, bos_token_id=None, eos_token_id=None)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """(torch, peft, load_hf, folder): a random float64 HF GPT-2, and a function giving fresh copies of it."""
    folder = tmp_path_factory.mktemp("boundaries_hf")
    torch, transformers, peft = random_hf_gpt2(folder, HF_SIZES)

    def load_hf():
        return transformers.GPT2LMHeadModel.from_pretrained(folder, torch_dtype=torch.float64).eval()

    return torch, peft, load_hf, folder


def tiny_from_hf(folder):
    from tinylora.model.hf_gpt2 import load_gpt2

    return load_gpt2(folder, dtype="float64").eval()


def hf_logits(torch, model):
    with torch.no_grad():
        return model(torch.tensor(IDS)).logits.numpy()


@pytest.mark.ref
@pytest.mark.parametrize("method", sorted(METHODS))
def test_peft_export_then_peft_load(method, hf, tmp_path):
    torch, peft, load_hf, folder = hf
    model = randomise(apply_method(tiny_from_hf(folder), method, SETTINGS[method])).eval()
    before = logits(model)
    if method in ("pissa", "olora"):  # PEFT's own route: convert to a plain LoRA on the original base
        pissa_to_lora(model)
    row = METHODS[method]
    if row.peft is not None and method not in ("dora", "pissa", "olora"):
        refused_in_one_line(lambda: export_peft(model, tmp_path))
        refused_in_one_line(lambda: export_method_peft(model, tmp_path))
        return
    if method == "dora":
        refused_in_one_line(lambda: export_peft(model, tmp_path), "DoRALinear", "export_method_peft")
        export_method_peft(model, tmp_path)
    else:
        export_peft(model, tmp_path)
    loaded = peft.PeftModel.from_pretrained(load_hf(), tmp_path).eval()
    assert_close(hf_logits(torch, loaded), before, rtol=0, atol=ATOL, what=f"{method} export -> PEFT")


PEFT_CONFIGS = {  # methods PEFT saves as a LoRA adapter, and how
    "lora": {}, "lora-fa": {}, "loraplus": {}, "rslora": {"use_rslora": True},
    "dora": {"use_dora": True}, "pissa": {"init_lora_weights": "pissa"}, "olora": {"init_lora_weights": "olora"},
}


@pytest.mark.ref
@pytest.mark.parametrize("method", sorted(PEFT_CONFIGS))
def test_peft_save_then_import(method, hf, tmp_path):
    torch, peft, load_hf, folder = hf
    config = peft.LoraConfig(r=4, lora_alpha=3, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True,
                             **PEFT_CONFIGS[method])
    hf_base = load_hf() if method not in ("pissa", "olora") else load_hf().float()  # PEFT's PiSSA refuses float64
    hf_model = peft.get_peft_model(hf_base, config).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf_model.save_pretrained(tmp_path)
    if method in ("dora", "pissa", "olora"):  # another function than A, B on the original base: refused
        refused_in_one_line(lambda: import_peft(tiny_from_hf(folder), tmp_path))
        return
    imported = import_peft(tiny_from_hf(folder), tmp_path)
    assert_close(logits(imported), hf_logits(torch, hf_model), rtol=0, atol=ATOL, what=f"PEFT {method} -> import")


# ------------------------------------------------------------------ CLI finetune -> generate
CLI_FLAGS = {"lora": ["--rank", "2", "--targets", "q,v,fc"], "lora-fa": ["--rank", "2"], "rslora": ["--alpha", "2"],
             "loraplus": ["--loraplus-ratio", "4"], "dora": ["--rslora"], "pissa": [], "olora": [],
             "adalora": ["--rank", "3", "--target-r", "2"], "glora": ["--rank", "2"], "full": [], "top2": [],
             "bitfit": [], "prefix-embed": ["--prefix-len", "2"], "prefix-layer": ["--prefix-len", "2"],
             "adapter-h": ["--adapter-dim", "2"], "adapter-l": ["--adapter-dim", "2"]}


CLI_CASES = {**{m: (m, CLI_FLAGS[m]) for m in sorted(METHODS)},
             "qlora": ("lora", ["--quantize", "nf4", "--compute-dtype", "float32"])}  # generate rebuilds the NF4 base


@pytest.mark.slow  # 17 short training runs from the command line
@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_finetune_then_generate_loads_exactly_what_trained(case, capsys, base, tmp_path):  # noqa: F811
    """What `generate --adapter` loads (cli/loading.py) computes what the run trained: the model rebuilt from
    the run's last checkpoint (the method applied to the base, the trained tensors put back) gives the same
    logits, bit for bit; and generate runs on it."""
    from tinylora.cli.loading import load_with_adapter
    from tinylora.cli.finetune import apply_memory_flags, method_settings, no_dropout
    from tinylora.cli.main import build_parser
    from tinylora.model.load import load_model

    method, flags = CLI_CASES[case]
    folder = base
    data = tmp_path / "notes.txt"
    data.write_text(some_text(5))
    argv = ["finetune", "--base", folder, "--data", data, "--method", method, *flags, "--out",
            tmp_path / "run", "--lr", "1e-2", *FAST]
    code, _, err = cli(capsys, *argv)
    assert code == 0, err
    row = METHODS[method]
    if row.files == "model":
        trained, _ = load_model(tmp_path / "run" / row.folder)
    else:
        trained, _ = load_with_adapter(None, str(tmp_path / "run" / row.folder))
    args = build_parser().parse_args([str(a) for a in argv])
    tinylora.manual_seed(args.seed)
    rebuilt, _ = load_model(folder)
    no_dropout(rebuilt)
    apply_memory_flags(args, rebuilt)
    apply_method(rebuilt, method, method_settings(args))
    checkpoints = sorted((tmp_path / "run").glob("step-*"))
    state = load_tensors(checkpoints[-1] / "trainable.safetensors")
    for name, p in rebuilt.named_parameters():
        if name in state:
            p.data[...] = state[name]
    np.testing.assert_array_equal(logits(trained.eval()), logits(rebuilt.eval()))
    code, out, err = cli(capsys, "generate", "--adapter" if row.files != "model" else "--model",
                         tmp_path / "run" / row.folder, "--max-new-tokens", "3", "--temperature", "0")
    assert code == 0, err
