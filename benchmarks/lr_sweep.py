"""LoRA learning-rate sweep behind tinylora.train.LORA_LR (README, "Learning rates").

The demo's E2E-style task from base-mini, at the `tinylora finetune` defaults: 200 steps, batch 8,
cosine schedule, no warm-up, LoRA r = 4 on W_q and W_v, alpha = r. One line of JSON per learning
rate: validation loss before and after, and the seconds the run took.

    OPENBLAS_NUM_THREADS=1 python benchmarks/lr_sweep.py 2e-3 1e-2 3e-2 6e-2
"""

import argparse
import json
import time

from tinylora import manual_seed
from tinylora.cli.demo import _datasets
from tinylora.lora import apply_lora
from tinylora.model.load import load_model
from tinylora.train import TrainConfig, train


def main(rates) -> None:
    for lr in rates:
        manual_seed(0)  # every rate from the same start
        model, tokenizer = load_model("base-mini")
        train_set, val_set = _datasets(tokenizer, model.config.block_size)
        apply_lora(model, r=4, targets=("q", "v"))
        started = time.time()
        config = TrainConfig(max_steps=200, batch_size=8, lr=lr, eval_every=200, eval_batches=8, progress=False)
        result = train(model, train_set, val_set, config)
        print(json.dumps({"lr": lr, "before": result.val_loss_before, "after": result.val_loss_after,
                          "seconds": time.time() - started}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="LoRA r=4 on q,v at each learning rate, from base-mini")
    parser.add_argument("rates", nargs="*", type=float, default=[2e-3, 1e-2, 3e-2, 6e-2],
                        help="peak learning rates (default: 2e-3 1e-2 3e-2 6e-2)")
    main(parser.parse_args().rates)
