"""Adapter file size against a full checkpoint: the storage half of LoRA's claim.

    python -m benchmarks.adapter_size --config gpt2 --ranks 1,4,8,64

The paper (Section 4.2): for GPT-3 175B with r = 4 on W_q and W_v, a task needs a 35 MB adapter
instead of a 350 GB checkpoint. The same arithmetic, in the paper's notation, for L layers of width
d_model with |Theta| = 2 * L * d_model * r * 2 trainable parameters (A and B of q and v):

    GPT-3:  2 * 96 * 12288 * 4 * 2 = 18.9M parameters x 2 bytes (fp16) = 37.7 MB (36 MiB) vs 175e9 x 2 = 350 GB

This module writes real files with tinylora (save_adapter: A and B as safetensors plus a JSON config;
the full checkpoint: every parameter as one safetensors file) and reports their sizes, with the
formula's prediction beside each so the two can be compared.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from . import common

MODULE = "benchmarks.adapter_size"
GPT3 = {"n_layer": 96, "d_model": 12288, "params": 175e9}


def adapter_params(n_layer: int, d_model: int, rank: int, n_matrices: int = 2) -> int:
    """LoRA parameters on `n_matrices` square d_model x d_model weights per layer: each adds r (d + k)."""
    return n_layer * n_matrices * rank * (d_model + d_model)


def paper_claim(rank: int = 4, bytes_per_param: int = 2) -> dict:
    """The GPT-3 175B adapter and checkpoint sizes (fp16), from the formula."""
    lora = adapter_params(GPT3["n_layer"], GPT3["d_model"], rank)
    return {"rank": rank, "adapter_params": lora, "adapter_bytes": lora * bytes_per_param,
            "checkpoint_bytes": int(GPT3["params"] * bytes_per_param)}


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def measure(shape, ranks, device: str, seed: int) -> dict:
    """Bytes on disk of a full float32 checkpoint and of a q,v adapter per rank."""
    from tinylora.io import save_tensors
    from tinylora.lora import apply_lora, save_adapter

    from .tinylora_contender import build_model

    out = {"adapters": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(shape, device, seed)
        full = Path(tmp) / "model.safetensors"
        save_tensors(full, dict(model.state_dict()))
        out["checkpoint_bytes"] = full.stat().st_size
        out["checkpoint_params"] = model.num_parameters()
        for rank in ranks:
            model = build_model(shape, device, seed)
            apply_lora(model, r=rank, alpha=rank, targets=("q", "v"))
            folder = Path(tmp) / f"adapter_r{rank}"
            save_adapter(model, folder)
            params = model.num_parameters(trainable_only=True)
            out["adapters"][str(rank)] = {
                "bytes": directory_bytes(folder),
                "params": params,
                "formula_params": adapter_params(shape.n_layer, shape.n_embd, rank),
                "files": sorted(os.listdir(folder)),
            }
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser, contender=False)
    parser.add_argument("--ranks", default="1,4,8,64")
    args = common.parse_args(parser, argv)
    args.impl = "tinylora"

    from .shapes import get_shape

    shape = get_shape(args.config, args.batch, args.seq)
    ranks = [int(r) for r in args.ranks.split(",")]
    result = measure(shape, ranks, args.device, args.seed)
    result["paper_gpt3"] = paper_claim()
    record = common.make_record("adapter_size", args, MODULE, result, shape=shape.as_dict())
    path = common.write_result(record, args.out, f"adapter_size__{shape.name}__{args.device}")
    mib = 1024**2
    print(f"{shape.name}: full checkpoint {result['checkpoint_bytes'] / mib:.1f} MiB")
    for rank, row in result["adapters"].items():
        print(f"  r={rank}: adapter {row['bytes'] / 1024:.1f} KiB ({row['params']} parameters, "
              f"{result['checkpoint_bytes'] / row['bytes']:.0f}x smaller)")
    paper = result["paper_gpt3"]
    print(f"GPT-3 175B, r=4 (formula, fp16): adapter {paper['adapter_bytes'] / 1e6:.1f} MB vs checkpoint "
          f"{paper['checkpoint_bytes'] / 1e9:.0f} GB -> {path}")
    return record


if __name__ == "__main__":
    main()
