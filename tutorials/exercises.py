"""Self-checks for the tutorials' exercises: each says right or wrong, and never prints the answer.

In a notebook (the notebooks sit next to this file, so `import exercises` finds it):

    from exercises import check
    answer = ...               # replace ... with your answer
    check("04.3", answer)      # prints "not attempted yet", "right" or "wrong: <a hint>"

An exercise asks either for a number (a count, a byte size) or for a small function written in NumPy.
The right answer is computed from tinylora itself when you check (a count from a model it builds, the
output of its own layer or op on random inputs), so it is written nowhere, and only the verdict is
printed: a hint says what kind of mistake it is (a shape, a factor), never the value.

`...` (the placeholder a notebook ships with) and a function that still raises NotImplementedError are
"not attempted yet", so every notebook runs top to bottom before you start. In a course release, where
the tinylora function a check compares with is itself a stub, the check says "cannot check" rather than
judge. `verdict()` returns the verdict instead of printing it (tests/test_tutorial_exercises.py uses it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

RIGHT, WRONG, NOT_ATTEMPTED, CANNOT_CHECK = "right", "wrong", "not attempted yet", "cannot check"


class Wrong(Exception):
    """Raised by a judge with a hint that does not give the answer away."""


class NotAttempted(Exception):
    """The student's function still raises NotImplementedError."""


@dataclass(frozen=True)
class Exercise:
    name: str  # "04.3": tutorial 04, exercise 3
    asks: str  # what the answer is, in a few words (shown when the answer has the wrong type)
    judge: Callable  # judge(answer, **context) returns if right, raises Wrong(hint) if not


EXERCISES: dict[str, Exercise] = {}


def exercise(name: str, asks: str):
    """Register a judge under `name`."""
    def register(judge):
        EXERCISES[name] = Exercise(name, asks, judge)
        return judge
    return register


def verdict(name: str, answer, **context) -> tuple[str, str]:
    """(RIGHT | WRONG | NOT_ATTEMPTED, a message to print) for `answer` to exercise `name`."""
    if name not in EXERCISES:
        raise KeyError(f"no exercise {name!r}; there are {', '.join(sorted(EXERCISES))}")
    if answer is ...:
        return NOT_ATTEMPTED, f"{name}: not attempted yet (replace ... with {EXERCISES[name].asks})"
    try:
        EXERCISES[name].judge(answer, **context)
    except NotAttempted:
        return NOT_ATTEMPTED, f"{name}: not attempted yet (your function still raises NotImplementedError)"
    except NotImplementedError as stub:  # tinylora's own code, not the student's: a course release stubs it
        return CANNOT_CHECK, (f"{name}: cannot check here: the tinylora code this check compares with is a stub "
                              f"in this copy ({stub}); run it with the reference installed")
    except Wrong as hint:
        return WRONG, f"{name}: wrong: {hint}"
    return RIGHT, f"{name}: right"


def check(name: str, answer, **context) -> None:
    """Print whether `answer` to exercise `name` is right (see the module docstring)."""
    print(verdict(name, answer, **context)[1])


# ------------------------------------------------------------------ comparing without showing


def _number(answer, expected, hint: str, rel: float = 1e-9) -> None:
    """Right if `answer` is a number within `rel` (relative) of `expected`."""
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        raise Wrong(f"give a number, not a {type(answer).__name__}")
    if not math.isclose(float(answer), float(expected), rel_tol=rel, abs_tol=1e-12):
        raise Wrong(hint)


def _call(function, *args):
    """Call a student's function; a crash other than NotImplementedError is a wrong answer."""
    if not callable(function):
        raise Wrong(f"give a function, not a {type(function).__name__}")
    try:
        return function(*args)
    except NotImplementedError:
        raise NotAttempted from None
    except Exception as err:  # the student's code: any error is a wrong answer, named
        raise Wrong(f"your function raised {type(err).__name__}: {err}") from None


def _array(got, expected, what: str, atol: float = 1e-9) -> None:
    """Right if `got` has `expected`'s shape and values (to `atol`)."""
    if got is None:
        raise Wrong(f"{what}: your function returned None (did you forget `return`?)")
    got = np.asarray(got, dtype=np.float64)
    if got.shape != np.shape(expected):
        raise Wrong(f"{what} has shape {got.shape}; it should have shape {np.shape(expected)}")
    if not np.allclose(got, expected, rtol=1e-7, atol=atol):
        raise Wrong(f"{what} has the right shape but not the right values")


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ 01 autograd from scratch

