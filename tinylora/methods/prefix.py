"""Prefix tuning: trainable "virtual tokens" around the prompt (the LoRA paper's PreEmbed and PreLayer, §5.1).

The input becomes   [l_p prefix tokens] prompt [l_i infix tokens] completion,
where the l_p + l_i special tokens are not in the vocabulary: they get the ids
V, V+1, ..., V + l_p + l_i - 1 (V = vocab_size), and the GPT hands ids >= V to its
`virtual_tokens` module (the slot in tinylora/model/gpt.py) instead of the embedding table wte.

    PreEmbed (prefix-embedding tuning): the special tokens' embeddings E ∈ R^{(l_p+l_i)×d} train;
        the input to block 0 at a special position j is E[j] + wpe[position], as for a real token.
        |Θ| = d · (l_p + l_i)                 e.g. GPT-3, l_p = 256, l_i = 8: 12288 · 264 = 3,244,032

    PreLayer (prefix-layer tuning): the special tokens' hidden states P ∈ R^{L×(l_p+l_i)×d} train:
        the input to block i at a special position j is P[i, j], whatever the block below computed there.
        |Θ| = L · d · (l_p + l_i)
        (The paper says "the activation after every layer"; we replace the input of each of the L blocks,
        i.e. the embedding output and the outputs of blocks 0..L-2. The output of the last block at a
        special position reaches no real token, so training it would change nothing; that gives L·d per token.)

Real tokens see the special ones only through attention (their keys and values in every block),
so the frozen model is steered without changing any weight. The price: the special tokens take
l_p + l_i of the block_size positions (a batch of text is block_size - l_p - l_i real tokens),
and every forward pass computes them, so a request costs as much as a longer one.

KV-cache generation (tinylora.model.generate): the prompt is fed once as prefix + prompt + infix.
In that first pass every block computes the special positions' keys and values from their
(trained) inputs and the cache stores them like any token's; each later step feeds one real token
that attends to them. This is exact, not an approximation: the special tokens come first in their
part of the causal sequence, so nothing after them can change their keys and values. `prompt_ids`
wraps a prompt; `max_new_tokens_for` keeps generation within block_size, because generate's
cropping of a full context would drop the prefix.

Initialisation (Li & Liang 2021 found that starting from real words trains better than random):
PreEmbed copies the embeddings of l_p + l_i random vocabulary tokens; PreLayer takes the hidden states
the frozen model computes for such a random sequence. l_p = l_i = 0 leaves the model exactly as it was.

    apply_prefix_embed(model, prefix_len=8, infix_len=0)
    apply_prefix_layer(model, prefix_len=8, infix_len=0)
    VirtualTokenData(dataset, model.virtual_tokens)   training batches with the special tokens inserted
"""

from __future__ import annotations

import numpy as np

from tinylora import functional as F
from tinylora import nn
from tinylora.data.pairs import IGNORE_INDEX
from tinylora.engine.autograd import no_grad
from tinylora.engine.random import host_rng
from tinylora.engine.tensor import Tensor, zeros
from tinylora.methods.trainable import check_plain, train_only


