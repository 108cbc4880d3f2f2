"""Training: the loop (loop.py), crash-safe checkpoints (checkpoint.py) and loss plots (plot.py)."""

from tinylora.train.loop import TrainConfig, eval_batches, evaluate, train

__all__ = ["TrainConfig", "eval_batches", "evaluate", "train"]
