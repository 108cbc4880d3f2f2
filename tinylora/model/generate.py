"""Text generation: feed the model its own predictions, one token at a time.

    for each new token:
        logits = model(context)[:, -1, :]                  (B, V): scores for the next token
        next   = argmax(logits)                            greedy (greedy=True or temperature=0)
              or a sample from softmax(logits / temperature), optionally restricted to
                 the top_k most likely tokens and/or the smallest set of most likely
                 tokens whose probabilities add up to top_p (nucleus sampling)
        context = context + [next]

With use_cache=True the model keeps the keys and values of past positions in a
KVCache, so each step feeds only the newest token. Without it, each step feeds
the whole context, cropped to its last block_size tokens. Both give the same
tokens: once the context outgrows block_size, the cached path rebuilds its
cache from the last block_size tokens, which is exactly what the uncached path
feeds (positions restart at 0 in both).
"""

from __future__ import annotations

import contextlib
import math

from tinylora.engine.autograd import no_grad
from tinylora.model.gpt import KVCache
from tinylora.nn.module import evaluating
from tinylora.engine.random import device_rng
from tinylora.engine.tensor import Tensor


def filter_top_k(logits, k: int):
    """Keep the k largest logits of each row (B, V); the rest become -inf. Ties with the k-th all stay."""
    xp = _xp_of(logits)
    if k >= logits.shape[-1]:
        return logits
    kth = xp.sort(logits, axis=-1)[:, -k][:, None]  # (B, 1): the k-th largest value
    return xp.where(logits < kth, -math.inf, logits)


def filter_top_p(logits, p: float):
    """Keep, per row (B, V), the fewest most likely tokens whose probabilities add up to >= p; the rest -inf.

    Ties with the last kept token all stay, as in filter_top_k.
    """
    xp = _xp_of(logits)
    sorted_logits = -xp.sort(-logits, axis=-1)  # (B, V): most likely first
    probs = _softmax(sorted_logits, xp)
    before = xp.cumsum(probs, axis=-1) - probs  # mass of the tokens ranked above each one
    n_keep = (before < p).sum(axis=-1)  # (B,): >= 1, the top token has nothing above it
    cutoff = xp.take_along_axis(sorted_logits, (n_keep - 1)[:, None], axis=-1)  # (B, 1): the last kept logit
    return xp.where(logits < cutoff, -math.inf, logits)


def sample_next(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                greedy: bool = False):
    """Pick one token id per row from raw logits (B, V) (an array); returns int64 ids (B,)."""
    xp = _xp_of(logits)
    if greedy or temperature == 0:
        return xp.argmax(logits, axis=-1).astype("int64")
    logits = logits / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = _softmax(logits, xp)  # (B, V)
    cdf = xp.cumsum(probs, axis=-1)  # (B, V)
    u = device_rng(_device_of(logits)).random((logits.shape[0], 1), dtype=cdf.dtype) * cdf[:, -1:]  # (B, 1)
    ids = (cdf <= u).sum(axis=-1)  # inverse CDF: the first token whose cumulative probability exceeds u
    return xp.minimum(ids, logits.shape[-1] - 1).astype("int64")  # guard against u landing on the last edge


@no_grad()
def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, greedy: bool = False, eos_token: int | None = None,
             use_cache: bool = True, adapter_ids=None) -> Tensor:
    """Continue the token ids `idx` (B, T) (or (T,)) by up to `max_new_tokens` tokens; returns (B, T + n).

    Runs under no_grad with the model in eval mode (dropout off), restoring each module's mode after.
    temperature=0 means greedy. With `eos_token`, a row that has produced it keeps getting
    `eos_token` appended, and generation stops once every row has produced it.
    With `adapter_ids` (one LoRA adapter name per row, "base" for none; tinylora/lora/mixed.py)
    every row generates with its own adapter, in one batch.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate: top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1] or None, got {top_p!r}")

    device = model.device
    xp = device.xp
    ids = idx.data if isinstance(idx, Tensor) else xp.asarray(idx)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"generate: idx must hold integer token ids, got dtype {ids.dtype}")
    one_row = ids.ndim == 1
    if one_row:
        ids = ids[None, :]  # (1, T)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"generate: idx must have shape (B, T) or (T,) with T >= 1, got {tuple(ids.shape)}")
    ids = ids.astype("int64")

    block = model.config.block_size
    # eval mode (every module's own mode comes back afterwards), and each row's adapter while generating
    with evaluating(model), contextlib.ExitStack() as adapters:
        if adapter_ids is not None:  # each row its own LoRA adapter, gathered once for every step
            from tinylora.lora.mixed import mixed_adapters

            adapters.enter_context(mixed_adapters(model, adapter_ids))
        cache = KVCache() if use_cache else None
        done = xp.zeros(ids.shape[0], dtype=bool)  # (B,): rows that have produced eos_token
        for _ in range(max_new_tokens):
            if cache is None:
                logits, _ = model(Tensor(ids[:, -block:], device=device))  # whole context, cropped
            elif cache.length == 0 or cache.length >= block:
                cache = KVCache()  # first step, or the cache is full: (re)build it from the cropped context
                logits, _ = model(Tensor(ids[:, -block:], device=device), kv_cache=cache)
            else:
                logits, _ = model(Tensor(ids[:, -1:], device=device), kv_cache=cache)  # only the newest token
            next_ids = sample_next(logits.data[:, -1, :], temperature, top_k, top_p, greedy)  # (B,)
            if eos_token is not None:
                next_ids = xp.where(done, eos_token, next_ids)
                done |= next_ids == eos_token
            ids = xp.concatenate([ids, next_ids[:, None]], axis=1)  # (B, T + 1)
            if eos_token is not None and done.all().item():  # .item(): an explicit device-to-host copy
                break
    return Tensor(ids[0] if one_row else ids, device=device)


def _softmax(logits, xp):
    z = xp.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def _device_of(array):
    from tinylora.engine.backend import device_of

    return device_of(array)


def _xp_of(array):
    return _device_of(array).xp
