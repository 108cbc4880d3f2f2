"""A GPT-2-style language model in one file, built from tinylora's ops.

    idx (B, T) ──wte + wpe──> x (B, T, C) ──Block × n_layer──> ln_f ──x @ wte.weight.T──> logits (B, T, V)

    Block (pre-LN):  x = x + attn(ln_1(x))
                     x = x + mlp(ln_2(x))

    attn:  q = W_q x,  k = W_k x,  v = W_v x          each (B, nh, T, hs), with C = nh * hs
           att = softmax(mask(q k^T / sqrt(hs)))        (B, nh, T, T), position t sees positions <= t
           y = W_o (att v)                              (B, T, C)
    mlp:   y = W_proj gelu(W_fc x)                      C -> 4C -> C, GELU with the tanh approximation

Names follow the LoRA paper: the four attention matrices are the separate
Linear modules `q`, `k`, `v`, `o` (W_q, W_k, W_v, W_o), so LoRA can adapt any
subset of them. (Hugging Face's GPT-2 fuses q, k, v into one `c_attn`;
tinylora/model/hf_gpt2.py splits it when loading.) Linear weights are stored
(out_features, in_features), as in PyTorch and the paper's W0 ∈ R^{d×k}.

The LM head is tied to the token embedding: logits = x @ wte.weight.T. There
is one Parameter, stored once in `state_dict()`; its gradient is the sum of
what the lookup and the head contribute. The head is never a LoRA target.

Generation reuses past keys and values through a `KVCache` (see below and
`tinylora/model/generate.py`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from tinylora import functional as F
from tinylora import nn
from tinylora.nn import init
from tinylora.engine.autograd import is_grad_enabled
from tinylora.engine.tensor import Tensor
from tinylora.model.memory_levers import checkpoint, chunked_lm_loss


def _is_real(value) -> bool:
    """A finite int or float (not a bool, not a string like "0.1")."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- config
