"""Peak resident memory of this process, from Linux's /proc (the headline memory metric on the CPU).

    VmRSS   resident set size now: pages of this process that sit in RAM
    VmHWM   the high-water mark of VmRSS since the process started, or since it was last reset

Writing "5" to /proc/self/clear_refs resets VmHWM to the current VmRSS. So, once the model and the
optimizer are built:

    baseline = reset_peak()         # VmRSS at the reset
    ... training steps ...
    peak_above = read_peak() - baseline

is the most memory the steps ever needed on top of the loaded model: activations, gradients, optimizer
state and every temporary, whatever library allocated it. It counts what the operating system sees, so
memory a library caches and does not give back (PyTorch's allocator, glibc's heap) counts too.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def available() -> bool:
    """True where /proc/self/status exists and /proc/self/clear_refs is writable (Linux)."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return "VmHWM" in _STATUS.read_text()
    except OSError:
        return False


def _status_bytes(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"{field} not found in {_STATUS}")


def rss_bytes() -> int:
    """Resident memory now (VmRSS)."""
    return _status_bytes("VmRSS")


def peak_bytes() -> int:
    """High-water mark of resident memory since start or the last `reset_peak()` (VmHWM)."""
    return _status_bytes("VmHWM")


def reset_peak() -> int:
    """Reset VmHWM to VmRSS; returns VmRSS at the reset (the baseline to subtract)."""
    with open(_CLEAR_REFS, "w") as f:
        f.write("5")
    return rss_bytes()
