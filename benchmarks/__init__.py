"""Benchmarks for tinylora: memory, speed, inference and adapter size, against PyTorch and HF+PEFT peers.

Every entry point is a module run with `python -m benchmarks.<name>` (see benchmarks/README.md), and
`python -m benchmarks.run_all --suite NAME` runs every contender in a fresh process and writes
benchmarks/results/*.json, benchmarks/results/RESULTS.md and PNG plots.

Importing this package imports nothing heavy: thread counts must be pinned (benchmarks.common.pin_threads)
before NumPy or PyTorch is first imported.
"""
