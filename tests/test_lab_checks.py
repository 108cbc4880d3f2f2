"""The lab's checks (tutorials/lora_checks.py) pass tinylora's own code and fail each planted mistake.

The lab notebook asserts the same on its own copies of the mistakes; here they are written again, each as
small as it can be, so that a check that stopped catching its mistake fails the fast test run too.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tinylora import functional as F
from tinylora import nn
from tinylora.lora import LoRALinear

_path = Path(__file__).resolve().parent.parent / "tutorials" / "lora_checks.py"
_spec = importlib.util.spec_from_file_location("tutorial_lora_checks", _path)
checks = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = checks
_spec.loader.exec_module(checks)


class RandomB(LoRALinear):
    def reset_lora_parameters(self):
        super().reset_lora_parameters()
        nn.init.normal_(self.lora_B, 0.0, 0.02)


class ScalesByAlpha(LoRALinear):
    def __init__(self, base, r, alpha=None):
        super().__init__(base, r, alpha)
        self.scaling = self.alpha


class FormsBA(LoRALinear):
    def forward(self, x):
        if self.merged or not self.enabled:
            return self.base(x)
        return self.base(x) + F.linear(x, (self.lora_B @ self.lora_A) * self.scaling)


class UnfrozenW0(LoRALinear):
    def __init__(self, base, r, alpha=None):
        super().__init__(base, r, alpha)
        base.weight.requires_grad_(True)


class MergeWithoutScaling(LoRALinear):
    def merge(self, safe=True):
        if not self.merged:
            self.base.weight.data += self.lora_B.data @ self.lora_A.data
            self.merged = True
        return self


class UnmergeWithoutScaling(LoRALinear):
    def unmerge(self):
        if self.merged:
            self.base.weight.data -= self.lora_B.data @ self.lora_A.data
            self.merged = False
        return self


class IgnoresMerged(LoRALinear):
    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A) * self.scaling, self.lora_B)


@pytest.mark.parametrize("check", checks.LAYER_CHECKS, ids=lambda c: c.__name__)
def test_the_reference_layer_passes(check):
    passed, saw = check(LoRALinear)
    assert passed, saw


@pytest.mark.parametrize("mistake, check", [
    (RandomB, checks.starts_as_the_base),
    (ScalesByAlpha, checks.scales_by_alpha_over_r),
    (FormsBA, checks.never_forms_BA),
    (UnfrozenW0, checks.freezes_W0),
    (MergeWithoutScaling, checks.merge_changes_nothing_but_cost),
    (UnmergeWithoutScaling, checks.merge_changes_nothing_but_cost),
    (IgnoresMerged, checks.merge_changes_nothing_but_cost),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_mistake_fails_its_check(mistake, check):
    passed, saw = check(mistake)
    assert not passed, f"{check.__name__} missed {mistake.__name__}: {saw}"


class Value:
    def __init__(self, data, inputs=(), local_grads=()):
        self.data, self.grad, self.inputs, self.local_grads = float(data), 0.0, inputs, local_grads

    def __add__(self, other):
        return type(self)(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        return type(self)(self.data * other.data, (self, other), (other.data, self.data))

    def order(self):
        out, seen, stack = [], set(), [(self, False)]
        while stack:
            node, done = stack.pop()
            if done:
                out.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack += [(node, True)] + [(i, False) for i in node.inputs]
        return reversed(out)

    def backward(self, add=True):
        self.grad = 1.0
        for node in self.order():
            for inp, local in zip(node.inputs, node.local_grads):
                inp.grad = (inp.grad if add else 0.0) + node.grad * local


class Overwrites(Value):
    def backward(self):
        super().backward(add=False)


def test_the_engine_check_passes_adding_and_fails_overwriting():
    assert checks.sums_the_gradients_of_a_value_used_twice(Value)[0]
    assert not checks.sums_the_gradients_of_a_value_used_twice(Overwrites)[0]
