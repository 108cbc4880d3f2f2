"""Put reference bodies back into a course release: what a perfect student submits (instructors and CI only).

    solve("out/A2")               every task of the release's assignment
    solve("out/A2", tasks={3})    task 3 alone (with `needs`: what "this task and its prerequisites" means)

This file is instructor-only: `release` leaves it out of every student copy, so `tinylora course solve`
does not exist there; and it refuses to run from a package that is itself a release.
"""

from __future__ import annotations

import os

from tinylora.course.release import RELEASE_FILE, read_release, read_text, repository_root, write_text
from tinylora.course.stubs import get_body, replace_body


def solve(folder: str, tasks=None, repo: str | None = None) -> list:
    """Put the reference bodies of `tasks` (default: all) of the release's assignment back; return them."""
    repo = repo or repository_root()
    if os.path.exists(os.path.join(repo, RELEASE_FILE)):
        raise RuntimeError(f"tinylora course solve: {repo} is a course release, not the reference; "
                           "solve runs only from the instructor's clone")
    record = read_release(folder)
    restored = []
    for entry in record["stubbed"]:
        if entry.get("assignment", record["assignment"]) != record["assignment"]:
            continue  # a later assignment's function: not this release's to solve
        if tasks is not None and entry["task"] not in tasks:
            continue
        body = get_body(read_text(os.path.join(repo, entry["file"])), entry["function"])
        target = os.path.join(folder, entry["file"])
        write_text(target, replace_body(read_text(target), entry["function"], body))
        restored.append(entry)
    return restored
