"""Two memory levers beside LoRA, both off by default: activation checkpointing and a chunked LM-head loss.

Activation (gradient) checkpointing, per transformer block (Chen et al. 2016, "Training Deep Nets with
Sublinear Memory Cost"). A block's forward runs without building a graph; its node keeps only the block's
input x (B, T, C). Backward runs the block's forward again, this time with a graph, and backpropagates
through it at once:

    forward:   y = block(x)                 keep x only                      (instead of ~14 (N, C) arrays)
    backward:  y' = block(x) (recomputed);  backward(y', ∂L/∂y)  ->  ∂L/∂x, and ∂L/∂θ into θ.grad

Saved memory drops from L blocks' activations to L block inputs plus one block's activations at a time,
for one extra forward per block. Dropout inside the block is replayed: the random generator's state at the
first forward is restored for the recomputation, so both draw the same masks (CPU; on the GPU a block with
dropout > 0 is refused, because CuPy's generator state is not saved here).

Chunked LM head + cross-entropy. With the head tied to the embedding, logits z = h W_e^T are (N, V); at
GPT-2 small (N = 1024, V = 50257) that is 196 MiB, kept again as softmax probabilities for backward. The
fused op below goes through the N positions in chunks of `chunk_size` rows and never holds more than
(chunk_size, V) of them:

    loss = (1/M) Σ_kept [ logsumexp(z_n) - z_n[t_n] ],   z_n = h_n W_e^T      (M: positions not ignored)
    ∂L/∂z_n = (softmax(z_n) - onehot(t_n)) / M     recomputed per chunk in backward, then
    ∂L/∂h_n = ∂L/∂z_n W_e,   ∂L/∂W_e = Σ_n ∂L/∂z_n^T h_n

It keeps h (N, C) instead of the probabilities (N, V); the head's matmul runs twice (forward, backward).
"""

from __future__ import annotations

from tinylora.engine import autograd
from tinylora.engine import random as tl_random
from tinylora.engine.autograd import Function

DEFAULT_CHUNK = 256  # rows of logits alive at a time: 256 x 50257 float32 = 49 MiB at GPT-2's vocabulary


# ---------------------------------------------------------------- activation checkpointing
class Checkpoint(Function):
    # forward:  y = fn(x), run without a graph; keep x (and the random state) only
    # backward: recompute y = fn(x) with a graph and backpropagate ∂L/∂y through it:
    #           ∂L/∂x is returned, ∂L/∂θ goes into θ.grad
    def forward(self, x, *parameters, fn, device):
        from tinylora.engine.tensor import Tensor

        self.fn, self.device = fn, device
        self.rng_state = tl_random.get_rng_state()  # so recomputed dropout masks equal these
        with autograd.no_grad():
            y = fn(Tensor(x, device=device)).data
        self.save_for_backward(x)
        return y

    def backward(self, grad):
        from tinylora.engine.tensor import Tensor

        if not autograd.is_grad_enabled():
            raise RuntimeError("checkpointed block: backward() ran under no_grad, so the block cannot be recomputed")
        (x,) = self.saved
        x_in = Tensor(x, device=self.device, requires_grad=self.needs_input_grad[0])
        now = tl_random.get_rng_state()
        tl_random.set_rng_state(self.rng_state)
        try:
            y = self.fn(x_in)  # the same forward, with a graph this time
        finally:
            tl_random.set_rng_state(now)
        y.backward(Tensor(grad, device=self.device))  # parameters' gradients go straight into their .grad
        dx = x_in.grad.data if self.needs_input_grad[0] else None
        return (dx,) + (None,) * (len(self.needs_input_grad) - 1)


def checkpoint(fn, x, parameters):
    """y = fn(x), recomputed in backward instead of kept. `parameters`: the trainable tensors fn uses.

    They are passed so the node joins the graph whenever one of them needs a gradient, even if x does not
    (block 0's input comes from frozen embeddings under LoRA).
    """
    parameters = [p for p in parameters if p.requires_grad]
    if x.device.name == "cuda" and _has_active_dropout(fn):
        raise RuntimeError("activation checkpointing with dropout > 0 on the GPU is not supported "
                           "(the recomputation could not replay CuPy's random masks); set dropout to 0")
    return Checkpoint.apply(x, *parameters, fn=fn, device=x.device)


