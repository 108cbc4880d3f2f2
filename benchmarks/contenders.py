"""Building a contender: one implementation (tinylora, torch, hf) x one method (lora, full) x one rank.

Every contender object offers the same small interface, so memory.py and speed.py never ask which
library they are timing:

    batch(idx, targets)        host int64 arrays (B, T) -> the library's arrays on its device
    train_step(idx, targets)   forward, loss, backward, AdamW step, zero_grad; returns the loss (float)
    synchronize()              wait for queued GPU work (a no-op on the CPU)
    param_counts()             {"total": ..., "trainable": ...}
    device_memory_reset()      CUDA: reset the allocator's peak, return bytes allocated now
    device_memory_peak()       CUDA: bytes allocated at the peak since the reset
    tagged_memory()            tinylora's per-category accounting, or None for the peers

Every contender trains with AdamW (lr 1e-4, the library's defaults otherwise), dropout 0, float32, and
LoRA with alpha = r (scaling 1) on W_q and W_v (HF + PEFT: the fused c_attn, see peers/hf_peft.py).
"""

from __future__ import annotations


def build(impl: str, shape, method: str, rank: int, device: str, seed: int, threads: int):
    """Import the implementation (only now: each process loads one library) and build its contender."""
    if impl == "tinylora":
        from .tinylora_contender import Contender
    elif impl in ("torch", "hf"):
        import torch

        torch.set_num_threads(threads)
        if impl == "torch":
            from .peers.torch_gpt2 import Contender
        else:
            from .peers.hf_peft import Contender
    else:
        raise ValueError(f"unknown implementation '{impl}': choose tinylora, torch or hf")
    return Contender(shape, method, rank, device, seed)
