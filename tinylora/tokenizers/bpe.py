"""GPT-2's byte-level BPE tokenizer, read from `vocab.json` + `merges.txt`.

Byte-pair encoding (Sennrich et al. 2016; byte-level as in GPT-2) in three steps:

1. Pre-tokenize: a regular expression cuts the text into words, numbers,
   punctuation runs and whitespace runs; a leading space stays with the word
   after it ("Hello world!" -> "Hello", " world", "!"). Merges never cross
   these pieces, so " world" is one token wherever it appears.
2. Bytes to symbols: each piece's UTF-8 bytes become printable characters, one
   per byte (`bytes_to_unicode`; the space byte shows up as "Ġ"). The 256 byte
   symbols are the base vocabulary, so every string has an encoding: no <unk>.
3. Merge: `merges.txt` lists symbol pairs in the order they were learned. The
   adjacent pair learned first (lowest rank) is merged everywhere in the piece,
   and again, until no adjacent pair is in the list. The resulting symbols are
   looked up in `vocab.json` (symbol string -> id).

Decoding concatenates the tokens' bytes and reads them as UTF-8, so
decode(encode(text)) == text for any text. Special tokens (`<|endoftext|>`, id
50256 in GPT-2) are cut out of the text before step 1 and map to their own id.
These are the files of a Hugging Face GPT-2 directory; `train_bpe.py` makes
smaller ones in the same format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import regex

from tinylora.io import read_json

EOT_TEXT = "<|endoftext|>"

# GPT-2's pre-tokenizer: English contractions, then an optional space followed by letters (\p{L}), digits
# (\p{N}) or other symbols, then whitespace runs. `\s+(?!\S)` leaves the last space of a run for the next word.
PRETOKENIZE = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

_CACHE_LIMIT = 100_000  # words remembered by `_encode_word` before the cache starts over


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte (0..255) to one printable character.

    Printable Latin-1 bytes ("!".."~", "¡".."¬", "®".."ÿ") stand for themselves;
    the other 68 (control bytes, space, ...) take the characters chr(256),
    chr(257), ... in byte order, so space (32) becomes "Ġ" and newline (10) "Ċ".
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


class BPETokenizer:
    """Byte-level BPE with GPT-2's files.

    vocab:  token string (in byte symbols) -> id, as in vocab.json
    merges: the learned pairs (a, b), rank 0 first, as in merges.txt
    special_tokens: tokens matched verbatim in the text; default: <|endoftext|> if the vocab has it
    """

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special_tokens=None):
        if special_tokens is None:
            special_tokens = [EOT_TEXT] if EOT_TEXT in vocab else []
        self.vocab = dict(vocab)
        self.merges = [tuple(pair) for pair in merges]
        for s in special_tokens:
            if s not in self.vocab:
                raise ValueError(f"special token {s!r} is not in the vocabulary")
        self.special_tokens = {s: self.vocab[s] for s in special_tokens}
        _check_vocab(self.vocab, self.merges, self.special_tokens)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.vocab_size = max(self.vocab.values()) + 1
        self.eot_id: int | None = self.special_tokens.get(EOT_TEXT)
        # the bytes each id stands for, so decode is one join
        self._bytes = {i: _token_bytes(t, t in self.special_tokens) for t, i in self.vocab.items()}
        # one regex that finds any special token, longest first (so "<|a|>x" wins over a prefix "<|a|>")
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if longest_first else None
        self._cache: dict[str, list[int]] = {}

    # ----------------------------------------------------------------- files
    @classmethod
    def from_files(cls, vocab_json, merges_txt, special_tokens=None) -> "BPETokenizer":
        """Load `vocab.json` (token -> id) and `merges.txt` (one "a b" pair per line, optional #version header)."""
        vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
        for f in (vocab_json, merges_txt):
            if not f.is_file():
                raise FileNotFoundError(f"BPE tokenizer file not found: {f}")
        vocab = read_json(vocab_json)  # a JSON object mapping token -> id
        merges = []
        with open(merges_txt, encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if not line or (line_no == 1 and line.startswith("#version")):
                    continue
                pair = line.split(" ")
                if len(pair) != 2:
                    raise ValueError(f"{merges_txt}, line {line_no}: expected two tokens and one space, got {line!r}")
                merges.append((pair[0], pair[1]))
        try:
            return cls(vocab, merges, special_tokens)
        except ValueError as err:  # name the files that do not fit together
            raise ValueError(f"{vocab_json} + {merges_txt.name}: {err}") from None

    @classmethod
    def from_directory(cls, path, special_tokens=None) -> "BPETokenizer":
        """Load `path/vocab.json` and `path/merges.txt` (e.g. a Hugging Face GPT-2 directory)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        return cls.from_files(path / "vocab.json", path / "merges.txt", special_tokens)

    def save(self, directory) -> None:
        """Write `vocab.json` and `merges.txt` into `directory` (created if needed), in GPT-2's format."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        by_id = dict(sorted(self.vocab.items(), key=lambda item: item[1]))
        with open(directory / "vocab.json", "w", encoding="utf-8") as fh:
            json.dump(by_id, fh, ensure_ascii=False)
        with open(directory / "merges.txt", "w", encoding="utf-8") as fh:
            fh.write("#version: 0.2\n")
            fh.writelines(f"{a} {b}\n" for a, b in self.merges)

    # ------------------------------------------------------------ encode/decode
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens written in the text (e.g. "<|endoftext|>") become their id."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode expects a str, got {type(text).__name__}")
        pieces = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2 == 1:  # re.split puts the matched separators (the special tokens) at odd positions
                ids.append(self.special_tokens[piece])
                continue
            for word in PRETOKENIZE.findall(piece):
                ids.extend(self._encode_word(word))
        return ids

    def decode(self, ids) -> str:
        """The text of `ids`; a sequence cut inside a multi-byte character decodes that character as U+FFFD."""
        try:
            data = b"".join(self._bytes[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"BPETokenizer.decode: token id {err.args[0]} is not in the vocabulary") from None
        return data.decode("utf-8", errors="replace")

    def _encode_word(self, word: str) -> list[int]:
        """Ids of one pre-tokenized piece (cached: the same words come back all the time)."""
        ids = self._cache.get(word)
        if ids is None:
            symbols = [BYTE_TO_CHAR[b] for b in word.encode("utf-8")]
            ids = [self.vocab[s] for s in self._merge(symbols)]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _merge(self, symbols: list[str]) -> list[str]:
        """Apply the merges to one piece: always the adjacent pair with the lowest rank, everywhere at once."""
        never = len(self.ranks)  # a rank larger than any learned merge
        while len(symbols) > 1:
            pairs = list(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, never))
            if best not in self.ranks:
                break  # no adjacent pair was ever merged: done
            symbols = merge_pair(symbols, best)
        return symbols

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, eot_id={self.eot_id})"


