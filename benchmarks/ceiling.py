"""The machine's matmul ceiling: float32 GEMM GFLOP/s at the sizes a training step multiplies, same threads.

    python -m benchmarks.ceiling --config gpt2 --threads 2

A step of the model is mostly (N, C) @ (C, 4C)-sized products (N = B*T tokens), plus the LM head
(N, C) @ (C, V). Their speed in NumPy's BLAS (or CuPy's cuBLAS with --device cuda; torch.mm too when
PyTorch is installed, for the peers) bounds what any engine on top can reach: achieved GFLOP/s of a
training step divided by this ceiling is the fraction of the hardware an engine uses.
"""

from __future__ import annotations

import argparse
import time

from . import common

MODULE = "benchmarks.ceiling"


def gemm_sizes(shape) -> dict:
    """(m, k, n) of the products that dominate a step: the MLP, the attention projections, the LM head."""
    N, C, V = shape.tokens, shape.n_embd, shape.vocab_size
    return {"mlp fc (N,C)@(C,4C)": (N, C, 4 * C), "projection (N,C)@(C,C)": (N, C, C), "lm head (N,C)@(C,V)": (N, C, V)}


def time_gemm(matmul, a, b, sync, repeats: int) -> float:
    """Fastest of `repeats` products after one warm-up (a ceiling is the best the machine can do)."""
    matmul(a, b)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b)
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(library: str, sizes: dict, repeats: int, device: str) -> dict:
    """GFLOP/s of each product with `library` ('numpy', 'cupy' or 'torch')."""
    if library == "torch":
        import torch

        dev = torch.device(device)
        make = lambda m, n: torch.randn(m, n, device=dev, dtype=torch.float32)  # noqa: E731
        matmul = torch.mm
        sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)
    else:
        if library == "cupy":
            import cupy as xp

            sync = lambda: xp.cuda.get_current_stream().synchronize()  # noqa: E731
        else:
            import numpy as xp

            sync = lambda: None  # noqa: E731
        rng = xp.random.default_rng(0)
        make = lambda m, n: rng.standard_normal((m, n), dtype=xp.float32)  # noqa: E731
        matmul = xp.matmul
    out = {}
    for name, (m, k, n) in sizes.items():
        seconds = time_gemm(matmul, make(m, k), make(k, n), sync, repeats)
        out[name] = {"m": m, "k": k, "n": n, "seconds": seconds, "gflops_per_second": 2 * m * k * n / seconds / 1e9}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, contender=False)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch", action="store_true", help="also time torch.mm (the peers' GEMM)")
    args = common.parse_args(parser, argv)

    from .shapes import get_shape

    shape = get_shape(args.config, args.batch, args.seq)
    sizes = gemm_sizes(shape)
    libraries = {"numpy" if args.device == "cpu" else "cupy": None}
    if args.torch:
        import torch

        torch.set_num_threads(args.threads)
        libraries["torch"] = None
    result = {lib: measure(lib, sizes, args.repeats, args.device) for lib in libraries}
    # the ceiling quoted beside each engine: its best GEMM rate at these sizes
    result["ceiling_gflops_per_second"] = {lib: max(r["gflops_per_second"] for r in result[lib].values())
                                           for lib in libraries}
    record = common.make_record("ceiling", args, MODULE, result, shape=shape.as_dict())
    path = common.write_result(record, args.out, f"ceiling__{shape.name}__{args.device}")
    for lib, value in result["ceiling_gflops_per_second"].items():
        print(f"{lib} float32 GEMM ceiling ({args.threads} threads, {shape.name} sizes): {value:.1f} GFLOP/s -> {path}")
    return record


if __name__ == "__main__":
    main()