NEURON = {"x1": 0.5, "x2": -1.5, "w1": 0.8, "w2": 0.3, "b": 0.1}


@exercise("01.1", "dL/dx1, a number")
def _judge_01_1(answer):
    import tinylora
    from tinylora import functional as F

    v = {k: tinylora.tensor([value], dtype="float64", requires_grad=True) for k, value in NEURON.items()}
    L = F.tanh(v["w1"] * v["x1"] + v["w2"] * v["x2"] + v["b"]) * v["x1"]  # x1 used twice
    L.sum().backward()
    _number(answer, v["x1"].grad.numpy()[0],
            "x1 reaches L along two paths: its gradient is the sum of both (the += of backward)", rel=1e-6)


@exercise("01.2", "a pair of ints (bytes saved with W trainable, bytes saved with W frozen)")
def _judge_01_2(answer):
    import tinylora
    from tinylora import nn
    from tinylora.engine.backend import memory

    def saved(freeze: bool) -> int:
        layer = nn.Linear(512, 64)
        layer.weight.requires_grad_(not freeze)
        layer.bias.requires_grad_(not freeze)
        x = tinylora.randn(16, 512, requires_grad=True)
        before = memory.stats()["current"]["saved"]
        y = layer(x)
        held = memory.stats()["current"]["saved"] - before  # what this one node keeps for backward
        del y
        return held

    if not (isinstance(answer, tuple) and len(answer) == 2):
        raise Wrong("give a pair (trainable, frozen) of byte counts")
    right = (saved(False), saved(True))
    if answer[0] != right[0] and answer[1] != right[1]:
        raise Wrong("both numbers are off: what does each case keep, and how many bytes is a float32?")
    if answer[0] != right[0]:
        raise Wrong("the trainable case is off: which array does dL/dW = Gᵀ x need?")
    if answer[1] != right[1]:
        raise Wrong("the frozen case is off: W is a parameter, alive anyway; is anything else kept?")


# ------------------------------------------------------------------ 02 gradient checking


@exercise("02.1", "a function softmax_backward(y, u)")
def _judge_02_1(softmax_backward):
    import tinylora
    from tinylora import functional as F

    rng = _rng(1)
    for shape in ((5,), (3, 4), (2, 3, 6)):
        x = tinylora.tensor(rng.normal(size=shape), requires_grad=True)
        u = rng.normal(size=shape)
        y = F.softmax(x, axis=-1)
        y.backward(tinylora.tensor(u))
        _array(_call(softmax_backward, y.detach().numpy(), u), x.grad.numpy(), f"your dx for shape {shape}")


@exercise("02.2", "a function unbroadcast(grad, shape)")
def _judge_02_2(unbroadcast):
    from tinylora.engine.ops._util import unbroadcast as reference

    rng = _rng(2)
    for out, shape in (((2, 3), (2, 3)), ((2, 3, 4), (3, 4)), ((2, 3, 4), (1, 4)), ((2, 3, 4), (2, 1, 4)),
                       ((5,), (1,)), ((2, 3), ())):
        grad = rng.normal(size=out)
        _array(_call(unbroadcast, grad.copy(), shape), reference(grad, shape),
               f"your gradient for an input of shape {shape} broadcast to {out}")


# ------------------------------------------------------------------ 03 GPT-2 in tinylora


@exercise("03.1", "a function gpt_parameters(V, T, L, C)")
def _judge_03_1(gpt_parameters):
    import tinylora

    for V, T, L, C in ((257, 32, 2, 32), (100, 16, 1, 8), (50, 64, 3, 16)):
        config = tinylora.GPTConfig(vocab_size=V, block_size=T, n_layer=L, n_head=4, n_embd=C, dropout=0.0)
        count = _call(gpt_parameters, V, T, L, C)
        _number(count, tinylora.GPT(config).num_parameters(),
                f"wrong count for V={V}, T={T}, L={L}, C={C}: count the biases and LayerNorms too "
                "(and the head shares W_te)")


@exercise("03.2", "a function split_heads(x, n_head)")
def _judge_03_2(split_heads):
    import tinylora

    rng = _rng(3)
    for B, T, n_head, C in ((2, 5, 4, 16), (1, 3, 2, 6)):
        config = tinylora.GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=n_head, n_embd=C, dropout=0.0)
        attention = tinylora.GPT(config).blocks[0].attn
        x = rng.normal(size=(B, T, C))
        _array(_call(split_heads, x.copy(), n_head), attention._heads(tinylora.tensor(x)).numpy(),
               f"your heads for x of shape {(B, T, C)} and {n_head} heads")


