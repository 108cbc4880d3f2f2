"""The analytic memory model: every tensor a training step must keep, and the smallest possible peak.

Notation: B batch, T sequence length, N = B*T tokens, C = n_embd, H = heads, L = layers, V = vocab,
r = LoRA rank; LoRA adapts W_q and W_v (the paper's setting), everything else (W0, biases, LayerNorms,
embeddings) is frozen. Sizes are float32 (4 bytes) unless noted; "bool" is 1 byte, "int64" 8 bytes.

Saved for backward, per transformer block. The rule is the engine's: an op keeps an input only if the
gradient of some *other* input that needs one is computed from it (dW = dy^T x needs x; dx = dy W needs
only W, a parameter that is alive anyway). Nothing is recomputed (no activation checkpointing).

| tensor                         | shape          | full FT | LoRA q,v | needed by                                     |
|--------------------------------|----------------|:-------:|:--------:|-----------------------------------------------|
| ln_1 normalised input x^, 1/s  | (N, C), (N, 1) |   yes   | yes (1)  | dx of LayerNorm                               |
| ln_1 output h1                 | (N, C)         |   yes   |   yes    | dW_q, dW_k, dW_v (full); dA_q, dA_v (LoRA)    |
| h1 A^T of the q and v adapters | (N, r) x 2     |    -    |   yes    | dB = dy^T (h1 A^T)                            |
| q (heads split)                | (N, C)         |   yes   | yes (1)  | dk = dS^T q                                   |
| k                              | (N, C)         |   yes   |   yes    | dq = dS k                                     |
| v                              | (N, C)         |   yes   |   yes    | dP = dy v^T                                   |
| attention probabilities P      | (B, H, T, T)   |   yes   |   yes    | softmax backward, and dv = P^T dy             |
| attention output (heads merged)| (N, C)         |   yes   |    -     | dW_o                                          |
| ln_2 x^, 1/s                   | (N, C), (N, 1) |   yes   |   yes    | dx of LayerNorm                               |
| ln_2 output h2                 | (N, C)         |   yes   |    -     | dW_fc                                         |
| GELU input u                   | (N, 4C)        |   yes   |   yes    | GELU is nonlinear: its dx needs u             |
| GELU output                    | (N, 4C)        |   yes   |    -     | dW_proj                                       |
| per block                      |                | 14NC + BHT^2 | 10NC + 2Nr + BHT^2 |                      |

(1) Not in block 0 under LoRA: its input comes from the frozen embeddings and needs no gradient, so ln_1
    keeps nothing and, since k needs no gradient there, neither does q: block 0 saves 8NC + 2Nr + BHT^2.

Outside the blocks:

| tensor                               | shape            | full FT | LoRA | needed by                        |
|--------------------------------------|------------------|:-------:|:----:|----------------------------------|
| token ids, position ids              | (N,), (T,) int64 |   yes   |  -   | dW of the embeddings (wte, wpe)  |
| ln_f x^, 1/s                         | (N, C), (N, 1)   |   yes   | yes  | dx of LayerNorm                  |
| ln_f output                          | (N, C)           |   yes   |  -   | dW of the tied LM head (wte)     |
| cross-entropy probabilities          | (N, V)           |   yes   | yes  | dlogits = softmax - onehot       |
| targets, kept-target mask            | (N,) int64, bool |   yes   | yes  | dlogits                          |
| logits (transient, not saved)        | (N, V)           |   yes   | yes  | returned to the caller, so they coexist with the probabilities |

Besides activations a step holds gradients (one per trainable parameter) and AdamW's two moments m and v
(two per trainable parameter). Full FT trains all P parameters; LoRA on q, v trains 2 L r (C + C).

The peak is taken over the moments where memory is highest, at op boundaries (per-op scratch space is
not counted, so this is a lower bound every engine pays at least):

    forward end       saved + logits                              (the probabilities are in "saved")
    head backward     saved + dx (N, C) + dW of the tied head     (dlogits overwrite the probabilities)
    block i backward  saved by blocks 0..i + gradients of the layers above + dx (N, C)
    backward end      every gradient
    each of them      + AdamW state (it persists from the first optimizer step on)

The headline metric measures memory above the loaded model, so weights are reported but not added.
Run `python -m benchmarks.analytic --config gpt2 --rank 8` to print the model for one shape.

Training-efficiency variants (`memory_model(shape, method, rank, checkpoint=..., chunk=...)`):

- "lora-fa" (A frozen): no block keeps ln_1's output h1 (it fed only dA_q, dA_v); the trainable, gradient
  and AdamW counts are B's alone, L·2·C·r.
- "qlora": LoRA's activations (the NF4 matmul keeps its 4-bit weight, not its input); weights are
  4-bit codes plus double-quantized constants for the six block Linears (ceil(n/2) + ceil(n/64) +
  4·ceil(n/64/256) + 4 bytes for n values) and float32 for embeddings, biases, LayerNorms and A, B.
- checkpoint=True: each block keeps only its input (N, C) until backward; block i's backward first
  recomputes it, so that moment holds the inputs of blocks 0..i plus block i's own saved tensors.
- chunk=K: the head and the loss keep ln_f's output h (N, C) instead of the probabilities (N, V); the
  transient logits are (K, V), not (N, V).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

F32, INT64, BOOL = 4, 8, 1


@dataclass(frozen=True)
class Row:
    """One tensor kept alive, with its size in bytes."""

    name: str
    shape: tuple
    nbytes: int


def _row(name, shape, itemsize=F32) -> Row:
    n = 1
    for s in shape:
        n *= s
    return Row(name, tuple(shape), n * itemsize)


METHODS = ("full", "lora", "lora-fa", "qlora")


def block_saved(shape, method: str, rank: int = 8, first_block: bool = False) -> list[Row]:
    """What one transformer block must save for backward (the first table of the module docstring)."""
    N, C, H, T, B = shape.tokens, shape.n_embd, shape.n_head, shape.seq, shape.batch
    full = method == "full"
    input_needs_grad = full or not first_block  # under LoRA, block 0's input comes from frozen embeddings
    rows = []
    if input_needs_grad:
        rows += [_row("ln_1 x^", (N, C)), _row("ln_1 1/s", (N, 1))]
    if method != "lora-fa":  # LoRA-FA: A is frozen, so nothing needs h1 (dB needs h1 A^T only)
        rows.append(_row("ln_1 output h1", (N, C)))
    if not full:
        rows += [_row("q adapter h1 A^T", (N, rank)), _row("v adapter h1 A^T", (N, rank))]
    if input_needs_grad:  # dk = dS^T q is needed only when k needs a gradient
        rows.append(_row("q", (N, C)))
    rows += [_row("k", (N, C)), _row("v", (N, C)), _row("attention P", (B, H, T, T))]
    if full:
        rows.append(_row("attention output", (N, C)))
    rows += [_row("ln_2 x^", (N, C)), _row("ln_2 1/s", (N, 1))]
    if full:
        rows.append(_row("ln_2 output h2", (N, C)))
    rows.append(_row("GELU input", (N, 4 * C)))
    if full:
        rows.append(_row("GELU output", (N, 4 * C)))
    return rows


def head_saved(shape, method: str, chunk: int | None = None) -> list[Row]:
    """What the embedding, final LayerNorm, tied LM head and cross-entropy save (above the blocks)."""
    N, C, V = shape.tokens, shape.n_embd, shape.vocab_size
    full = method == "full"
    rows = [_row("token ids", (N,), INT64), _row("position ids", (shape.seq,), INT64)] if full else []
    # (no causal mask: a masked position's softmax output is 0, so backward needs only the output)
    rows += [_row("ln_f x^", (N, C)), _row("ln_f 1/s", (N, 1))]
    if full or chunk:  # full FT: for dW of the head; chunked loss: to recompute the logits in backward
        rows.append(_row("ln_f output", (N, C)))
    if not chunk:
        rows.append(_row("probabilities", (N, V)))
    rows += [_row("targets", (N,), INT64), _row("kept-target mask", (N,), BOOL)]
    return rows


def nf4_bytes(n: int, block: int = 64, dq_block: int = 256) -> int:
    """Bytes of n weights in NF4 with double quantization: codes, int8 constants, group scales, the mean."""
    blocks = -(-n // block)
    return -(-n // 2) + blocks + 4 * -(-blocks // dq_block) + 4


def weight_bytes(shape, method: str, rank: int = 8) -> int:
    """Bytes of every weight the model stores (the block Linears in NF4 + DQ under QLoRA, float32 otherwise)."""
    counts = parameter_counts(shape, method, rank)
    if method != "qlora":
        return counts["total"] * F32
    C, L = shape.n_embd, shape.n_layer
    matrices = [C * C] * 4 + [4 * C * C] * 2  # q, k, v, o, fc, proj
    quantized = L * sum(nf4_bytes(n) for n in matrices)
    return quantized + (counts["total"] - L * sum(matrices)) * F32


def parameter_counts(shape, method: str, rank: int = 8) -> dict:
    """Total parameters (tied LM head counted once) and trainable ones; per-block and head split."""
    C, V, L = shape.n_embd, shape.vocab_size, shape.n_layer
    per_block = 12 * C * C + 13 * C  # q, k, v, o: 4(C^2 + C); fc: 4C^2 + 4C; proj: 4C^2 + C; two LayerNorms: 4C
    head = V * C + shape.block_size * C + 2 * C  # wte (tied LM head), wpe, ln_f
    lora_per_block = 2 * rank * (C + C)  # q and v: r (d + k) each, d = k = C
    total = L * per_block + head + (L * lora_per_block if method != "full" else 0)
    if method == "full":
        return {"total": total, "trainable": total, "trainable_per_block": per_block, "trainable_head": head}
    trained = 2 * rank * C if method == "lora-fa" else lora_per_block  # LoRA-FA: B (d x r) of q and v only
    return {"total": total, "trainable": L * trained, "trainable_per_block": trained, "trainable_head": 0}


def memory_model(shape, method: str, rank: int = 8, checkpoint: bool = False, chunk: int | None = None) -> dict:
    """The analytic minimum of one training step (see the module docstring), all sizes in bytes."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    L, N, C, V = shape.n_layer, shape.tokens, shape.n_embd, shape.vocab_size
    blocks = [sum(r.nbytes for r in block_saved(shape, method, rank, first_block=(i == 0))) for i in range(L)]
    kept = [N * C * F32] * L if checkpoint else blocks  # what each block keeps between forward and backward
    head_rows = head_saved(shape, method, chunk)
    head = sum(r.nbytes for r in head_rows)
    # what stays saved below the blocks once the head's backward has run: the token ids
    bottom = sum(r.nbytes for r in head_rows if r.name in ("token ids", "position ids"))
    counts = parameter_counts(shape, method, rank)
    grads_head = counts["trainable_head"] * F32
    grads_block = counts["trainable_per_block"] * F32
    optimizer = 2 * counts["trainable"] * F32  # AdamW m and v
    saved = sum(kept) + head
    logits = (min(chunk, N) if chunk else N) * V * F32
    dx = N * C * F32

    moments = {
        "forward end": saved + logits,
        "head backward": saved + dx + grads_head + (logits if chunk else 0),  # chunked: one (K, V) dz at a time
    }
    for i in reversed(range(L)):
        recomputed = blocks[i] if checkpoint else 0  # block i's own saved tensors, rebuilt for its backward
        moments[f"block {i} backward"] = (bottom + sum(kept[: i + 1]) + recomputed + grads_head
                                          + (L - 1 - i) * grads_block + dx)
    moments["backward end"] = counts["trainable"] * F32
    at, activity = max(moments.items(), key=lambda kv: kv[1])
    return {
        "method": method,
        "rank": rank if method != "full" else None,
        "checkpoint": checkpoint,
        "chunk": chunk,
        "weights": weight_bytes(shape, method, rank),
        "gradients": counts["trainable"] * F32,
        "optimizer": optimizer,
        "saved_activations": saved,
        "saved_per_block": kept,
        "saved_head": head,
        "logits_transient": logits,
        "peak_above_weights": optimizer + activity,
        "peak_at": at,
        "parameters": counts,
    }


