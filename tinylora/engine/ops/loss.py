"""Cross-entropy of logits against integer targets: one fused node (the math is in CrossEntropy's docstring).

The mean is over the M targets not equal to `ignore_index` (default -100, as in
PyTorch): that is how a prompt/completion example puts the loss on the
completion alone. Backward needs only the probabilities, so the node keeps one
(N, C) array of them, not the logits, and turns it into the gradient in place.
On NumPy and CuPy arrays the softmax is computed by engine/kernels/softmax.py (block by block, in
place); TINYLORA_KERNELS=0 runs the lines below.
"""

from __future__ import annotations

from tinylora.engine import kernels
from tinylora.engine.autograd import Function
from tinylora.engine.kernels import softmax as fast


class CrossEntropy(Function):
    """loss = -(1/M) sum over kept n of log softmax(z_n)[t_n];  z: (N, C) logits, t: (N,) targets,
    kept: t_n != ignore_index, M: how many are kept;  log softmax(z)[t] = (z[t] - m) - log sum exp(z - m),
    m = max(z) (the max taken off first: equal logits of 1e8 still give log C).

        dz_n = (softmax(z_n) - onehot(t_n)) * dL / M for kept n, 0 for ignored n

    Keeps the (N, C) probabilities (and the targets and keep mask), not the logits.
    """

    def forward(self, logits, targets, ignore_index):
        xp = self.xp
        n_classes = logits.shape[-1]
        z = logits.reshape(-1, n_classes)  # (N, C)
        t = targets.reshape(-1)  # (N,)
        if t.size == 0:
            raise ValueError(f"cross_entropy: logits of shape {logits.shape} hold no positions to average over")
        keep = t != ignore_index
        kept = int(keep.sum().item())  # .item(): an explicit device-to-host copy
        if kept == 0:
            raise ValueError("cross_entropy: every target equals ignore_index, so the mean is over nothing")
        t_safe = xp.where(keep, t, 0)
        if t_safe.min().item() < 0 or t_safe.max().item() >= n_classes:
            raise IndexError(f"cross_entropy: targets must lie in [0, {n_classes}) or equal ignore_index={ignore_index}")
        if kernels.use(z):
            probs, row_max, log_total = fast.rows_forward(xp, z)
        else:
            row_max = z.max(axis=1, keepdims=True)  # (N, 1) m
            e = xp.exp(z - row_max)  # (N, C)
            total = e.sum(axis=1, keepdims=True)  # (N, 1)
            probs = e / total  # softmax(z)
            row_max, log_total = row_max[:, 0], xp.log(total[:, 0])  # (N,) m and log sum exp(z - m)
        # log softmax(z)[t] = (z[t] - m) - log sum exp(z - m): m comes off z[t] before anything is added, so a
        # logit of 1e8 keeps the small terms (z[t] - (m + log sum exp(z - m)) would round them away)
        log_p_target = (z[xp.arange(z.shape[0]), t_safe] - row_max) - log_total
        loss = -(log_p_target * keep).sum() / kept
        self.shape, self.kept = logits.shape, kept
        self.save_for_backward(probs, t_safe, keep)
        return xp.asarray(loss, dtype=logits.dtype)

    def backward(self, grad):
        probs, t_safe, keep = self.saved
        dz = probs  # reuse the saved buffer: this node is released right after
        dz[self.xp.arange(dz.shape[0]), t_safe] -= 1
        dz *= keep[:, None] * (grad / self.kept)
        return dz.reshape(self.shape)


def cross_entropy(logits, targets, ignore_index: int = -100):
    """Mean cross-entropy of `logits` (..., C) against int `targets` (...), skipping `ignore_index`."""
    from tinylora.engine.tensor import Tensor

    t = targets.data if isinstance(targets, Tensor) else logits.device.xp.asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {t.dtype}")
    if tuple(t.shape) != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets shape {tuple(t.shape)} must equal logits shape without the last axis {logits.shape[:-1]}")
    if isinstance(targets, Tensor) and targets.device != logits.device:
        raise RuntimeError(f"cross_entropy: targets are on {targets.device} but logits on {logits.device}")
    return CrossEntropy.apply(logits, targets=t, ignore_index=ignore_index)