# ------------------------------------------------------------------ 04 LoRA in 15 minutes


def _lora_layer(d: int, k: int, r: int, alpha: float, seed: int):
    """A float64 LoRALinear with a bias and a random, nonzero B (as after some training)."""
    import tinylora
    from tinylora import nn
    from tinylora.lora import LoRALinear

    tinylora.manual_seed(seed)
    layer = LoRALinear(nn.Linear(k, d, dtype="float64"), r=r, alpha=alpha)
    layer.base.bias.data[...] = _rng(seed).normal(size=d)
    layer.lora_B.data[...] = _rng(seed + 1).normal(size=(d, r))
    return layer


def _host(layer):
    return tuple(p.detach().numpy().copy() for p in (layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B))


@exercise("04.1", "a function lora_forward(x, W0, b, A, B, alpha, r)")
def _judge_04_1(lora_forward):
    import tinylora

    for d, k, r, alpha, shape in ((6, 5, 2, 4.0, (3,)), (7, 4, 3, 1.5, (2, 3))):
        layer = _lora_layer(d, k, r, alpha, seed=4)
        x = _rng(5).normal(size=shape + (k,))
        W0, b, A, B = _host(layer)
        with tinylora.no_grad():
            right = layer(tinylora.tensor(x)).numpy()
        got = _call(lora_forward, x.copy(), W0, b, A, B, alpha, r)
        if got is not None and np.shape(got) == right.shape:
            base_only = x @ W0.T + b
            unscaled = base_only + (x @ A.T) @ B.T
            if np.allclose(got, base_only):
                raise Wrong("your h is W0 x + b alone: where is the low-rank path?")
            if np.allclose(got, unscaled) and alpha != r:
                raise Wrong("the low-rank path is not scaled by α/r")
        _array(got, right, f"your h for x of shape {x.shape}, d={d}, k={k}, r={r}")


@exercise("04.2", "a function lora_merge(W0, A, B, alpha, r)")
def _judge_04_2(lora_merge):
    for d, k, r, alpha in ((6, 5, 2, 4.0), (3, 8, 1, 0.5)):
        layer = _lora_layer(d, k, r, alpha, seed=6)
        W0, _, A, B = _host(layer)
        got = _call(lora_merge, W0.copy(), A, B, alpha, r)
        layer.merge()
        if got is not None and np.shape(got) == W0.shape and np.allclose(got, W0 + B @ A):
            raise Wrong("your merge adds B A without the scaling α/r")
        _array(got, layer.base.weight.detach().numpy(), f"your merged W for d={d}, k={k}, r={r}")


@exercise("04.3", "a function lora_grads(x, G, A, B, alpha, r) returning (dL/dA, dL/dB)")
def _judge_04_3(lora_grads):
    import tinylora

    d, k, r, alpha = 6, 5, 2, 4.0
    layer = _lora_layer(d, k, r, alpha, seed=7)
    rng = _rng(8)
    x, G = rng.normal(size=(4, k)), rng.normal(size=(4, d))
    (layer(tinylora.tensor(x)) * tinylora.tensor(G)).sum().backward()  # L = sum(h * G): dL/dh = G
    _, _, A, B = _host(layer)
    got = _call(lora_grads, x.copy(), G.copy(), A, B, alpha, r)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise Wrong("return a pair (dA, dB)")
    _array(got[0], layer.lora_A.grad.numpy(), "your dL/dA")
    _array(got[1], layer.lora_B.grad.numpy(), "your dL/dB")


@exercise("04.4", "an int: trainable parameters after apply_lora(r=2, targets=('q', 'v', 'fc')) on base-mini")
def _judge_04_4(answer):
    import tinylora
    from tinylora.lora import apply_lora, parameter_report

    model = apply_lora(tinylora.GPT(tinylora.GPTConfig.mini()), r=2, targets=("q", "v", "fc"))
    _number(answer, parameter_report(model)["trainable"],
            "count r(d + k) for each adapted matrix, in every block; fc is (4C, C), not (C, C)")


# ------------------------------------------------------------------ 05 fine-tuning on your own text