@dataclass
class GPTConfig:
    """Sizes of a GPT. V = vocab_size, C = n_embd, nh = n_head, hs = C / nh, L = n_layer."""

    vocab_size: int = 50257
    block_size: int = 1024  # the longest sequence the model can see (rows of wpe)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.1  # GPT-2's value, on embeddings, attention weights and both residual branches (see below)
    bias: bool = True  # biases in every Linear (GPT-2 has them)
    layer_norm_eps: float = 1e-5
    # Hugging Face's three rates (embd_pdrop, attn_pdrop, resid_pdrop); None means `dropout`
    embd_dropout: float | None = None  # on wte(idx) + wpe(pos)
    attn_dropout: float | None = None  # on the attention weights
    resid_dropout: float | None = None  # on the output of attn and of the MLP, before each residual add

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        for name in ("dropout", "embd_dropout", "attn_dropout", "resid_dropout"):
            value = getattr(self, name)
            if value is None and name != "dropout":
                continue
            if not _is_real(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"GPTConfig: {name} must be a number in [0, 1), got {value!r}")
        if not isinstance(self.bias, bool):
            raise ValueError(f"GPTConfig: bias must be true or false, got {self.bias!r}")
        if not _is_real(self.layer_norm_eps) or not self.layer_norm_eps > 0.0:
            raise ValueError(f"GPTConfig: layer_norm_eps must be a positive number, got {self.layer_norm_eps!r}")

    def rate(self, where: str) -> float:
        """The dropout rate at `where` ("embd", "attn" or "resid"): its own field, else `dropout`."""
        own = getattr(self, f"{where}_dropout")
        return self.dropout if own is None else own

    def parameter_shapes(self) -> dict:
        """{name: shape} of every parameter a GPT with this config has (as in its state_dict), without building it.

        What a loader checks a file's header against before it allocates anything.
        """
        c = self.n_embd
        linear = {"attn.q": (c, c), "attn.k": (c, c), "attn.v": (c, c), "attn.o": (c, c),
                  "mlp.fc": (4 * c, c), "mlp.proj": (c, 4 * c)}  # (out, in)
        shapes = {"wte.weight": (self.vocab_size, c), "wpe.weight": (self.block_size, c)}
        for i in range(self.n_layer):
            b = f"blocks.{i}."
            shapes.update({b + "ln_1.weight": (c,), b + "ln_1.bias": (c,)})
            for name, (d, k) in linear.items():
                if name == "mlp.fc":  # registration order: ln_1, attn, ln_2, mlp
                    shapes.update({b + "ln_2.weight": (c,), b + "ln_2.bias": (c,)})
                shapes[b + name + ".weight"] = (d, k)
                if self.bias:
                    shapes[b + name + ".bias"] = (d,)
        shapes.update({"ln_f.weight": (c,), "ln_f.bias": (c,)})
        return shapes

    def num_parameters(self) -> int:
        """How many parameters a GPT with this config has, without building it (wte once: the head is tied).

        V C + T C (embeddings) + L (12 C^2 + 13 C) + 2 C (ln_f); L (12 C^2 + 4 C) per block without biases.
        """
        return sum(math.prod(shape) for shape in self.parameter_shapes().values())

    # the four GPT-2 sizes (Radford et al. 2019) and two sizes for teaching on a laptop
    @classmethod
    def gpt2(cls, **overrides) -> "GPTConfig":
        """124M parameters."""
        return cls(**{"n_layer": 12, "n_head": 12, "n_embd": 768, **overrides})

    @classmethod
    def gpt2_medium(cls, **overrides) -> "GPTConfig":
        """355M parameters."""
        return cls(**{"n_layer": 24, "n_head": 16, "n_embd": 1024, **overrides})

    @classmethod
    def gpt2_large(cls, **overrides) -> "GPTConfig":
        """774M parameters."""
        return cls(**{"n_layer": 36, "n_head": 20, "n_embd": 1280, **overrides})

    @classmethod
    def gpt2_xl(cls, **overrides) -> "GPTConfig":
        """1.5B parameters."""
        return cls(**{"n_layer": 48, "n_head": 25, "n_embd": 1600, **overrides})

    @classmethod
    def tiny(cls, **overrides) -> "GPTConfig":
        """2 layers, 2 heads, 64 dims, byte-sized vocabulary: trains in seconds."""
        return cls(**{"vocab_size": 256, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64, **overrides})

    @classmethod
    def mini(cls, **overrides) -> "GPTConfig":
        """4 layers, 4 heads, 128 dims, byte-sized vocabulary: trains in minutes."""
        return cls(**{"vocab_size": 256, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 128, **overrides})

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GPTConfig":
        """A preset by name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "tiny", "mini"), fields overridable."""
        presets = {
            "gpt2": cls.gpt2, "gpt2-medium": cls.gpt2_medium, "gpt2-large": cls.gpt2_large,
            "gpt2-xl": cls.gpt2_xl, "tiny": cls.tiny, "mini": cls.mini,
        }
        if name not in presets:
            raise ValueError(f"unknown GPT preset '{name}': choose one of {', '.join(presets)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"GPTConfig has no field(s) {unknown}; fields are {sorted(fields)}")
        return presets[name](**overrides)


# ---------------------------------------------------------------- KV cache
class KVCache:
    """Keys and values of the positions seen so far, one (k, v) pair per block, for fast generation.

    Pass the same cache to successive `GPT.forward(idx, kv_cache=cache)` calls:
    each call feeds only the new tokens (B, T_new); every attention layer
    appends their keys and values, each (B, nh, T_new, hs), to what it stored
    before and attends over all of them. `cache.length` positions are stored;
    the new tokens get positions length, length + 1, ...

    The cache stores detached tensors, so it never keeps a graph alive; it is
    meant for inference under `tinylora.no_grad()`. Appending concatenates
    (a copy of the past per step): simple, and cheap next to the matmuls for
    the sizes tinylora runs.
    """

    def __init__(self):
        self.layers: list[tuple[Tensor, Tensor]] = []  # per block: keys, values, each (B, nh, S, hs)

    @property
    def length(self) -> int:
        """How many positions are stored (0 for a new cache)."""
        return self.layers[0][0].shape[2] if self.layers else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new keys and values (B, nh, T_new, hs) for block `layer`; return all of them (B, nh, S, hs)."""
        if layer == len(self.layers):  # the first call for this block
            self.layers.append((k.detach(), v.detach()))
            return k, v
        if layer > len(self.layers):
            raise IndexError(f"KVCache: block {layer} updated before blocks 0..{layer - 1}")
        past_k, past_v = self.layers[layer]
        if past_k.shape[0] != k.shape[0]:
            raise ValueError(f"KVCache: it holds a batch of {past_k.shape[0]} sequences, but got a batch of {k.shape[0]}")
        k = F.cat([past_k, k], axis=2)  # (B, nh, S, hs)
        v = F.cat([past_v, v], axis=2)
        self.layers[layer] = (k.detach(), v.detach())
        return k, v


# ---------------------------------------------------------------- layers
class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions 0..t only.

    W_q, W_k, W_v, W_o are the Linear(C, C) modules q, k, v, o.
    """

    def __init__(self, config: GPTConfig, layer_idx: int, device=None, dtype=None):
        super().__init__()
        c = config.n_embd
        self.n_head, self.head_size = config.n_head, c // config.n_head
        self.layer_idx = layer_idx  # which entry of a KVCache belongs to this block
        self.q = nn.Linear(c, c, bias=config.bias, device=device, dtype=dtype)
        self.k = nn.Linear(c, c, bias=config.bias, device=device, dtype=dtype)
        self.v = nn.Linear(c, c, bias=config.bias, device=device, dtype=dtype)
        self.o = nn.Linear(c, c, bias=config.bias, device=device, dtype=dtype)
        self.attn_drop = nn.Dropout(config.rate("attn"))  # on the attention weights
        self.resid_drop = nn.Dropout(config.rate("resid"))  # on the output, before the residual add

    def _heads(self, x):
        """(B, T, C) -> (B, nh, T, hs): split the channels into heads."""
        b, t, _ = x.shape
        return x.reshape(b, t, self.n_head, self.head_size).transpose(1, 2)

    def forward(self, x, kv_cache: KVCache | None = None):
        b, t, c = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, S, hs): the past positions, then these T
        s = k.shape[2]
        past = s - t  # how many positions came before these queries
        scores = q @ k.transpose(-2, -1)  # (B, nh, T, S)
        # query i sits at position past + i; it may not see key j > past + i
        future = x.device.xp.triu(x.device.xp.ones((t, s), dtype=bool), k=past + 1)  # (T, S)
        # softmax(masked_fill(scores / sqrt(hs), future, -inf)), fused into one node (ops/attention.py)
        att = F.causal_softmax(scores, 1.0 / math.sqrt(self.head_size), future)  # (B, nh, T, S)
        att = self.attn_drop(att)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C): heads side by side again
        return self.resid_drop(self.o(y))


