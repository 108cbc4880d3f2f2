"""Language-model batches from raw text: predict every next token of a random window.

All documents are tokenized and joined into one stream t_0 t_1 ... t_{N-1}
(with <|endoftext|> after each document when the tokenizer has it). A batch is
B windows of T + 1 consecutive tokens at random starts s, T = block_size:

    x[b] = t[s_b     : s_b + T]        # (B, T) int64, the model's input
    y[b] = t[s_b + 1 : s_b + T + 1]    # (B, T) int64, y[b, i] is the token after x[b, i]

so one window trains T predictions at once (a causal model sees x[b, :i+1]
when it predicts y[b, i]).

Train/validation split: the stream is cut into chunks of `chunk_size` tokens
and a random `val_fraction` of the chunks (chosen by `seed`) is held out.
Windows never cross a chunk boundary, so no validation token is ever a
training input or target. Chunks rather than one tail block, so validation
covers the whole corpus, not only its last file.

Batches are host NumPy arrays and every draw comes from a generator seeded
explicitly, so the same seed gives the same batches; the training loop turns
them into tensors on its device.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from tinylora.io import FileFormatError

TEXT_PATTERNS = ("*.txt", "*.py")  # what a folder is searched for (recursively) when no pattern is given


def read_text(path) -> str:
    """A file's text, decoded as UTF-8 (a leading byte-order mark is dropped).

    Bytes that are not UTF-8 are an error that names the file, the byte offset and the line
    (FileFormatError), never silently replaced: convert the file first (iconv -f latin1 -t utf-8).
    """
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise FileFormatError(
            f"{path}: not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} (line {line}); "
            "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8) or leave it out") from None


def text_files(path, pattern: str | None = None) -> list[Path]:
    """The files `read_documents` reads: a file, a folder's files (recursively, *.txt and *.py or
    `pattern`), or a glob's matches, in sorted path order."""
    path_str = str(path)
    if any(c in path_str for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(path_str, recursive=True) if Path(f).is_file())
        if not files:
            raise FileNotFoundError(f"no files match the glob {path_str!r}")
        return files
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_file():
        return [path]
    patterns = [pattern] if pattern else list(TEXT_PATTERNS)
    files = sorted({f for p in patterns for f in path.rglob(p) if f.is_file()})
    if not files:
        raise FileNotFoundError(f"folder {path} has no files matching {' or '.join(patterns)} (recursively)")
    return files


def read_documents(path, pattern: str | None = None) -> list[str]:
    """The texts of a file, of a folder's files (recursively, *.txt and *.py or `pattern`), or of a glob.

    read_documents("input.txt"); read_documents("corpus/"); read_documents("corpus/", "*.md");
    read_documents("corpus/**/*.md"). Files are read in sorted path order, as UTF-8 (read_text).
    """
    files = text_files(path, pattern)
    docs = [read_text(f) for f in files]
    if not any(docs):
        raise ValueError(f"{path}: the {len(files)} file(s) found are all empty")
    return [d for d in docs if d]


def tokenize_documents(docs: list[str], tokenizer) -> np.ndarray:
    """One int64 token stream: each document's ids, followed by the end-of-text id if the tokenizer has one."""
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc))
        if tokenizer.eot_id is not None:
            ids.append(tokenizer.eot_id)
    return np.asarray(ids, dtype=np.int64)  # (N,)


def split_tokens(tokens, val_fraction: float, chunk_size: int, seed: int = 0):
    """Cut `tokens` into chunks of `chunk_size` and hold out a random `val_fraction` of them.

    Returns (train_chunks, val_chunks), two lists of 1-D arrays in stream order.
    With val_fraction > 0 at least one chunk goes to each side.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    chunks = [tokens[i : i + chunk_size] for i in range(0, len(tokens), chunk_size)]
    if val_fraction == 0.0:
        return chunks, []
    if len(chunks) < 2:
        raise ValueError(
            f"cannot split {len(tokens)} tokens into train and validation: they fill only one chunk of "
            f"{chunk_size}; use more text, a smaller block_size, or no validation (val_fraction=0, --val-fraction 0)"
        )
    n_val = min(max(1, round(val_fraction * len(chunks))), len(chunks) - 1)
    held_out = set(np.random.default_rng(seed).choice(len(chunks), size=n_val, replace=False).tolist())
    train = [c for i, c in enumerate(chunks) if i not in held_out]
    val = [c for i, c in enumerate(chunks) if i in held_out]
    return train, val


class TextDataset:
    """Random next-token windows from one token array or a list of them (windows stay inside each)."""

    def __init__(self, segments, block_size: int):
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if isinstance(segments, np.ndarray) and segments.ndim == 1:
            segments = [segments]
        segments = [np.asarray(s, dtype=np.int64) for s in segments]
        self.block_size = block_size
        self.tokens = np.concatenate(segments) if segments else np.zeros(0, dtype=np.int64)  # (N,)
        # every valid window start, as a position in self.tokens: a window needs block_size + 1 tokens
        starts, offset = [], 0
        for s in segments:
            starts.append(offset + np.arange(max(len(s) - block_size, 0)))
            offset += len(s)
        self.starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        if len(self.starts) == 0:
            longest = max((len(s) for s in segments), default=0)
            raise ValueError(
                f"no window of block_size + 1 = {block_size + 1} tokens fits: the longest text piece has {longest} tokens"
            )

    def __len__(self) -> int:
        """The number of distinct windows."""
        return len(self.starts)

    def get_batch(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), both (batch_size, block_size) int64, from windows drawn with `rng`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        s = self.starts[rng.integers(0, len(self.starts), size=batch_size)]  # (B,)
        window = self.tokens[s[:, None] + np.arange(self.block_size + 1)]  # (B, T+1)
        return window[:, :-1].copy(), window[:, 1:].copy()  # x (B, T), y (B, T)

    def batches(self, batch_size: int, seed: int):
        """An endless iterator of (x, y) batches; the same seed gives the same batches."""
        rng = np.random.default_rng(seed)
        while True:
            yield self.get_batch(batch_size, rng)


def load_text_dataset(
    path, tokenizer, block_size: int, val_fraction: float = 0.1, seed: int = 0,
    pattern: str | None = None, chunk_size: int | None = None,
):
    """Read, tokenize and split text into (train, val) TextDatasets (val is None when val_fraction = 0).

    chunk_size (the split unit) defaults to 8 * (block_size + 1) tokens: large enough that
    few windows are lost at chunk edges, small enough that validation samples the whole corpus.
    """
    tokens = tokenize_documents(read_documents(path, pattern), tokenizer)
    chunk_size = chunk_size or 8 * (block_size + 1)
    if chunk_size < block_size + 1:
        raise ValueError(f"chunk_size={chunk_size} is smaller than one window (block_size + 1 = {block_size + 1})")
    if len(tokens) < block_size + 1:  # said in the user's terms, naming the file, before the datasets' own checks
        raise ValueError(f"{path} is too short to train on: {len(tokens)} tokens, and every training example is "
                         f"{block_size + 1} consecutive tokens (the model's context of {block_size} and the next "
                         f"token); give at least {block_size + 1} tokens of text")
    if val_fraction and len(tokens) <= chunk_size:
        raise ValueError(f"cannot split {path} ({len(tokens)} tokens) into train and validation: holding some out "
                         f"needs more than {chunk_size} tokens ({8} examples' worth); give more text, or pass "
                         "--val-fraction 0 (val_fraction=0) to train on all of it")
    train, val = split_tokens(tokens, val_fraction, chunk_size, seed)
    return TextDataset(train, block_size), (TextDataset(val, block_size) if val else None)

