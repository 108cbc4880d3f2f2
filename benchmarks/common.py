"""What every benchmark entry point shares: thread pinning, the common flags, the machine record, result files.

Order matters. BLAS libraries read OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS once, when
they are loaded, so an entry point parses its flags with `parse_args` (which pins the threads) before it
imports NumPy, PyTorch or tinylora. This module therefore imports only the standard library at the top.

A result file is one JSON object:

    {"benchmark": "memory", "contender": {...}, "shape": {...}, "device": "cpu", "threads": 2,
     "command": "python -m benchmarks.memory --config gpt2 ...", "machine": {...}, "versions": {...},
     "provenance": {"git": {"commit", "dirty"}, "machine", "command", "versions", "time"},
     "result": {...benchmark-specific numbers...}}

"provenance" (tinylora.analysis.provenance) is the record every result file written since it was added
carries: a file without it predates it, and its commit is unknown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from importlib import metadata
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# glibc reads these at start-up: with them, freed memory stays in the heap and is reused (no fresh pages per
# step). run_all --allocator keep sets them for every contender alike; see tinylora/engine/backend/allocator.py.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def allocator_setting() -> str:
    """'keep' when this process runs with KEEP_FREED_MEMORY, else 'default'; for tinylora, what it set for itself
    (tinylora.engine.backend.allocator, switched on by tune_for_training: 'keep' unless TINYLORA_ALLOCATOR=system)."""
    if all(os.environ.get(k) == v for k, v in KEEP_FREED_MEMORY.items()):
        return "keep"
    allocator = sys.modules.get("tinylora.engine.backend.allocator")
    return f"tinylora-{allocator.setting}" if allocator is not None else "default"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
IMPLS = ("tinylora", "torch", "hf")  # tinylora, hand-written PyTorch GPT-2, Hugging Face transformers + PEFT
METHODS = ("lora", "full")
GIB = 1024**3


def pin_threads(n: int) -> bool:
    """Set every BLAS/OpenMP thread variable to n. Returns False if NumPy or torch was already imported
    (then the variables come too late for that process, and the result says so)."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)
    return not ({"numpy", "torch"} & set(sys.modules))


def add_common_args(parser: argparse.ArgumentParser, *, contender: bool = True) -> None:
    """Flags shared by the entry points (--config, --impl, --method, --rank, --device, --threads, ...)."""
    parser.add_argument("--config", default="tiny", help="model shape: see benchmarks/shapes.py (default tiny)")
    parser.add_argument("--batch", type=int, default=None, help="override the shape's batch size")
    parser.add_argument("--seq", type=int, default=None, help="override the shape's sequence length")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="BLAS / torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="result JSON path (default: benchmarks/results/<name>.json)")
    if contender:
        parser.add_argument("--impl", default="tinylora", choices=IMPLS)
        parser.add_argument("--method", default="lora", choices=METHODS)
        parser.add_argument("--rank", type=int, default=8, help="LoRA rank r (alpha = r, so scaling alpha/r = 1)")


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the flags, then pin the thread count before anything heavy is imported."""
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if getattr(args, "rank", 1) < 1:
        parser.error(f"--rank must be at least 1, got {args.rank}")
    args.threads_pinned_before_import = pin_threads(args.threads)
    return args


def command_line(module: str, argv=None) -> str:
    """The exact command that reproduces this run."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", "-m", module, *args])


def contender_label(impl: str, method: str, rank: int | None) -> str:
    """A short name such as 'tinylora-lora-r8' or 'torch-full'."""
    return f"{impl}-{method}-r{rank}" if method == "lora" else f"{impl}-{method}"


# ------------------------------------------------------------------ the machine
def _cpuinfo() -> dict:
    """CPU model name and physical core count from /proc/cpuinfo (Linux); fall back to platform."""
    model, cores = platform.processor() or platform.machine(), set()
    try:
        physical = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                core = value
                cores.add((physical, core))
    except OSError:
        pass
    return {"cpu_model": model, "physical_cores": len(cores) or None}


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / GIB, 1)
    except OSError:
        pass
    return None


def machine_info(device: str = "cpu") -> dict:
    """CPU model, cores, memory, load average (a busy machine shows here), and the GPU if one is used."""
    info = _cpuinfo()
    info.update(
        logical_cpus=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        mem_total_gib=_mem_total_gib(),
        os=platform.platform(),
        load_average_1min=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        gpu=None,
    )
    if device == "cuda":
        info["gpu"] = _gpu_name()
    return info


def _gpu_name() -> str | None:
    if "cupy" in sys.modules:
        props = sys.modules["cupy"].cuda.runtime.getDeviceProperties(0)
        return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        return sys.modules["torch"].cuda.get_device_name(0)
    return None


def library_versions() -> dict:
    """Installed versions (read from package metadata, so nothing is imported just to ask)."""
    versions = {"python": platform.python_version()}
    for name in ("numpy", "tinylora", "torch", "transformers", "peft", "cupy-cuda12x", "cupy-cuda13x"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "tinylora":  # run from a checkout (PYTHONPATH) rather than installed
                versions[name] = "source checkout"
    return versions


def blas_info() -> str:
    """NumPy's BLAS library (name and version), the backend every tinylora matmul on the CPU runs on."""
    import numpy

    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older NumPy: no dict mode
        return "unknown"


def make_record(benchmark: str, args: argparse.Namespace, module: str, result: dict, started: dict | None = None,
                **extra) -> dict:
    """The full JSON record of one run. `started`: the provenance taken when a long run began (its git state
    is the code that ran, even if the checkout moved on meanwhile); default: taken now."""
    record = {
        "benchmark": benchmark,
        "device": args.device,
        "threads": args.threads,
        "threads_pinned_before_import": args.threads_pinned_before_import,
        "allocator": allocator_setting(),
        "command": ("MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 " if allocator_setting() == "keep" else "")
        + command_line(module),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(args.device),
        "versions": library_versions(),
        "backend": backend_name(args),
    }
    from tinylora.analysis.provenance import provenance  # imports tinylora: only after parse_args pinned threads

    record["provenance"] = started or provenance(record["command"], args.device)
    record.update(extra)
    record["result"] = result
    return record


def backend_name(args: argparse.Namespace) -> str:
    impl = getattr(args, "impl", "tinylora")
    if args.device == "cuda":
        return "cupy (CUDA)" if impl == "tinylora" else "torch CUDA"
    return f"numpy + {blas_info()}" if impl == "tinylora" else "torch CPU (eager)"


def write_result(record: dict, out: str | None, default_name: str) -> Path:
    """Write `record` as JSON to `out` (or benchmarks/results/<default_name>.json) and return the path."""
    path = Path(out) if out else RESULTS_DIR / f"{default_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def median(values) -> float:
    values = sorted(values)
    if not values:
        raise ValueError("median of no values")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])
