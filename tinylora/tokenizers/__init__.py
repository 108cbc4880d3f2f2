"""Tokenizers: text <-> lists of token ids. Host-side code (plain Python, no tensors).

    ByteTokenizer()                    one id per UTF-8 byte, + <|endoftext|> = 256   (byte.py)
    BPETokenizer.from_directory(dir)   GPT-2's byte-level BPE from vocab.json + merges.txt   (bpe.py)
    train_bpe(texts, vocab_size)       learn a small BPE vocabulary in the same format   (train_bpe.py)
    load_tokenizer("byte" | dir)       pick one by name, as a command line would
    decode_text(tokenizer, ids)        ids -> text without the end-of-text tokens

Every tokenizer has encode(str) -> list[int], decode(ids) -> str, vocab_size,
and eot_id (the end-of-text id, or None if it has none).
"""

from __future__ import annotations

from pathlib import Path

from tinylora.tokenizers.bpe import EOT_TEXT, BPETokenizer, bytes_to_unicode
from tinylora.tokenizers.byte import ByteTokenizer
from tinylora.tokenizers.train_bpe import train_bpe


def load_tokenizer(spec):
    """"byte" -> ByteTokenizer(); a directory with vocab.json + merges.txt -> BPETokenizer; a tokenizer -> itself."""
    if hasattr(spec, "encode") and hasattr(spec, "decode"):
        return spec
    if spec == "byte":
        return ByteTokenizer()
    if not isinstance(spec, (str, Path)):
        raise TypeError(f"tokenizer must be 'byte', a folder holding vocab.json and merges.txt, or a tokenizer "
                        f"object; got {type(spec).__name__} {spec!r}")
    if Path(spec).is_dir():
        return BPETokenizer.from_directory(spec)
    raise ValueError(f"unknown tokenizer {spec!r}: use 'byte' or a directory holding vocab.json and merges.txt")


__all__ = ["EOT_TEXT", "BPETokenizer", "ByteTokenizer", "bytes_to_unicode", "decode_text", "load_tokenizer", "train_bpe"]


def decode_text(tokenizer, ids) -> str:
    """Token ids as text, without end-of-text tokens (the start token of an empty prompt, the stop token)."""
    return tokenizer.decode([int(i) for i in ids if i != tokenizer.eot_id])
