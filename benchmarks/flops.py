"""Floating-point operations of one training step, counted from the matrix products (2 FLOPs per multiply-add).

Forward, per block (N = B*T tokens, C = n_embd, T = sequence length):

    q, k, v, o projections      4 * 2 N C C
    MLP fc and proj             2 * 2 N C (4C)
    scores q k^T and P v        2 * 2 B T T C        (summed over heads: H * hs = C)
    LoRA on q, v (rank r)       2 * 2 N r (C + C)    (x A^T, then (x A^T) B^T)

plus the tied LM head, 2 N C V. Backward computes, for every product y = x W^T, dx = dy W (the same
FLOPs as forward) and, only when W is trained, dW = dy^T x (the same again). So

    full fine-tuning:  step = 3 x forward
    LoRA:              step = forward + dx everywhere (= forward) + dW of the adapters only

which is why a LoRA step costs about 2/3 of a full one (GPT-2 small, B=4, T=256: ~0.54 vs ~0.79 TFLOP).
Elementwise work (LayerNorm, GELU, softmax, Adam) is O(N C) or O(params) and not counted.
"""

from __future__ import annotations


def forward_flops(shape, method: str = "full", rank: int = 8) -> dict:
    """Matmul FLOPs of one forward pass, split into projections, attention, LoRA adapters and the LM head."""
    N, C, T, B, L, V = shape.tokens, shape.n_embd, shape.seq, shape.batch, shape.n_layer, shape.vocab_size
    parts = {
        "projections": L * (4 * 2 * N * C * C + 2 * 2 * N * C * 4 * C),
        "attention": L * 2 * 2 * B * T * T * C,
        "lora": L * 2 * 2 * N * rank * (C + C) if method == "lora" else 0,
        "lm_head": 2 * N * C * V,
    }
    parts["total"] = sum(parts.values())
    return parts


def step_flops(shape, method: str, rank: int = 8) -> int:
    """Matmul FLOPs of forward + backward (the optimizer's elementwise work is not counted)."""
    f = forward_flops(shape, method, rank)
    dx = f["projections"] + f["lm_head"] + 2 * f["attention"] + f["lora"]  # attention: dq, dk, dP, dv from 2 products
    if method == "full":
        dw = f["projections"] + f["lm_head"]  # every weight, the tied head included
    else:
        dw = f["lora"]  # dA and dB only
    return f["total"] + dx + dw


def inference_flops(shape) -> int:
    """Matmul FLOPs of one forward pass of the base model (no LoRA branch: merged or absent)."""
    return forward_flops(shape, "full")["total"]