def _has_active_dropout(module) -> bool:
    from tinylora import nn

    modules = module.modules() if hasattr(module, "modules") else []
    return any(isinstance(m, nn.Dropout) and m.p > 0 and m.training for m in modules)


# ---------------------------------------------------------------- chunked LM head + cross-entropy
class ChunkedLMHeadLoss(Function):
    # forward:  loss = mean over kept n of logsumexp(h_n W^T) - (h_n W^T)[t_n], chunk by chunk of rows
    # backward: per chunk, dz = (softmax(h W^T) - onehot(t)) · dL / M;  dh = dz W;  dW += dz^T h
    def forward(self, h, weight, targets, ignore_index, chunk_size):
        xp = self.xp
        c = h.shape[-1]
        h2 = h.reshape(-1, c)  # (N, C)
        t = targets.reshape(-1)  # (N,)
        keep = t != ignore_index
        kept = int(keep.sum().item())
        if kept == 0:
            raise ValueError("chunked cross_entropy: every target equals ignore_index, so the mean is over nothing")
        t_safe = xp.where(keep, t, 0)
        if t_safe.min().item() < 0 or t_safe.max().item() >= weight.shape[0]:
            raise IndexError(f"chunked cross_entropy: targets must lie in [0, {weight.shape[0]}) "
                             f"or equal ignore_index={ignore_index}")
        total = 0.0
        for start in range(0, h2.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            z = h2[rows] @ weight.T  # (n, V): the only logits alive
            m = z.max(axis=1)  # (n,)
            z -= m[:, None]
            lse = xp.log(xp.exp(z).sum(axis=1))  # (n,): logsumexp(z) - m
            target_logit = z[xp.arange(z.shape[0]), t_safe[rows]]  # (n,): z[t] - m
            total += ((lse - target_logit) * keep[rows]).sum().item()  # a host float: the sum over chunks
        self.shape, self.kept, self.chunk_size = h.shape, kept, chunk_size
        self.save_for_backward(h2, weight, t_safe, keep)  # h (N, C) instead of probabilities (N, V)
        return xp.asarray(total / kept, dtype=h.dtype)

    def backward(self, grad):
        xp = self.xp
        h2, weight, t_safe, keep = self.saved
        dh = xp.empty_like(h2) if self.needs_input_grad[0] else None
        dw = xp.zeros_like(weight) if self.needs_input_grad[1] else None
        scale = grad / self.kept
        for start in range(0, h2.shape[0], self.chunk_size):
            rows = slice(start, start + self.chunk_size)
            dz = h2[rows] @ weight.T  # (n, V): the logits again
            dz -= dz.max(axis=1, keepdims=True)
            xp.exp(dz, out=dz)
            dz /= dz.sum(axis=1, keepdims=True)  # softmax
            dz[xp.arange(dz.shape[0]), t_safe[rows]] -= 1  # - onehot(t)
            dz *= keep[rows, None] * scale
            if dh is not None:
                dh[rows] = dz @ weight  # (n, C)
            if dw is not None:
                dw += dz.T @ h2[rows]  # (V, C)
        return (dh.reshape(self.shape) if dh is not None else None), dw


def chunked_lm_loss(h, weight, targets, ignore_index: int = -100, chunk_size: int = DEFAULT_CHUNK):
    """Mean cross-entropy of logits h @ weight.T against int targets, never holding more than chunk_size rows of them.

    h (..., C), weight (V, C), targets (...) int; equal (to rounding) to cross_entropy(linear(h, weight), targets).
    """
    from tinylora.engine.tensor import Tensor

    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunked_lm_loss: chunk_size must be a positive int, got {chunk_size!r}")
    t = targets.data if isinstance(targets, Tensor) else h.device.xp.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"chunked_lm_loss: targets must be integers, got dtype {t.dtype}")
    if tuple(t.shape) != h.shape[:-1]:
        raise ValueError(f"chunked_lm_loss: targets shape {tuple(t.shape)} must equal h's shape without the last "
                         f"axis {h.shape[:-1]}")
    if weight.ndim != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"chunked_lm_loss: weight shape {weight.shape} must be (V, {h.shape[-1]})")
    return ChunkedLMHeadLoss.apply(h, weight, targets=t, ignore_index=ignore_index, chunk_size=chunk_size)
