"""Trains a tiny GPT for the data-parallel tests: run alone, or as `mpiexec -n 2 python tests/mpi_train.py ...`.

    python tests/mpi_train.py OUT_DIR [--method lora|full] [--steps K] [--resume] [--die-at S]

Writes OUT_DIR/params.safetensors (rank 0 only): every trainable parameter after training, and
OUT_DIR/run/ (metrics and checkpoints). --die-at S: rank 1 exits abruptly before its all-reduce of step S;
--quit-at S: rank 1's Python exits with status 0 there instead (sys.exit(0): a rank that ends without finishing).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import tinylora
from tinylora.data import TextDataset
from tinylora.io import save_tensors
from tinylora.lora import apply_lora
from tinylora.train import distributed
from tinylora.train.loop import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--method", default="lora", choices=("lora", "full"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--die-at", type=int, default=None)
    parser.add_argument("--quit-at", type=int, default=None)
    args = parser.parse_args()

    tinylora.manual_seed(0)
    model = tinylora.GPT(tinylora.GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0))
    if args.method == "lora":
        apply_lora(model, r=4, targets=("q", "v"))
    tokens = np.random.default_rng(1).integers(0, 64, size=4000)
    data = TextDataset(tokens, block_size=16)
    dp = distributed.current()
    stop_at = args.die_at if args.die_at is not None else args.quit_at
    if stop_at is not None and dp.rank == 1:
        average = dp.average_gradients

        def average_or_die(params, n_kept):
            if dp.step >= 1 + 2 * (stop_at - 1):  # the start-step check, then two all-reduces per step
                if args.quit_at is not None:
                    sys.exit(0)  # a clean exit, status 0, in the middle of the run
                os._exit(3)  # no goodbye, as a crashed or killed process
            average(params, n_kept)

        dp.average_gradients = average_or_die
    config = TrainConfig(max_steps=args.steps, batch_size=8, lr=1e-2, eval_every=1000, progress=False, seed=0)
    train(model, data, None, config, run_dir=os.path.join(args.out, "run"), resume=args.resume)
    if dp.is_writer:
        trained = {n: p.numpy() if not p.requires_grad else p.detach().numpy()
                   for n, p in model.named_parameters() if p.requires_grad}
        save_tensors(os.path.join(args.out, "params.safetensors"), trained)


if __name__ == "__main__":
    main()
