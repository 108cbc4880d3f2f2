"""The README's two test commands and .ci/run agree: students get the fast one, CI runs the full one
(then the fast tests and the notebooks again on the CuPy-strict fake device, then the fast tests on the
ops' readable lines, engine/kernels off).

.ci/run extracts its command from README.md with awk (the command line after the
`<!-- ci-test-command -->` marker); this runs the same extraction, so a README edit
that breaks CI fails here first.
"""

import os
import shutil
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def command_after(marker: str) -> str:
    """The line .ci/run's awk takes: two lines below the marker (the fence, then the command)."""
    lines = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    return lines[lines.index(marker) + 2]


def test_students_get_the_fast_command_and_ci_the_full_one_then_the_fake_device_and_readable_runs():
    fast, full = command_after("<!-- test-command -->"), command_after("<!-- ci-test-command -->")
    assert "pytest" in fast and '-m "not slow"' in fast
    runs = [part for part in full.split(" && ") if "pytest" in part]
    assert len(runs) == 3, full
    cpu, on_fake, readable = runs
    assert "TINYLORA_DEVICE" not in cpu and "--nbmake" in cpu and "slow" not in cpu  # everything, notebooks included
    assert on_fake.startswith("TINYLORA_DEVICE=fake ") and "--nbmake" in on_fake  # again under CuPy's rules
    assert readable.startswith("TINYLORA_KERNELS=0 ") and '-m "not slow"' in readable  # the readable ops alone


def test_ci_reads_the_full_command_and_requires_the_reference_libraries():
    script = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "<!-- ci-test-command -->" in script
    assert "export TINYLORA_REQUIRE_REF=1" in script
    if shutil.which("awk") is None:
        pytest.skip("awk is not installed")
    awk = script.split("test_command=$(", 1)[1].split(")\n", 1)[0]  # the extraction .ci/run runs
    out = subprocess.run(["bash", "-c", awk], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert out == command_after("<!-- ci-test-command -->")
