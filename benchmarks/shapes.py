"""The model shapes every contender is built with, and the batch each benchmark feeds them.

All contenders (tinylora, the hand-written PyTorch GPT-2, HF GPT-2 + PEFT) are built from these numbers,
not from one library's presets, so they are the same shape by construction. The GPT-2 rows are the
published GPT-2 sizes; "tiny" and "mini" are tinylora's teaching sizes.

| name        | L (layers) | H (heads) | C (n_embd) | V (vocab) | block | batch x seq (default) |
|-------------|-----------:|----------:|-----------:|----------:|------:|----------------------:|
| tiny        |          2 |         2 |         64 |       256 |    64 |               4 x  64 |
| mini        |          4 |         4 |        128 |       256 |   128 |               4 x 128 |
| gpt2        |         12 |        12 |        768 |     50257 |  1024 |               4 x 256 |
| gpt2-medium |         24 |        16 |       1024 |     50257 |  1024 |               4 x 256 |
| gpt2-large  |         36 |        20 |       1280 |     50257 |  1024 |               4 x 256 |
| gpt2-xl     |         48 |        25 |       1600 |     50257 |  1024 |               4 x 256 |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Shape:
    """A GPT-2-style model (n_layer, n_head, n_embd, vocab_size, block_size) and a batch (batch x seq)."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    block_size: int
    batch: int
    seq: int

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"shape {self.name}: n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 1 <= self.seq <= self.block_size:
            raise ValueError(f"shape {self.name}: seq={self.seq} must lie in [1, block_size={self.block_size}]")
        if self.batch < 1:
            raise ValueError(f"shape {self.name}: batch must be at least 1, got {self.batch}")

    @property
    def tokens(self) -> int:
        """N = B * T, the positions one step processes."""
        return self.batch * self.seq

    def as_dict(self) -> dict:
        return asdict(self)


SHAPES = {
    s.name: s
    for s in (
        Shape("tiny", n_layer=2, n_head=2, n_embd=64, vocab_size=256, block_size=64, batch=4, seq=64),
        Shape("mini", n_layer=4, n_head=4, n_embd=128, vocab_size=256, block_size=128, batch=4, seq=128),
        Shape("gpt2", n_layer=12, n_head=12, n_embd=768, vocab_size=50257, block_size=1024, batch=4, seq=256),
        Shape("gpt2-medium", n_layer=24, n_head=16, n_embd=1024, vocab_size=50257, block_size=1024, batch=4, seq=256),
        Shape("gpt2-large", n_layer=36, n_head=20, n_embd=1280, vocab_size=50257, block_size=1024, batch=4, seq=256),
        Shape("gpt2-xl", n_layer=48, n_head=25, n_embd=1600, vocab_size=50257, block_size=1024, batch=4, seq=256),
    )
}


def get_shape(name: str, batch: int | None = None, seq: int | None = None) -> Shape:
    """The named shape, with batch and/or sequence length overridden when given."""
    if name not in SHAPES:
        raise ValueError(f"unknown config '{name}': choose one of {', '.join(SHAPES)}")
    shape = SHAPES[name]
    changes = {k: v for k, v in (("batch", batch), ("seq", seq)) if v is not None}
    return replace(shape, **changes) if changes else shape


def make_batch(shape: Shape, seed: int = 0):
    """Random token ids and next-token targets, both int64 (B, T), the same for every contender (host NumPy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, shape.vocab_size, size=(shape.batch, shape.seq + 1), dtype=np.int64)
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()  # idx (B, T), targets (B, T)