class VirtualTokens(nn.Module):
    """The special tokens' trainable vectors: E (n, d) for PreEmbed, P (L, n, d) for PreLayer; n = l_p + l_i."""

    def __init__(self, config, prefix_len: int, infix_len: int, per_layer: bool, device=None, dtype=None):
        super().__init__()
        self.vocab_size, self.block_size = config.vocab_size, config.block_size
        self.prefix_len, self.infix_len, self.per_layer = prefix_len, infix_len, per_layer
        n, d = prefix_len + infix_len, config.n_embd
        shape = (config.n_layer, n, d) if per_layer else (n, d)
        self.weight = nn.Parameter(zeros(*shape, device=device, dtype=dtype))

    @property
    def n_tokens(self) -> int:
        return self.prefix_len + self.infix_len

    def prefix_ids(self) -> list:
        return list(range(self.vocab_size, self.vocab_size + self.prefix_len))

    def infix_ids(self) -> list:
        return list(range(self.vocab_size + self.prefix_len, self.vocab_size + self.n_tokens))

    def _where_virtual(self, idx):
        """(mask, slot): mask (B, T) marks ids >= V; slot (B, T) is id - V there, 0 elsewhere."""
        ids = idx.data
        if ids.size and ids.max().item() >= self.vocab_size + self.n_tokens:
            raise IndexError(f"token id {ids.max().item()} is beyond the vocabulary ({self.vocab_size}) and the "
                             f"{self.n_tokens} virtual tokens")
        mask = ids >= self.vocab_size  # (B, T)
        return mask, mask * (ids - self.vocab_size)  # slot: which special token, 0 at real positions

    def embed(self, idx, wte):
        """Token embeddings (B, T, d): wte for real ids; E for virtual ones (PreEmbed)."""
        mask, slot = self._where_virtual(idx)
        real = wte(Tensor(idx.data * ~mask, device=idx.device))  # virtual ids looked up as id 0, replaced below
        if self.per_layer or not mask.any().item():
            return real  # (PreLayer overwrites the virtual positions before block 0)
        virtual = F.embedding(slot, self.weight)  # (B, T, d)
        return F.where(mask[..., None], virtual, real)

    def before_block(self, i: int, idx, x):
        """The input of block i (B, T, d), with P[i] at the virtual positions (PreLayer); unchanged for PreEmbed."""
        if not self.per_layer:
            return x
        mask, slot = self._where_virtual(idx)
        if not mask.any().item():
            return x  # e.g. a generation step feeding one real token
        virtual = F.embedding(slot, self.weight[i])  # (B, T, d) from P[i] (n, d)
        return F.where(mask[..., None], virtual, x)

    def extra_repr(self) -> str:
        kind = "PreLayer" if self.per_layer else "PreEmbed"
        return f"{kind}, prefix_len={self.prefix_len}, infix_len={self.infix_len}"

    # ------------------------------------------------------------ inputs with the special tokens
    def wrap(self, prompt_ids) -> list:
        """prefix + prompt + infix: the ids a prompt is fed as."""
        return self.prefix_ids() + list(prompt_ids) + self.infix_ids()

    def insert(self, x, y, running_text: bool):
        """Put the special tokens into a batch (x, y), each (B, T) int64; returns (B, T + n) arrays.

        Prompt/completion batches (tinylora.data.pairs): a row's prompt is its first P tokens, where
        P - 1 is the number of leading ignored targets; the row becomes prefix + x[:P] + infix + x[P:],
        and every target before the completion is ignored. Running text has no prompt: the special
        tokens go first and no target is ignored beyond theirs.
        """
        b, t = x.shape
        n = self.n_tokens
        if t + n > self.block_size:
            raise ValueError(f"a batch of {t} tokens plus {n} virtual tokens exceeds block_size={self.block_size}; "
                             f"build the data with block_size - {n}")
        pre, inf = np.asarray(self.prefix_ids(), np.int64), np.asarray(self.infix_ids(), np.int64)
        new_x = np.empty((b, t + n), np.int64)
        new_y = np.full((b, t + n), IGNORE_INDEX, np.int64)
        for row in range(b):
            p = 0 if running_text else int(np.argmax(y[row] != IGNORE_INDEX)) + 1  # prompt length
            new_x[row] = np.concatenate([pre, x[row, :p], inf, x[row, p:]])
            first = 0 if running_text else p - 1  # y[row, first] is the first target to keep
            new_y[row, n + first:] = y[row, first:]
        return new_x, new_y


