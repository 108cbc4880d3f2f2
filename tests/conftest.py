"""Shared test set-up: the hypothesis profile, reference-library imports, and small helpers.

Hypothesis profile "ci" (the default): deadline=None (a slow 2-core machine
must not fail on timing), derandomize=True (a fixed seed, so a failure
reproduces), and at least MIN_EXAMPLES examples per property.

Reference libraries (torch, transformers, peft, tokenizers) are optional for a
student: tests that need one call `require("torch")`, which skips when it is
missing, unless TINYLORA_REQUIRE_REF=1 (set by .ci/run), where a missing
library is a failure, so a broken install can never pass as green.

Test helpers live beside this file: `gradcheck.py` (central differences with a
random upstream gradient) and `strategies.py` (the hypothesis strategies several
files share). Tests slower than ~3 s are marked `slow`; the README's fast command
(`python -m pytest -q -m "not slow"`) skips them, CI runs everything.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinylora
from tinylora.engine.backend import to_host

MIN_EXAMPLES = 25  # per property test, stated here and used by the profile

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=MIN_EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def require(module_name: str):
    """Import a reference library, or skip (fail under TINYLORA_REQUIRE_REF=1) if it is missing."""
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        if os.environ.get("TINYLORA_REQUIRE_REF") == "1":
            pytest.fail(f"reference library '{module_name}' is required (TINYLORA_REQUIRE_REF=1) but missing: {err}")
        pytest.skip(f"reference library '{module_name}' is not installed")


def pytest_configure(config):
    """Register the course's task markers (a1_task1, ...): `pytest -m a1_task2` runs one task's tests."""
    from tinylora.course import ASSIGNMENTS

    for assignment in ASSIGNMENTS:
        for task in assignment.tasks:
            config.addinivalue_line("markers", f"{assignment.marker(task)}: {assignment.message(task)}")


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seed."""
    tinylora.manual_seed(0)
    yield


def random_hf_gpt2(folder, sizes: dict):
    """Save a Hugging Face GPT-2 with random N(0, 0.1²) weights (LayerNorm weights around 1) to `folder`.

    Returns (torch, transformers, peft), imported through `require`. Used by the PEFT comparison tests."""
    torch = require("torch")
    transformers = require("transformers")
    peft = require("peft")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**sizes))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.1)
            if ".ln_" in name and name.endswith("weight"):
                p.add_(1.0)
    model.save_pretrained(folder)
    return torch, transformers, peft


def assert_close(actual, expected, rtol, atol, what=""):
    """np.testing.assert_allclose that also prints the largest absolute difference."""
    actual, expected = to_host(actual), to_host(expected)  # explicit host copies: either may be a device array
    diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=f"{what} max |diff| = {diff:.3e}")
