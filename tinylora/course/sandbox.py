"""Run pytest on a graded tree in a process the grader controls, and read what it reports.

    run_pytest(tree, tests, markers, ...)  ->  Run(results, collected, started, timed_out, ...)

The test process (child.py) starts in a new session (its own process group) with a fresh, minimal
environment, `python -I -S` (no PYTHONPATH, no user site, no .pth files), and sends its results as token-
stamped JSON lines through a pipe whose write end only it holds. The grader:

  * waits at most `timeout` seconds between two test reports (plus `startup` seconds before the first);
    past that the test that was running is "timed out",
  * when the test process ends or times out, kills its process group, then every process that escaped the
    group (a double fork, setsid): the grader marks itself a child subreaper (Linux), so orphans of the
    graded code become its children, and it kills them and reaps them before it reads a single result;
  * stops reading the pipe once the test process is gone and the pipe holds nothing more, so a process
    holding the write end cannot make the grader wait.

Nothing here writes a file where the submission could reach it; the scratch folder is the grader's.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
PR_SET_CHILD_SUBREAPER = 36
MAX_LINE = 1 << 16  # bytes; a report line is under 4 KiB


@dataclass
class Run:
    results: dict = field(default_factory=dict)  # nodeid -> {"outcome", "text"}
    collected: dict = field(default_factory=dict)  # nodeid -> [task markers] (a --collect-only run)
    collect_errors: list = field(default_factory=list)
    started: str | None = None  # the test that was running when the process ended or timed out
    timed_out: bool = False
    finished: bool = False  # pytest reached the end of its session
    log: str = ""  # the tail of what the process printed (for a crash before pytest started)


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux); False where that is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_of(pid: int) -> list:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def kill_everything(process: subprocess.Popen, before: set) -> None:
    """Kill the test process's group, then every new child of ours (orphans reparented to us) and theirs."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
    for _ in range(50):  # each round kills what appeared since: a killed parent's children come to us next
        strays = [pid for pid in _children_of(os.getpid()) if pid not in before]
        if not strays:
            return
        stack = list(strays)
        while stack:
            pid = stack.pop()
            stack += _children_of(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        for pid in strays:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def site_folders(blocked_packages: list) -> list:
    """The site-packages folders on this interpreter's path, for the test process's dependencies."""
    import site

    folders = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    folders += [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]
    unique = []
    for folder in folders:
        if folder not in unique:
            unique.append(folder)
            if os.path.isdir(os.path.join(folder, "tinylora")):
                blocked_packages.append(os.path.join(folder, "tinylora"))  # an installed (non-editable) copy
    return unique


def clean_environment(home: str) -> dict:
    """The test process's whole environment: nothing from the grader's (no PYTHONPATH, no TINYLORA_*)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": home, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            "TINYLORA_KERNELS": "0", "TINYLORA_DEVICE": "cpu", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


def run_pytest(tree: str, tests: str, markers: str, scratch: str, blocked: list, *, deselect=(),
               timeout: float = 30.0, startup: float = 60.0, collect_only: bool = False,
               memory_bytes: int = 8 << 30, file_bytes: int = 64 << 20) -> Run:
    """Run the tests of `tests` (a path in `tree`) selected by the marker expression; see the module docstring."""
    blocked = list(blocked)
    sites = site_folders(blocked)
    script = os.path.join(scratch, "grader_child.py")
    shutil.copyfile(CHILD_SCRIPT, script)
    read_end, write_end = os.pipe()
    options = {"tree": tree, "tests": tests, "markers": markers, "sites": sites, "blocked": blocked,
               "deselect": list(deselect), "fd": write_end, "collect_only": collect_only,
               "memory_bytes": int(memory_bytes), "file_bytes": int(file_bytes)}
    token = secrets.token_hex(16)
    home = os.path.join(scratch, "home")
    os.makedirs(home, exist_ok=True)
    before = set(_children_of(os.getpid()))
    log_path = os.path.join(scratch, "child.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-I", "-S", script, json.dumps(options)], cwd=tree,
                                   stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                   pass_fds=(write_end,), start_new_session=True, env=clean_environment(home))
    os.close(write_end)
    run = Run()
    try:
        process.stdin.write((token + "\n").encode())
        process.stdin.close()
    except BrokenPipeError:
        pass
    try:
        _read_reports(process, read_end, token, run, timeout, startup)
    finally:
        kill_everything(process, before)
        _drain(read_end, token, run)
        os.close(read_end)
    with open(log_path, "rb") as f:
        run.log = f.read()[-3000:].decode(errors="replace")
    return run


def _read_reports(process, fd: int, token: str, run: Run, timeout: float, startup: float) -> None:
    """Read lines until the process ends; mark a time-out when no report comes within the limit."""
    buffer = b""
    deadline = time.monotonic() + startup + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            run.timed_out = True
            return
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 65536)
            if chunk:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                buffer = buffer[-MAX_LINE:]  # a line longer than any report is junk: keep memory bounded
                for line in lines:
                    if _accept(line, token, run):
                        deadline = time.monotonic() + timeout
                continue
            try:  # end of file: every writer is gone, the process is ending
                process.wait(timeout=max(left, 0.01))
            except subprocess.TimeoutExpired:
                run.timed_out = True
            return
        if process.poll() is not None:
            return


def _drain(fd: int, token: str, run: Run) -> None:
    """Read what is left in the pipe without waiting (everything that wrote to it is dead by now)."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) < 64 * MAX_LINE:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    for line in data.split(b"\n"):
        _accept(line, token, run)


def _accept(line: bytes, token: str, run: Run) -> bool:
    """Take one report line if it carries the token; True if it was a report (progress)."""
    try:
        message = json.loads(line)
    except ValueError:
        return False
    if not isinstance(message, dict) or message.get("token") != token:
        return False
    if "start" in message:
        run.started = str(message["start"])
    elif "test" in message:
        nodeid = str(message["test"])
        if nodeid in run.results:  # reported twice: someone wrote to the pipe besides the reporter
            run.results[nodeid] = {"outcome": "failed", "text": "reported twice: the result cannot be trusted"}
        else:
            run.results[nodeid] = {"outcome": str(message.get("outcome")), "text": str(message.get("text", ""))}
        run.started = None
    elif "collected" in message:
        run.collected = {str(k): list(v) for k, v in dict(message["collected"]).items()}
    elif "collect_error" in message:
        run.collect_errors.append(str(message["collect_error"]))
    elif "finished" in message:
        run.finished = True
    return True
