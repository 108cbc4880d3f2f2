"""Hugging Face transformers GPT-2 with PEFT LoRA: the peer most users would reach for.

GPT-2 in transformers fuses W_q, W_k, W_v into one Conv1D, `c_attn` (weight (C, 3C), HF's (in, out)
layout), so PEFT's LoRA on target_modules=["c_attn"] adapts q, k and v together with one A (r, C) and one
B (3C, r). That is r (C + 3C) = 4 r C parameters per layer, the same count as tinylora's separate q and v
adapters (2 r (C + C)), but the update also touches k. Eager attention (the same explicit math as the other
contenders) and dropout 0 everywhere.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def build_model(shape, attn_implementation: str = "eager") -> GPT2LMHeadModel:
    """A randomly initialised GPT2LMHeadModel of `shape`, float32, dropout 0, tied LM head."""
    config = GPT2Config(
        vocab_size=shape.vocab_size, n_positions=shape.block_size, n_embd=shape.n_embd, n_layer=shape.n_layer,
        n_head=shape.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        activation_function="gelu_new", tie_word_embeddings=True,
        bos_token_id=shape.vocab_size - 1, eos_token_id=shape.vocab_size - 1,
    )
    return GPT2LMHeadModel._from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)


class Contender:
    """The benchmark interface (see benchmarks/contenders.py) for HF GPT-2 + PEFT."""

    def __init__(self, shape, method: str, rank: int, device: str, seed: int, lr: float = 1e-4):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        model = build_model(shape).to(self.device)
        if method == "lora":
            import peft

            config = peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=["c_attn"], lora_dropout=0.0,
                                     fan_in_fan_out=True, bias="none")
            model = peft.get_peft_model(model, config)  # freezes everything but the adapters
        self.model = model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=lr)
        self.vocab_size = shape.vocab_size

    def batch(self, idx, targets):
        return torch.from_numpy(idx).to(self.device), torch.from_numpy(targets).to(self.device)

    def _loss(self, idx, targets):
        logits = self.model(input_ids=idx, use_cache=False).logits  # (B, T, V); loss computed as for the others
        return F.cross_entropy(logits.view(-1, self.vocab_size), targets.view(-1))

    def train_step(self, idx, targets) -> float:
        loss = self._loss(idx, targets)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def param_counts(self) -> dict:
        params = list(self.model.parameters())
        return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}

    def device_memory_reset(self) -> int:
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    def device_memory_peak(self) -> int:
        return torch.cuda.max_memory_allocated()

    def tagged_memory(self):
        return None