@exercise("05.1", "an int: bytes of A and B together in the adapter the command wrote")
def _judge_05_1(answer, adapter: str):
    from tinylora.io import load_tensors

    tensors = load_tensors(f"{adapter}/adapter.safetensors")
    _number(answer, sum(t.nbytes for t in tensors.values()),
            "count the numbers in every A and B (r = 4 on W_q and W_v of each block), 4 bytes each")


@exercise("05.2", "a float: the validation loss in bits per byte")
def _judge_05_2(answer, loss: float):
    _number(answer, loss / math.log(2), "the loss is in nats (natural log); a bit is log base 2", rel=1e-3)


# ------------------------------------------------------------------ 06 why LoRA: the alternatives


@exercise("06.1", "an int: Adapter^H's |Θ| with r = 8 on GPT-2 medium (L = 24, d = 1024)")
def _judge_06_1(answer):
    from tinylora.methods.bottleneck_adapters import adapter_count

    _number(answer, adapter_count(2 * 24, 0, 1024, 8),
            "Adapter^H has two adapters per block, each W_down (r×d), W_up (d×r) and their biases")


@exercise("06.2", "an int: PreLayer's |Θ| with l_p = l_i = 10 on GPT-2 medium (L = 24, d = 1024)")
def _judge_06_2(answer):
    from tinylora.methods.prefix import prefix_count

    _number(answer, prefix_count(1024, 10, 10, 24), "PreLayer trains each virtual token's state in every block")


# ------------------------------------------------------------------ 07 beyond LoRA


@exercise("07.1", "a float: rsLoRA's scaling for α = 16, r = 64")
def _judge_07_1(answer):
    from tinylora import nn
    from tinylora.lora import LoRALinear
    from tinylora.methods.rslora import make_rslora

    layer = make_rslora(LoRALinear(nn.Linear(64, 64), r=64, alpha=16))
    _number(answer, layer.scaling, "rsLoRA divides α by the square root of r, not by r")


@exercise("07.2", "a function dora_magnitude(W0)")
def _judge_07_2(dora_magnitude):
    from tinylora import nn
    from tinylora.methods.dora import DoRALinear

    W0 = _rng(9).normal(size=(6, 4))
    base = nn.Linear(4, 6, dtype="float64")
    base.weight.data[...] = W0
    right = DoRALinear(base, r=2).magnitude.detach().numpy()
    got = _call(dora_magnitude, W0.copy())
    if got is not None and np.shape(got) == (4,):
        raise Wrong("one magnitude per output feature (a row of W0), not per column")
    _array(got, right, "your m")


# ------------------------------------------------------------------ 08 where the memory goes


@exercise("08.1", "an int: bytes of AdamW's state for full fine-tuning of GPTConfig.mini(vocab_size=1024)")
def _judge_08_1(answer):
    import tinylora

    n = tinylora.GPT(tinylora.GPTConfig.mini(vocab_size=1024)).num_parameters()
    _number(answer, 2 * 4 * n, "AdamW keeps m and v, float32 each, for every trained number")


@exercise("08.2", "a float: bits per weight of NF4 without double quantization")
def _judge_08_2(answer):
    from tinylora.quant.nf4 import NF4Tensor

    q = NF4Tensor.quantize(_rng(10).standard_normal((256, 256)).astype(np.float32), double_quant=False)
    _number(answer, q.bits_per_parameter(), "4 bits per code, plus each block's float32 absmax shared by 64 weights",
            rel=1e-3)


# ------------------------------------------------------------------ 09 many tasks, one model


@exercise("09.1", "an int: numbers one more adapter adds with r = 8 on q, k, v, o of base-mini")
def _judge_09_1(answer):
    import tinylora
    from tinylora.lora import apply_lora, parameter_report

    model = apply_lora(tinylora.GPT(tinylora.GPTConfig.mini()), r=8, targets=("q", "k", "v", "o"))
    _number(answer, parameter_report(model)["lora"], "r(d + k) for each adapted matrix: four per block, in every block")


