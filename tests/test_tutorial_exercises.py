"""The tutorials' exercise checks (tutorials/exercises.py) say "right" to a right answer, "wrong" to a wrong
one, and "not attempted yet" to the placeholder, and every notebook ends with at least two of them.

The right answers here are built from tinylora's own code (its layer, op or count), never written out, so
this file holds no solution a course release could leak; the wrong ones are the mistakes a student makes.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import tinylora
from tinylora import functional as F
from tinylora import nn
from tinylora.engine.ops._util import unbroadcast

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
_spec = importlib.util.spec_from_file_location("tutorial_exercises", TUTORIALS / "exercises.py")
ex = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ex  # a dataclass looks its module up there
_spec.loader.exec_module(ex)


def status(name, answer, **context):
    return ex.verdict(name, answer, **context)[0]


def not_yet(*args):
    raise NotImplementedError


# ------------------------------------------------------------------ right answers, from the library


def lora_from(W0, b, A, B, alpha, r):
    """A float64 LoRALinear holding these arrays."""
    from tinylora.lora import LoRALinear

    layer = LoRALinear(nn.Linear(W0.shape[1], W0.shape[0], dtype="float64"), r=r, alpha=alpha)
    for p, value in ((layer.base.weight, W0), (layer.base.bias, b), (layer.lora_A, A), (layer.lora_B, B)):
        p.data[...] = value
    return layer


def library_forward(x, W0, b, A, B, alpha, r):
    with tinylora.no_grad():
        return lora_from(W0, b, A, B, alpha, r)(tinylora.tensor(x)).numpy()


def library_merge(W0, A, B, alpha, r):
    layer = lora_from(W0, np.zeros(W0.shape[0]), A, B, alpha, r).merge()
    return layer.base.weight.detach().numpy()


def library_grads(x, G, A, B, alpha, r):
    layer = lora_from(np.zeros((B.shape[0], A.shape[1])), np.zeros(B.shape[0]), A, B, alpha, r)
    (layer(tinylora.tensor(x)) * tinylora.tensor(G)).sum().backward()
    return layer.lora_A.grad.numpy(), layer.lora_B.grad.numpy()


def library_softmax_backward(y, u):
    x = tinylora.tensor(np.log(y), requires_grad=True)  # softmax(log y) = y, since each row of y sums to 1
    F.softmax(x, axis=-1).backward(tinylora.tensor(u))
    return x.grad.numpy()


def library_heads(x, n_head):
    config = tinylora.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=n_head, n_embd=x.shape[-1])
    return tinylora.GPT(config).blocks[0].attn._heads(tinylora.tensor(x)).numpy()


def library_gpt_parameters(V, T, L, C):
    config = tinylora.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=4, n_embd=C)
    return tinylora.GPT(config).num_parameters()


def library_mixed(x, W0, b, adapters, ids):
    rows = []
    for i, name in enumerate(ids):
        if name == "base":
            rows.append(x[i] @ W0.T + b)
        else:
            A, B, scaling = adapters[name]
            rows.append(library_forward(x[i], W0, b, A, B, scaling * A.shape[0], A.shape[0]))
    return np.stack(rows)


def mini_count(r, targets, key):
    from tinylora.lora import apply_lora, parameter_report

    return parameter_report(apply_lora(tinylora.GPT(tinylora.GPTConfig.mini()), r=r, targets=targets))[key]


def neuron_by_central_difference():
    v = ex.NEURON
    L = lambda x1: math.tanh(v["w1"] * x1 + v["w2"] * v["x2"] + v["b"]) * x1  # noqa: E731
    eps = 1e-6
    return (L(v["x1"] + eps) - L(v["x1"] - eps)) / (2 * eps)


def dora_magnitude(W0):
    from tinylora.methods.dora import DoRALinear

    base = nn.Linear(W0.shape[1], W0.shape[0], dtype="float64")
    base.weight.data[...] = W0
    return DoRALinear(base, r=1).magnitude.detach().numpy()


def nf4_bits():
    from tinylora.quant.nf4 import NF4Tensor

    return NF4Tensor.quantize(np.ones((64, 64), dtype=np.float32), double_quant=False).bits_per_parameter()


def adamw_bytes():
    return 8 * tinylora.GPT(tinylora.GPTConfig.mini(vocab_size=1024)).num_parameters()


def rslora_scaling():
    from tinylora.methods.rslora import rslora_scaling

    return rslora_scaling(16, 64)


def adapter_h():
    from tinylora.methods.bottleneck_adapters import adapter_count

    return adapter_count(48, 0, 1024, 8)


def prelayer():
    from tinylora.methods.prefix import prefix_count

    return prefix_count(1024, 10, 10, 24)


def phi(A1, A2, i, j):
    from tinylora.analysis import phi as library_phi

    return library_phi(A1, A2, i, j)


def amplification(W, dW, r):
    from tinylora.analysis import amplification_factor

    return amplification_factor(dW, W, r)


EVERY_LINEAR = ("q", "k", "v", "o", "fc", "proj")

# name -> (a right answer, a wrong answer); numbers are built lazily (some build a model)
CASES = {
    "01.1": (neuron_by_central_difference, lambda: neuron_by_central_difference() + 0.3),
    "01.2": (lambda: (16 * 512 * 4, 0), lambda: (16 * 512 * 4 + 512 * 64 * 4, 0)),
    "02.1": (lambda: library_softmax_backward, lambda: (lambda y, u: y * u)),
    "02.2": (lambda: unbroadcast, lambda: (lambda g, shape: g)),
    "03.1": (lambda: library_gpt_parameters, lambda: (lambda V, T, L, C: library_gpt_parameters(V, T, L, C) - 2 * C)),
    "03.2": (lambda: library_heads,
             lambda: (lambda x, nh: x.reshape(x.shape[0], nh, x.shape[1], x.shape[2] // nh))),
    "04.1": (lambda: library_forward,
             lambda: (lambda x, W0, b, A, B, alpha, r: library_forward(x, W0, b, A, B, r, r))),  # α, not α/r, lost
    "04.2": (lambda: library_merge, lambda: (lambda W0, A, B, alpha, r: W0 + B @ A)),
    "04.3": (lambda: library_grads,
             lambda: (lambda x, G, A, B, alpha, r: tuple(g * r / alpha for g in library_grads(x, G, A, B, alpha, r)))),
    "04.4": (lambda: mini_count(2, ("q", "v", "fc"), "trainable"),
             lambda: mini_count(2, ("q", "v", "k"), "trainable")),
    "06.1": (adapter_h, lambda: adapter_h() // 2),
    "06.2": (prelayer, lambda: prelayer() // 24),
    "07.1": (rslora_scaling, lambda: 16 / 64),
    "07.2": (lambda: dora_magnitude, lambda: (lambda W0: np.linalg.norm(W0, axis=0))),  # columns, not rows
    "08.1": (adamw_bytes, lambda: adamw_bytes() // 2),
    "08.2": (nf4_bits, lambda: 4.127),
    "09.1": (lambda: mini_count(8, ("q", "k", "v", "o"), "lora"), lambda: mini_count(8, ("q", "v"), "lora")),
    "09.2": (lambda: library_mixed,
             lambda: (lambda x, W0, b, adapters, ids: library_mixed(x, W0, b, adapters, ["sql"] * len(ids)))),
    "10.1": (lambda: phi, lambda: (lambda A1, A2, i, j: phi(A1, A2, i, j) * min(i, j))),
    "10.2": (lambda: amplification, lambda: (lambda W, dW, r: amplification(dW, W, r))),
    "11.2": (lambda: mini_count(8, ("q", "v"), "lora"), lambda: mini_count(8, ("q", "v"), "lora") // 2),
    "11.4": (lambda: mini_count(8, EVERY_LINEAR, "lora"), lambda: mini_count(8, EVERY_LINEAR, "lora") // 4),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_right_answer_is_right_and_a_wrong_one_wrong(name):
    right, wrong = CASES[name]
    assert status(name, right()) == ex.RIGHT, ex.verdict(name, right())[1]
    assert status(name, wrong()) == ex.WRONG


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_placeholder_is_not_attempted(name):
    assert status(name, ...) == ex.NOT_ATTEMPTED
    answer = CASES[name][0]()
    if callable(answer):  # a function exercise ships as a stub that raises NotImplementedError
        assert status(name, not_yet) == ex.NOT_ATTEMPTED


def test_adapter_bytes_and_bits_per_byte(tmp_path):
    """05.1 and 05.2 judge against the student's own run: an adapter folder and a loss."""
    from tinylora.io import load_tensors
    from tinylora.lora import apply_lora, save_adapter

    model = apply_lora(tinylora.GPT(tinylora.GPTConfig.mini()), r=4, targets=("q", "v"))
    save_adapter(model, tmp_path / "adapter")
    size = sum(t.nbytes for t in load_tensors(tmp_path / "adapter" / "adapter.safetensors").values())
    assert status("05.1", size, adapter=str(tmp_path / "adapter")) == ex.RIGHT
    assert status("05.1", size // 4, adapter=str(tmp_path / "adapter")) == ex.WRONG  # a count, not bytes
    assert status("05.1", ..., adapter=str(tmp_path / "adapter")) == ex.NOT_ATTEMPTED
    assert status("05.2", 1.3 / math.log(2), loss=1.3) == ex.RIGHT
    assert status("05.2", 1.3, loss=1.3) == ex.WRONG  # nats, not bits
    assert status("05.2", ..., loss=1.3) == ex.NOT_ATTEMPTED


def test_share_of_gain_and_the_farther_task_are_judged_against_the_notebooks_own_runs():
    """11.1 and 11.3 judge against the runs the notebook made (their losses are passed in)."""
    lora, full = {"before": 2.0, "after": 1.5}, {"before": 2.0, "after": 1.0}
    assert status("11.1", 0.5, lora=lora, full=full) == ex.RIGHT
    assert status("11.1", 1.5 / 1.0, lora=lora, full=full) == ex.WRONG  # the loss ratio, not the share
    assert status("11.1", ..., lora=lora, full=full) == ex.NOT_ATTEMPTED
    ratios = {"near": 1.05, "far": 1.6}
    assert status("11.3", "far", ratios=ratios) == ex.RIGHT
    assert status("11.3", "near", ratios=ratios) == ex.WRONG
    assert status("11.3", "both", ratios=ratios) == ex.WRONG


def test_every_linear_count_names_the_mlps_shapes_when_all_six_are_taken_square():
    """11.4's likely mistake: W_fc and W_proj counted as 128 x 128 like the attention's four."""
    state, message = ex.verdict("11.4", mini_count(8, ("q", "k", "v", "o"), "lora") * 6 // 4)
    assert state == ex.WRONG and "not square" in message
    state, message = ex.verdict("11.4", mini_count(8, EVERY_LINEAR, "lora") + 1)
    assert state == ex.WRONG and "not square" not in message


def test_a_crash_in_the_students_code_is_wrong_and_named():
    def crashes(*args):
        raise ValueError("shapes do not match")

    state, message = ex.verdict("04.1", crashes)
    assert state == ex.WRONG and "ValueError: shapes do not match" in message


def test_a_stubbed_library_function_is_cannot_check_not_a_verdict(monkeypatch):
    """In a course release the library's unbroadcast is a stub: the check must not call the student wrong."""
    import tinylora.engine.ops._util as util

    def stub(grad, shape):
        raise NotImplementedError("A1 task 1: sum the gradient over the axes that broadcasting stretched")

    monkeypatch.setattr(util, "unbroadcast", stub)
    assert status("02.2", lambda g, shape: g) == ex.CANNOT_CHECK


def test_the_message_never_holds_the_answer():
    right = mini_count(2, ("q", "v", "fc"), "trainable")
    for guess in (right + 1, right - 1, 0):
        assert str(right) not in ex.verdict("04.4", guess)[1]
    assert f"{right:,}" not in ex.verdict("04.4", right + 1)[1]


def _code(notebook: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code"]


NOTEBOOKS = sorted(TUTORIALS.glob("[01][0-9]_*.ipynb"))


def test_every_exercise_is_in_a_notebook_and_every_tutorial_ends_with_two():
    assert len(NOTEBOOKS) >= 10
    used = set()
    for notebook in NOTEBOOKS:
        cells = _code(notebook)
        names = [name for cell in cells for name in ex.EXERCISES if f'check("{name}"' in cell]
        assert all(name.startswith(notebook.name[:2] + ".") for name in names), (notebook.name, names)
        last_two = [name for cell in cells[-4:] for name in ex.EXERCISES if f'check("{name}"' in cell]
        assert len(set(last_two)) >= 2, f"{notebook.name} should end with at least two checked exercises"
        used.update(names)
    assert used == set(CASES) | {"05.1", "05.2", "11.1", "11.3"} == set(ex.EXERCISES)


def test_notebooks_are_committed_without_outputs():
    for notebook in [*NOTEBOOKS, TUTORIALS / "lab_common_mistakes.ipynb"]:
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, notebook.name
