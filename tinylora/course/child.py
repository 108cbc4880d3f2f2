"""The graded test process: run as a script (`python -I -S child.py ...`) by sandbox.py, never imported.

It runs pytest on the graded tree (the clean release the grader built, holding a student's bodies), and
sends one line per test to the grader through a pipe the grader opened. Before any graded code runs it:

  1. reads a one-time token from stdin (every line it sends carries it; a line without it is ignored),
  2. builds sys.path from nothing: the graded tree, its tests/ helpers, the standard library and the
     site-packages folders the grader named (none of which holds a tinylora package); `-S` means no .pth
     file runs, so an editable install of the reference is never on the path,
  3. installs an audit hook, which Python lets no code remove: opening any file under the folders the
     grader blocks (the reference package, its repository's history, the student's own folder) raises
     PermissionError, and so does starting a process (fork, exec, spawn, subprocess, os.system) or
     signalling another one,
  4. caps the address space and the size of any file it writes (resource limits, soft = hard).

A test passes only if its setup, call and teardown all passed: skipped, xfailed, xpassed and errored tests
are failures. What pytest prints goes nowhere the grader reads.
"""

import json
import os
import resource
import sys

PROCESS_EVENTS = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.startfile",
                  "subprocess.Popen", "pty.spawn")


def install_guard(blocked: list) -> None:
    """The audit hook: no file under `blocked` opens, no process starts, no other process is signalled."""
    roots = tuple(os.path.realpath(b).rstrip(os.sep) + os.sep for b in blocked)
    me = os.getpid()

    def guard(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)):
            path = os.fsdecode(args[0])
            if os.path.realpath(path).startswith(roots) or os.path.realpath(path) + os.sep in roots:
                raise PermissionError(f"graded code may not open {path}: it is outside the graded tree")
        elif event in PROCESS_EVENTS:
            raise PermissionError(f"graded code may not start a process ({event})")
        elif event in ("os.kill", "os.killpg") and args[0] not in (me, 0):
            raise PermissionError(f"graded code may not signal another process ({event} {args[0]})")

    sys.addaudithook(guard)


WATCHED = ("builtins", "math", "operator", "numpy", "numpy.testing", "pytest", "_pytest.runner", "_pytest.python",
           "_pytest.reports", "_pytest.outcomes", "_pytest.main", "gradcheck", "__main__")


def snapshot(names) -> dict:
    """{(module, attribute): id(value)} for the modules the tests and this reporter rely on."""
    found = {}
    for name in names:
        module = sys.modules.get(name)
        for key, value in (vars(module).items() if module is not None else ()):
            found[(name, key)] = id(value)
    for key, value in vars(Reporter).items():
        found[("Reporter", key)] = id(value)
    return found


class Reporter:
    """A pytest plugin: one JSON line per finished test, written straight to the grader's pipe.

    After each test it checks that nothing the tests and the reporter rely on (numpy's and pytest's
    functions, the builtins, the tests' own module, this class) was replaced: graded code that swaps
    `numpy.testing.assert_allclose` for a no-op fails that test and every later one."""

    def __init__(self, fd: int, token: str):
        self.fd, self.token, self.reports, self.before = fd, token, {}, None

    def pytest_collection_finish(self, session):
        modules = {item.module.__name__ for item in session.items if hasattr(item, "module")}
        self.watched = WATCHED + tuple(sorted(modules))
        for name in WATCHED:  # import what loads lazily (numpy.testing), so the snapshot holds the originals
            if name not in sys.modules:
                try:
                    __import__(name)
                except ImportError:
                    pass
        self.before = snapshot(self.watched)

    def tampered(self) -> str:
        if self.before is None:
            return ""
        now = snapshot(self.watched)
        changed = [f"{m}.{k}" for (m, k), ident in self.before.items() if now.get((m, k)) != ident]
        return f"graded code replaced {', '.join(sorted(changed)[:5])}" if changed else ""

    def send(self, message: dict) -> None:
        line = json.dumps(dict(message, token=self.token)) + "\n"  # one write per line (texts are cut short)
        os.write(self.fd, line.encode())

    def pytest_collectreport(self, report):
        if report.failed:
            self.send({"collect_error": str(report.longreprtext)[-1500:]})

    def pytest_runtest_logstart(self, nodeid, location):
        self.send({"start": nodeid})

    def pytest_runtest_logreport(self, report):
        self.reports.setdefault(report.nodeid, []).append(report)
        if report.when != "teardown":
            return
        phases = self.reports.pop(report.nodeid)
        ok = all(r.passed and not hasattr(r, "wasxfail") for r in phases) and any(r.when == "call" for r in phases)
        failed = next((r for r in phases if not r.passed or hasattr(r, "wasxfail")), None)
        outcome = "passed" if ok else ("skipped" if failed is not None and failed.skipped else "failed")
        text = "" if ok or failed is None else str(failed.longreprtext)
        if failed is not None and hasattr(failed, "wasxfail"):
            outcome = "xfailed"
        tampering = self.tampered()
        if tampering:
            outcome, text = "failed", f"E   {tampering}"
        self.send({"test": report.nodeid, "outcome": outcome, "text": text[-1500:]})

    def pytest_sessionfinish(self, session, exitstatus):
        self.send({"finished": int(exitstatus)})


def main(argv: list) -> int:
    options = json.loads(argv[1])
    token = sys.stdin.readline().strip()
    sys.stdin.close()
    sys.stdin = open(os.devnull)
    tree = options["tree"]
    sys.path[:0] = [tree, os.path.join(tree, "tests")]
    sys.path += options["sites"]
    install_guard(options["blocked"])
    limit = options["memory_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_FSIZE, (options["file_bytes"], options["file_bytes"]))
    os.chdir(tree)

    import pytest

    args = [options["tests"], "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", tree,
            "-c", os.path.join(tree, "pyproject.toml"), "-m", options["markers"]]
    args += ["--collect-only"] if options.get("collect_only") else []
    for nodeid in options["deselect"]:
        args += ["--deselect", nodeid]
    reporter = Reporter(options["fd"], token)
    if options.get("collect_only"):
        class Collector:
            def pytest_collection_finish(self, session):
                tasks = {item.nodeid: [m.name for m in item.iter_markers() if "_task" in m.name]
                         for item in session.items}
                reporter.send({"collected": tasks})
        return pytest.main(args, plugins=[reporter, Collector()])
    return pytest.main(args, plugins=[reporter])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