@exercise("09.2", "a function mixed_forward(x, W0, b, adapters, ids)")
def _judge_09_2(mixed_forward):
    import tinylora

    d, k = 6, 5
    layers = {"sql": _lora_layer(d, k, 2, 4.0, seed=11), "e2e": _lora_layer(d, k, 3, 3.0, seed=12)}
    W0, b, _, _ = _host(layers["sql"])
    layers["e2e"].base.weight.data[...] = W0  # one base W0 shared by both adapters
    layers["e2e"].base.bias.data[...] = b
    adapters = {name: (layer.lora_A.detach().numpy().copy(), layer.lora_B.detach().numpy().copy(), layer.scaling)
                for name, layer in layers.items()}
    ids = ["sql", "base", "e2e", "sql"]
    x = _rng(13).normal(size=(4, 3, k))  # (B, T, k): row b uses adapter ids[b]
    with tinylora.no_grad():
        rows = [layers[name](tinylora.tensor(x[i:i + 1])).numpy()[0] if name in layers else x[i] @ W0.T + b
                for i, name in enumerate(ids)]
    _array(_call(mixed_forward, x.copy(), W0, b, adapters, ids), np.stack(rows),
           "your batch (rows: sql, base, e2e, sql)")


# ------------------------------------------------------------------ 10 why low rank works


@exercise("10.1", "a function my_phi(A1, A2, i, j)")
def _judge_10_1(my_phi):
    from tinylora.analysis import phi

    rng = _rng(14)
    A1, A2 = rng.normal(size=(4, 20)), rng.normal(size=(8, 20))
    for i, j in ((1, 1), (2, 8), (4, 3)):
        _number(_call(my_phi, A1.copy(), A2.copy(), i, j), phi(A1, A2, i, j),
                f"wrong φ for i={i}, j={j}: use the top right singular vectors, and divide by min(i, j)", rel=1e-6)


@exercise("10.2", "a function my_amplification(W, dW, r)")
def _judge_10_2(my_amplification):
    from tinylora.analysis import amplification_factor

    rng = _rng(15)
    W = rng.normal(size=(12, 10))
    dW = rng.normal(size=(12, 3)) @ rng.normal(size=(3, 10))
    for r in (1, 3):
        _number(_call(my_amplification, W.copy(), dW.copy(), r), amplification_factor(dW, W, r),
                f"wrong factor at r={r}: ‖ΔW‖_F over ‖Uᵀ W Vᵀ‖_F with U, V from ΔW's top-r singular vectors",
                rel=1e-6)


# ------------------------------------------------------------------ 11 where LoRA matches full fine-tuning


@exercise("11.1", "a float: LoRA's share of full fine-tuning's gain, such as 0.5")
def _judge_11_1(answer, lora: dict, full: dict):
    share = (lora["before"] - lora["after"]) / (full["before"] - full["after"])
    _number(answer, share, "both runs start from the same base loss: divide LoRA's drop by full fine-tuning's",
            rel=1e-2)


@exercise("11.2", "an int: parameters LoRA r = 8 on W_q and W_v trains on base-mini")
def _judge_11_2(answer):
    import tinylora
    from tinylora.lora import apply_lora, parameter_report

    model = apply_lora(tinylora.GPT(tinylora.GPTConfig.mini()), r=8, targets=("q", "v"))
    _number(answer, parameter_report(model)["lora"],
            "each adapted matrix gets A (r x k) and B (d x r): two matrices per block, in every block")


@exercise("11.3", "'near' or 'far'")
def _judge_11_3(answer, ratios: dict):
    if answer not in ratios:
        raise Wrong(f"answer one of {', '.join(repr(t) for t in ratios)}")
    if answer != max(ratios, key=ratios.get):
        raise Wrong("compare LoRA's loss divided by full fine-tuning's on the two tasks")


@exercise("11.4", "an int: parameters LoRA r = 8 on every Linear of each block trains on base-mini")
def _judge_11_4(answer):
    import tinylora
    from tinylora.lora import apply_lora, parameter_report
    from tinylora.lora.apply import TARGETS

    def lora_count(targets):
        return parameter_report(apply_lora(tinylora.GPT(tinylora.GPTConfig.mini()), r=8, targets=targets))["lora"]

    all_square = lora_count(("q", "k", "v", "o")) * 6 // 4  # the six counted as if each were 128 x 128
    if isinstance(answer, (int, float, np.integer, np.floating)) and not isinstance(answer, bool) \
            and math.isclose(float(answer), all_square):
        raise Wrong("the MLP's two matrices are not square: W_fc is 512 x 128 and W_proj 128 x 512")
    _number(answer, lora_count(tuple(TARGETS)),
            "sum r(d + k) over the six adapted matrices of a block (four in attention, two in the MLP), "
            "then multiply by the number of blocks")
