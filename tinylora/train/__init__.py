"""Training: the loop (loop.py), crash-safe checkpoints (checkpoint.py) and loss plots (plot.py)."""

from tinylora.train.loop import FULL_LR, LORA_EVERY_LINEAR_LR, LORA_LR, TrainConfig, eval_batches, evaluate, make_optimizer, train

__all__ = ["FULL_LR", "LORA_EVERY_LINEAR_LR", "LORA_LR", "TrainConfig", "eval_batches", "evaluate", "make_optimizer", "train"]
