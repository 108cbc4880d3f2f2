"""Where a measured number came from: one record written beside every result.

    provenance()  ->  {"git": {"commit", "dirty"}, "machine": {"cpu_model", "physical_cores",
                       "logical_cpus", "gpu"}, "command", "versions": {...}, "time"}

A figure in the docs is only as good as the run behind it. The record says which code ran (the git
commit, and whether the checkout had uncommitted changes), on what (CPU model and cores, the GPU if
one was used), how (the command line), with which libraries, and when. Tables compare rows only when
their machines are equal. Nothing here imports NumPy, CuPy or torch: versions are read from package
metadata, the GPU name from an already-imported CuPy or torch.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PACKAGES = ("numpy", "tinylora", "torch", "transformers", "peft", "sacrebleu", "cupy-cuda12x", "cupy-cuda13x")


def git_state(folder=None) -> dict:
    """{"commit": the checkout's HEAD or None outside git, "dirty": True if tracked files have changes}."""
    folder = folder or Path(__file__).resolve().parents[2]

    def git(*args):
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def cpu_info() -> dict:
    """CPU model name and physical core count from /proc/cpuinfo (Linux); else what platform knows."""
    model, cores = platform.processor() or platform.machine(), set()
    try:
        physical = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    except OSError:
        pass
    return {"cpu_model": model, "physical_cores": len(cores) or None, "logical_cpus": os.cpu_count()}


def gpu_name() -> str | None:
    """The GPU's name if CuPy or torch is already imported and sees one; None on a CPU-only run."""
    if "cupy" in sys.modules:
        try:
            props = sys.modules["cupy"].cuda.runtime.getDeviceProperties(0)
            return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        except Exception:  # a CuPy without a usable device
            return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


def versions() -> dict:
    """Python and the installed versions of the packages that change results (absent ones left out)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def provenance(command: str | None = None, device: str = "cpu") -> dict:
    """The record: git state, machine, command (default: this process's command line), versions, time."""
    machine = cpu_info()
    machine["gpu"] = gpu_name() if device != "cpu" else None
    return {"git": git_state(), "machine": machine,
            "command": command or shlex.join([os.path.basename(sys.executable), *sys.argv]),
            "versions": versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def same_machine(a: dict, b: dict) -> bool:
    """True when two provenance records (or their "machine" parts) name the same CPU, cores and GPU."""
    a, b = a.get("machine", a), b.get("machine", b)
    keys = ("cpu_model", "physical_cores", "gpu")
    return all(a.get(k) == b.get(k) for k in keys)