def merge_pair(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    """`symbols` with every occurrence of `pair` joined, left to right: (a, a) turns "a a a" into "aa a"."""
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _token_bytes(token: str, special: bool) -> bytes:
    """The bytes a vocabulary entry stands for: a special token is its own text; others are byte symbols."""
    if special:
        return token.encode("utf-8")
    return bytes(CHAR_TO_BYTE[c] for c in token)


def _check_vocab(vocab: dict, merges: list, special: dict) -> None:
    """Clear errors for files that do not fit together, instead of a KeyError deep inside encode."""
    ids = list(vocab.values())
    bad = [(t, i) for t, i in vocab.items() if not (isinstance(i, int) and not isinstance(i, bool) and i >= 0)]
    if bad:
        raise ValueError(f"vocab: every id must be a non-negative integer; token {bad[0][0]!r} has {bad[0][1]!r}")
    if len(set(ids)) != len(ids):
        raise ValueError("vocab: two tokens share one id")
    for b, c in BYTE_TO_CHAR.items():
        if c not in vocab:
            raise ValueError(f"vocab: the symbol {c!r} for byte {b} is missing (a byte-level vocab has all 256)")
    for token in vocab:
        if token not in special and any(c not in CHAR_TO_BYTE for c in token):
            raise ValueError(f"vocab: token {token!r} is neither a special token nor made of byte symbols")
    for rank, (a, b) in enumerate(merges):
        for t in (a, b, a + b):
            if t not in vocab:
                raise ValueError(f"merges: pair {rank} ({a!r} {b!r}) uses {t!r}, which is not in the vocabulary")
