"""The simplest tokenizer: one token per UTF-8 byte.

    ids 0..255   the byte with that value      ("A" -> [65], "é" -> [195, 169])
    id  256      <|endoftext|>, the end-of-text token (only if eot=True, the default)

So vocab_size is 257 with the end token and 256 without. It needs no training
and no files, every string has an encoding, and a model that uses it sees text
as raw bytes: a good first tokenizer for a tiny model and a fair baseline for
BPE (which needs about 3-4x fewer tokens for English).

The end token marks where a document or a completion stops, so a fine-tuned
model learns when to stop generating. Like the BPE tokenizer, `encode` turns
the literal text "<|endoftext|>" into that one id, and `decode` turns it back.
"""

from __future__ import annotations

EOT_TEXT = "<|endoftext|>"


class ByteTokenizer:
    """Token id = byte value (0..255), plus id 256 for <|endoftext|> when `eot` is True."""

    def __init__(self, eot: bool = True):
        self.eot_id: int | None = 256 if eot else None
        self.vocab_size = 257 if eot else 256

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of `text`; each "<|endoftext|>" becomes the single id 256 (if the tokenizer has one)."""
        if not isinstance(text, str):
            raise TypeError(f"ByteTokenizer.encode expects a str, got {type(text).__name__}")
        if self.eot_id is None:
            return list(text.encode("utf-8"))
        ids: list[int] = []
        for i, piece in enumerate(text.split(EOT_TEXT)):
            if i > 0:
                ids.append(self.eot_id)  # the end token that stood between two pieces
            ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        out = bytearray()
        text = []
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                out.append(i)
            elif i == self.eot_id:
                text.append(out.decode("utf-8", errors="replace") + EOT_TEXT)
                out = bytearray()
            else:
                raise ValueError(f"ByteTokenizer.decode: id {i} is outside the vocabulary [0, {self.vocab_size})")
        text.append(out.decode("utf-8", errors="replace"))
        return "".join(text)

    def __repr__(self) -> str:
        return f"ByteTokenizer(vocab_size={self.vocab_size}, eot_id={self.eot_id})"
