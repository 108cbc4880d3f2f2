"""Optimizers, learning-rate schedules and gradient clipping.

    SGD, Adam, AdamW          keep state only for trainable parameters and update it in place
    LRScheduler, lr_at        linear warm-up, then cosine / linear / no decay
    clip_grad_norm_           scale all gradients so their global L2 norm is at most max_norm

A training step:

    loss.backward()
    clip_grad_norm_(model.trainable_parameters(), 1.0)
    opt.step(); opt.zero_grad(); sched.step()
"""

from tinylora.optim.adam import Adam, AdamW
from tinylora.optim.clip import clip_grad_norm_
from tinylora.optim.optimizer import Optimizer
from tinylora.optim.schedule import LRScheduler, lr_at
from tinylora.optim.sgd import SGD

__all__ = ["Adam", "AdamW", "LRScheduler", "Optimizer", "SGD", "clip_grad_norm_", "lr_at"]