def format_model(shape, method: str, rank: int = 8) -> str:
    """A readable listing of the model for one shape (what `python -m benchmarks.analytic` prints)."""
    m = memory_model(shape, method, rank)
    mib = 1024**2
    label = f"LoRA q,v r={rank}" if method == "lora" else "full fine-tuning"
    lines = [f"{shape.name} (B={shape.batch}, T={shape.seq}), {label}"]
    for title, rows in (("block 1..L-1", block_saved(shape, method, rank)),
                        ("block 0", block_saved(shape, method, rank, first_block=True)),
                        ("outside the blocks", head_saved(shape, method))):
        lines.append(f"  saved by {title}:")
        lines += [f"    {r.name:<22} {str(r.shape):<18} {r.nbytes / mib:10.2f} MiB" for r in rows]
    for key in ("weights", "gradients", "optimizer", "saved_activations", "logits_transient", "peak_above_weights"):
        lines.append(f"  {key:<22} {m[key] / mib:10.1f} MiB")
    lines.append(f"  peak at: {m['peak_at']}")
    return "\n".join(lines)


def main(argv=None) -> None:
    from .shapes import get_shape

    parser = argparse.ArgumentParser(description="Print the analytic memory model for one shape.")
    parser.add_argument("--config", default="gpt2")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args(argv)
    shape = get_shape(args.config, args.batch, args.seq)
    print(format_model(shape, "full"))
    print()
    print(format_model(shape, "lora", args.rank))


if __name__ == "__main__":
    main()