class MLP(nn.Module):
    """Position-wise feed-forward: Linear(C, 4C) `fc`, GELU (tanh approximation), Linear(4C, C) `proj`."""

    def __init__(self, config: GPTConfig, device=None, dtype=None):
        super().__init__()
        c = config.n_embd
        self.fc = nn.Linear(c, 4 * c, bias=config.bias, device=device, dtype=dtype)
        self.proj = nn.Linear(4 * c, c, bias=config.bias, device=device, dtype=dtype)
        self.drop = nn.Dropout(config.rate("resid"))

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """One transformer block, pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer_idx: int, device=None, dtype=None):
        super().__init__()
        c, eps = config.n_embd, config.layer_norm_eps
        self.ln_1 = nn.LayerNorm(c, eps=eps, device=device, dtype=dtype)
        self.attn = CausalSelfAttention(config, layer_idx, device=device, dtype=dtype)
        self.ln_2 = nn.LayerNorm(c, eps=eps, device=device, dtype=dtype)
        self.mlp = MLP(config, device=device, dtype=dtype)
        # optional slots for modules that rewrite a branch's output before its residual add,
        # (B, T, C) -> (B, T, C); None: nothing (adapters use them: tinylora/methods/bottleneck_adapters.py)
        self.after_attn = None
        self.after_mlp = None

    def forward(self, x, kv_cache: KVCache | None = None):
        h = self.attn(self.ln_1(x), kv_cache)  # (B, T, C)
        if self.after_attn is not None:
            h = self.after_attn(h)
        x = x + h
        h = self.mlp(self.ln_2(x))  # (B, T, C)
        if self.after_mlp is not None:
            h = self.after_mlp(h)
        return x + h


# ---------------------------------------------------------------- model
class GPT(nn.Module):
    """GPT-2: token + position embeddings, n_layer pre-LN blocks, final LayerNorm, head tied to wte.

    forward(idx, targets=None, kv_cache=None, adapter_ids=None) -> (logits, loss)
        idx      int (B, T), T <= block_size (counting what a kv_cache already holds)
        targets  int (B, T) or None; entries equal to -100 are ignored by the loss
        adapter_ids  None, or one LoRA adapter name per example ("base": none), see tinylora/lora/mixed.py
        logits   (B, T, V);  loss = mean cross-entropy over kept targets, or None
                 (None when `enable_memory_levers(loss_chunk_size=...)` is on and targets are given)

    Init (GPT-2's): every Linear and Embedding weight ~ N(0, 0.02^2), except the
    two projections that write into the residual stream (attn.o, mlp.proj),
    which get std 0.02 / sqrt(2 * n_layer) so the residual sum does not grow
    with depth; biases 0; LayerNorm weight 1, bias 0.
    """

    def __init__(self, config: GPTConfig, device=None, dtype=None):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT(config): expected a GPTConfig, got {type(config).__name__}")
        self.config = config
        c = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, c, device=device, dtype=dtype)  # (V, C), also the LM head
        self.wpe = nn.Embedding(config.block_size, c, device=device, dtype=dtype)  # (block_size, C)
        self.drop = nn.Dropout(config.rate("embd"))
        self.blocks = nn.ModuleList(Block(config, i, device=device, dtype=dtype) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(c, eps=config.layer_norm_eps, device=device, dtype=dtype)
        # memory levers (model/memory_levers.py), off by default: set them through enable_memory_levers
        self.checkpoint_activations = False  # recompute each block in backward instead of keeping its activations
        self.loss_chunk_size = None  # with targets: a chunked LM head + loss that never holds (B, T, V) logits
        # optional module for token ids >= vocab_size ("virtual tokens" of prefix tuning,
        # tinylora/methods/prefix.py): it embeds them and may rewrite their hidden state before each block
        self.virtual_tokens = None
        self._init_weights()

    def _init_weights(self) -> None:
        std = 0.02
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        residual = {id(b.attn.o) for b in self.blocks} | {id(b.mlp.proj) for b in self.blocks}
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init.normal_(module.weight, 0.0, residual_std if id(module) in residual else std)
                if module.bias is not None:
                    init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                init.normal_(module.weight, 0.0, std)
            # nn.LayerNorm starts at weight 1, bias 0 already

    def _check_idx(self, idx, past: int) -> Tensor:
        if not isinstance(idx, Tensor):
            idx = Tensor(self.wte.weight.device.xp.asarray(idx), device=self.wte.weight.device)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"GPT: idx must hold integer token ids, got dtype {idx.dtype}")
        if idx.ndim != 2:
            raise ValueError(f"GPT: idx must have shape (B, T), got {idx.shape}")
        t = idx.shape[1]
        if t == 0 or idx.shape[0] == 0:
            raise ValueError(f"GPT: idx has shape {idx.shape}: a forward pass needs at least one sequence of one token")
        if past + t > self.config.block_size:
            where = f" after the {past} positions in the kv_cache" if past else ""
            raise ValueError(
                f"GPT: a sequence of length {past + t} ({t} new tokens{where}) exceeds "
                f"block_size={self.config.block_size}; crop idx to its last {self.config.block_size - past} tokens"
            )
        return idx

    def hidden_states(self, idx, kv_cache: KVCache | None = None):
        """The final hidden states ln_f(...) (B, T, C), before the LM head."""
        past = kv_cache.length if kv_cache is not None else 0
        idx = self._check_idx(idx, past)
        b, t = idx.shape
        xp = self.wpe.weight.device.xp
        pos = xp.arange(past, past + t)  # (T,): positions continue after what the cache holds
        virtual = self.virtual_tokens
        tok = self.wte(idx) if virtual is None else virtual.embed(idx, self.wte)  # (B, T, C)
        x = self.drop(tok + self.wpe(pos))  # (B, T, C) + (T, C)
        for i, block in enumerate(self.blocks):
            if virtual is not None:
                x = virtual.before_block(i, idx, x)  # (B, T, C)
            if kv_cache is None and self._checkpoint_now(block):
                x = checkpoint(block, x, block.parameters())  # keeps x only; block recomputed in backward
            else:
                x = block(x, kv_cache)  # (B, T, C)
        return self.ln_f(x)

    def _checkpoint_now(self, block) -> bool:
        """Checkpoint this block? Only when enabled, training with a graph, and some parameter of it trains."""
        return (self.checkpoint_activations and is_grad_enabled()
                and any(p.requires_grad for p in block.parameters()))

    def enable_memory_levers(self, checkpoint_activations: bool = False, loss_chunk_size: int | None = None):
        """Switch the memory levers on or off (see tinylora.model.memory_levers). Returns the model.

        checkpoint_activations: recompute every block in backward (saves activations, costs a forward).
        loss_chunk_size:        rows per chunk of a fused LM head + cross-entropy used when targets are given;
                                forward then returns (None, loss): the (B, T, V) logits are never formed.
        """
        if loss_chunk_size is not None and (not isinstance(loss_chunk_size, int) or loss_chunk_size < 1):
            raise ValueError(f"GPT: loss_chunk_size must be a positive int or None, got {loss_chunk_size!r}")
        self.checkpoint_activations = bool(checkpoint_activations)
        self.loss_chunk_size = loss_chunk_size
        return self

    def forward(self, idx, targets=None, kv_cache: KVCache | None = None, adapter_ids=None):
        if adapter_ids is not None:  # one LoRA adapter per example (tinylora/lora/mixed.py)
            from tinylora.lora.mixed import mixed_adapters

            with mixed_adapters(self, adapter_ids):
                return self.forward(idx, targets, kv_cache)
        x = self.hidden_states(idx, kv_cache)  # (B, T, C)
        if targets is not None and self.loss_chunk_size:  # the head and the loss in one chunked op
            loss = chunked_lm_loss(x, self.wte.weight, targets, ignore_index=-100, chunk_size=self.loss_chunk_size)
            return None, loss
        logits = F.linear(x, self.wte.weight)  # (B, T, V): the head tied to the embedding, x @ wte.weight.T
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets, ignore_index=-100)
        return logits, loss
