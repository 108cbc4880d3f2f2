"""tinylora as a benchmark contender: GPT (tinylora.model.gpt) with LoRA on q, v (tinylora.lora), trained by AdamW."""

from __future__ import annotations

import tinylora
from tinylora.engine.backend import get_device, memory, synchronize, tune_for_training


def build_model(shape, device: str, seed: int):
    """A tinylora GPT of exactly `shape` (dropout 0), initialised from `seed`, in a process tuned as train() tunes it
    (allocator and thread choice: tinylora/engine/backend/tuning.py)."""
    from tinylora.model.gpt import GPT, GPTConfig

    tune_for_training()
    tinylora.manual_seed(seed)
    config = GPTConfig(vocab_size=shape.vocab_size, block_size=shape.block_size, n_layer=shape.n_layer,
                       n_head=shape.n_head, n_embd=shape.n_embd, dropout=0.0)
    return GPT(config, device=device)


def make_optimizer(params, lr: float):
    try:
        from tinylora.optim import AdamW
    except ImportError as err:
        raise RuntimeError("the benchmarks train with AdamW, which tinylora.optim does not provide yet") from err
    return AdamW(params, lr=lr)


class Contender:
    """The benchmark interface (see benchmarks/contenders.py) for tinylora."""

    def __init__(self, shape, method: str, rank: int, device: str, seed: int, lr: float = 1e-4):
        from tinylora.lora import apply_lora

        self.device = get_device(device)
        self.model = build_model(shape, device, seed)
        if method == "lora":
            apply_lora(self.model, r=rank, alpha=rank, targets=("q", "v"), dropout=0.0)  # freezes all but A, B
        self.model.train()
        self.optimizer = make_optimizer(self.model.trainable_parameters(), lr)

    def batch(self, idx, targets):
        return tinylora.tensor(idx, device=self.device), tinylora.tensor(targets, device=self.device)

    def train_step(self, idx, targets) -> float:
        loss = self.model(idx, targets)[1]  # the logits are dropped at once: a training loop needs the loss only
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.item()

    def synchronize(self) -> None:
        synchronize(self.device)

    def param_counts(self) -> dict:
        return {"total": self.model.num_parameters(), "trainable": self.model.num_parameters(trainable_only=True)}

    def device_memory_reset(self) -> int:
        memory.cuda_reset_peak()
        return memory.cuda_allocated_bytes()

    def device_memory_peak(self) -> int:
        return memory.cuda_peak_bytes()

    def tagged_memory(self) -> dict:
        """tinylora's own accounting at its peak (bytes per category), and the part above the parameters."""
        stats = memory.stats()
        split = stats["peak_split"]
        return {"peak": stats["peak"], "peak_split": split, "peak_above_parameters": stats["peak"] - split["parameters"]}

    def reset_tagged_peak(self) -> None:
        memory.reset_peak()
