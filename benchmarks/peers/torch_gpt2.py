"""A hand-written GPT-2 in PyTorch eager mode, with LoRA on q and v: the PyTorch peer of the benchmarks.

It has tinylora's architecture and parameter layout (separate q, k, v, o projections, pre-LN blocks,
tanh GELU, LM head tied to the token embedding) and computes attention with the same explicit ops
(q k^T scaled, causal mask, softmax, P v), so a comparison measures the engines, not two algorithms.
Fused kernels such as torch's scaled_dot_product_attention are deliberately not used.

LoRA (Hu et al. 2021) on a frozen W0 (d x k):  h = W0 x + (alpha / r) B A x,  A (r, k), B (d, r), B = 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus the trainable low-rank update (alpha/r) B A; A Kaiming-uniform, B zeros."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))  # (r, k)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))  # (d, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):  # x (..., k)
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.lora_A), self.lora_B)  # (..., d)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q, self.k, self.v, self.o = (nn.Linear(n_embd, n_embd) for _ in range(4))

    def forward(self, x, mask):  # x (B, T, C), mask (T, T) bool, True above the diagonal
        B, T, C = x.shape
        hs = C // self.n_head
        q = self.q(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        k = self.k(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        v = self.v(x).view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, H, T, T)
        att = scores.masked_fill(mask, float("-inf")).softmax(dim=-1)  # (B, H, T, T)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.o(y)


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.fc, self.proj = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):  # (B, T, C)
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(n_embd, eps=1e-5), CausalSelfAttention(n_embd, n_head)
        self.ln_2, self.mlp = nn.LayerNorm(n_embd, eps=1e-5), MLP(n_embd)

    def forward(self, x, mask):  # (B, T, C)
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2 with tied LM head: logits = ln_f(x) @ wte.weight.T. Dropout is left out (the benchmarks use 0)."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.register_buffer("mask", torch.ones(block_size, block_size, dtype=torch.bool).triu(1), persistent=False)
        for name, p in self.named_parameters():  # GPT-2 init: N(0, 0.02), residual projections scaled
            if name.endswith("weight") and p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("o.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):  # idx (B, T) int64
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        mask = self.mask[:T, :T]
        for block in self.blocks:
            x = block(x, mask)
        return F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V)


def apply_lora(model: GPT, r: int, alpha: float, targets=("q", "v")) -> GPT:
    """Wrap the chosen attention projections in LoRALinear and freeze everything but A and B."""
    model.requires_grad_(False)
    for block in model.blocks:
        for name in targets:
            setattr(block.attn, name, LoRALinear(getattr(block.attn, name), r, alpha))
    return model


class Contender:
    """The benchmark interface (see benchmarks/contenders.py) for the hand-written PyTorch GPT-2."""

    def __init__(self, shape, method: str, rank: int, device: str, seed: int, lr: float = 1e-4):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model = GPT(shape.vocab_size, shape.block_size, shape.n_layer, shape.n_head, shape.n_embd).to(self.device)
        if method == "lora":
            apply_lora(self.model, r=rank, alpha=rank)
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=lr)  # PyTorch defaults otherwise (foreach on)
        self.vocab_size = shape.vocab_size

    def batch(self, idx, targets):
        return torch.from_numpy(idx).to(self.device), torch.from_numpy(targets).to(self.device)

    def _loss(self, idx, targets):
        logits = self.model(idx)  # (B, T, V), dropped when this returns (only the graph keeps what it needs)
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
        """CUDA only: reset the allocator's peak; returns the bytes allocated now."""
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    def device_memory_peak(self) -> int:
        return torch.cuda.max_memory_allocated()

    def tagged_memory(self):
        return None  # only tinylora tags its arrays
