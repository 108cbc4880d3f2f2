"""How long each tutorial takes to run top to bottom: the "run time" column of tutorials/README.md.

    PYTHONPATH=$PWD nice -n 10 python -m benchmarks.tutorials_time          # every notebook, about 10 minutes
    PYTHONPATH=$PWD python -m benchmarks.tutorials_time --only 04 lab      # some of them

Each notebook runs in a fresh process, one after the other, the way CI runs it:

    python -m pytest --nbmake tutorials/NN_*.ipynb -q -p no:cacheprovider

and its time is the wall-clock seconds of that whole process (interpreter start, imports, the kernel's
start and every cell), with the exercises unanswered as shipped. A notebook that fails is recorded with
its exit status and no time, and the script exits non-zero. The machine's 1-minute load average is
read before and after each notebook: on a shared machine the times are only as quiet as that load.
Writes benchmarks/results/tutorials_time.json with the provenance of the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tinylora.analysis.provenance import provenance
from tinylora.io import write_json_atomic

REPO_ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = REPO_ROOT / "tutorials"
OUT = REPO_ROOT / "benchmarks" / "results" / "tutorials_time.json"


def notebooks(only=None) -> list[Path]:
    """The tutorials in reading order (01 ... 11, then the lab); `only` keeps those whose name starts so."""
    found = sorted(TUTORIALS.glob("[0-9][0-9]_*.ipynb")) + sorted(TUTORIALS.glob("lab_*.ipynb"))
    if only:
        found = [nb for nb in found if any(nb.name.startswith(prefix) for prefix in only)]
        if not found:
            raise SystemExit(f"tutorials_time: no notebook in tutorials/ starts with any of {only}")
    return found


def time_one(notebook: Path) -> dict:
    """Run one notebook through nbmake in a fresh process; its wall-clock seconds and the load around it."""
    cmd = [sys.executable, "-m", "pytest", "--nbmake", str(notebook.relative_to(REPO_ROOT)), "-q",
           "-p", "no:cacheprovider"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    load_before = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    row = {"notebook": notebook.name, "returncode": done.returncode,
           "seconds": round(seconds, 1) if done.returncode == 0 else None,
           "load_before": load_before, "load_after": round(os.getloadavg()[0], 2)}
    if done.returncode != 0:
        row["output_tail"] = (done.stdout + done.stderr)[-2000:]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="notebook name prefixes, e.g. 04 lab (default: all)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)

    record = {"benchmark": "tutorials_time", "provenance": provenance(), "rows": []}
    for notebook in notebooks(args.only):
        row = time_one(notebook)
        record["rows"].append(row)
        print(f"{row['notebook']}: {row['seconds']} s (load {row['load_before']} -> {row['load_after']})",
              flush=True)
    ok = [row for row in record["rows"] if row["seconds"] is not None]
    record["total_seconds"] = round(sum(row["seconds"] for row in ok), 1)
    loads = [row[k] for row in record["rows"] for k in ("load_before", "load_after")]
    record["load_min"], record["load_max"] = min(loads), max(loads)
    write_json_atomic(args.out, record)
    print(f"wrote {args.out}: {record['total_seconds']} s in all")
    return 0 if len(ok) == len(record["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
