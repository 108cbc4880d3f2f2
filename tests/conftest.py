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


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seed."""
    tinylora.manual_seed(0)
    yield


def assert_close(actual, expected, rtol, atol, what=""):
    """np.testing.assert_allclose that also prints the largest absolute difference."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=f"{what} max |diff| = {diff:.3e}")