class VirtualTokenData:
    """A dataset (TextDataset or PairDataset) whose batches carry the special tokens (see VirtualTokens.insert).

    Build the inner dataset with block_size - (l_p + l_i), so the batches fit the model.
    """

    def __init__(self, dataset, virtual: VirtualTokens):
        self.dataset, self.virtual = dataset, virtual
        self.running_text = hasattr(dataset, "starts")
        if self.running_text:
            self.starts = dataset.starts  # the training loop tells running text from pairs by this attribute

    def __len__(self) -> int:
        return len(self.dataset)

    def get_batch(self, *args):
        x, y = self.dataset.get_batch(*args)
        return self.virtual.insert(x, y, self.running_text)


# ------------------------------------------------------------------ applying
def _check_lengths(model, prefix_len, infix_len, method):
    for name, value in (("prefix_len", prefix_len), ("infix_len", infix_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"apply {method}: {name} (l_p, l_i) must be an int >= 0, got {value!r}")
    if prefix_len + infix_len >= model.config.block_size:
        raise ValueError(f"apply {method}: l_p + l_i = {prefix_len + infix_len} leaves no room for real tokens in "
                         f"block_size={model.config.block_size}; it must be < block_size")


def _attach(model, prefix_len, infix_len, per_layer, method):
    check_plain(model, method)
    _check_lengths(model, prefix_len, infix_len, method)
    weight = model.wte.weight
    virtual = VirtualTokens(model.config, prefix_len, infix_len, per_layer, device=weight.device, dtype=weight.dtype)
    if virtual.n_tokens:
        real_ids = host_rng().integers(0, model.config.vocab_size, size=virtual.n_tokens)  # (n,) random real tokens
        virtual.weight.data[...] = _hidden_states_of(model, real_ids) if per_layer else weight.data[real_ids]
    model.virtual_tokens = virtual
    return train_only(model, [virtual.weight], method, {"prefix_len": prefix_len, "infix_len": infix_len})


@no_grad()
def _hidden_states_of(model, ids):
    """The inputs of blocks 0..L-1 for the token sequence `ids` (n,), as one (L, n, d) array, dropout off."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    pos = model.wpe.weight.device.xp.arange(len(ids))
    x = model.wte(Tensor(model.wpe.weight.device.xp.asarray(ids)[None, :], device=model.wpe.weight.device))
    x = x + model.wpe(pos)  # (1, n, d)
    inputs = []
    for block in model.blocks:
        inputs.append(x.data[0])  # (n, d)
        x = block(x)
    for module, training in modes:
        module.training = training
    return model.wpe.weight.device.xp.stack(inputs)  # (L, n, d)


def apply_prefix_embed(model, prefix_len: int = 8, infix_len: int = 0):
    """PreEmbed: l_p prefix + l_i infix trainable token embeddings; everything else frozen. Returns `model`."""
    return _attach(model, prefix_len, infix_len, per_layer=False, method="prefix-embed")


def apply_prefix_layer(model, prefix_len: int = 8, infix_len: int = 0):
    """PreLayer: the special tokens' input to every block trains; everything else frozen. Returns `model`."""
    return _attach(model, prefix_len, infix_len, per_layer=True, method="prefix-layer")


def prompt_ids(model, ids) -> list:
    """The ids to feed for a prompt: prefix + ids + infix if the model has virtual tokens, else ids."""
    return model.virtual_tokens.wrap(ids) if getattr(model, "virtual_tokens", None) is not None else list(ids)


def max_new_tokens_for(model, n_fed: int, wanted: int) -> int:
    """At most `wanted`, and no more than fit after `n_fed` tokens in block_size when the model has a prefix."""
    if getattr(model, "virtual_tokens", None) is None:
        return wanted
    return max(0, min(wanted, model.config.block_size - n_fed))


def prefix_count(d: int, prefix_len: int, infix_len: int, n_layer: int | None = None) -> int:
    """The paper's |Θ|: d · (l_p + l_i) for PreEmbed, L · d · (l_p + l_i) for PreLayer (n_layer = L)."""
    return (n_layer or 1) * d * (prefix_len + infix_len)
