"""The README's two test commands and .ci/run agree: students get the fast one, which CI runs first in a
fresh virtual environment holding only what it installs; then CI runs the full one (then the fast tests and
the notebooks again on the CuPy-strict fake device, then the fast tests on the ops' readable lines,
engine/kernels off).

.ci/run extracts both commands from README.md with awk (the command line two lines below the
`<!-- test-command -->` and `<!-- ci-test-command -->` markers); this runs the same extraction, so a
README edit that breaks CI fails here first.
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


def extracted(marker: str) -> str:
    """What .ci/run's own readme_command function prints for `marker`."""
    script = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    function = script.split("readme_command() {", 1)[1].split("\n}\n", 1)[0]
    shell = "readme_command() {" + function + "\n}\nreadme_command '" + marker + "'"
    return subprocess.run(["bash", "-c", shell], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_ci_reads_the_full_command_and_requires_the_reference_libraries():
    script = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "test_command=$(readme_command '<!-- ci-test-command -->')" in script
    assert "export TINYLORA_REQUIRE_REF=1" in script
    if shutil.which("awk") is None:
        pytest.skip("awk is not installed")
    assert extracted("<!-- ci-test-command -->") == command_after("<!-- ci-test-command -->")


def test_ci_runs_the_student_command_first_in_a_fresh_environment_without_the_reference_libraries():
    """The student's command runs in a new venv (only `.[test]`), before anything installs torch or `ref`."""
    script = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    student = script.index("student_command=$(readme_command '<!-- test-command -->')")
    venv = script.index('python -m venv "$student_env/venv"')
    runs = script.index('bash -c "$student_command"')
    assert student < venv < runs < script.index("pip install --quiet torch"), "the student run comes first"
    assert "env -u TINYLORA_REQUIRE_REF" in script[venv:runs + 40], "reference libraries may be missing there"
    assert "--system-site-packages" not in script, "the fresh venv must not see what the machine has installed"
    if shutil.which("awk") is None:
        pytest.skip("awk is not installed")
    assert extracted("<!-- test-command -->") == command_after("<!-- test-command -->")
