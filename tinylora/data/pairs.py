"""Prompt/completion pairs for fine-tuning: the loss falls on the completion only.

One example is the token sequence

    ids = prompt (P tokens) + completion (C tokens) + <|endoftext|>
    x = ids[:-1]                                  # (L,)  L = P + C, the model's input
    y = ids[1:], with y[i] = -100 for i < P - 1   # (L,)  targets: -100 where x[i+1] is still prompt

so the model is never trained to predict the prompt, only the completion and
the end token that teaches it to stop (-100 is `ignore_index` of
F.cross_entropy, whose mean counts kept targets only). An empty prompt becomes
the end token alone, which then acts as a start token: every completion token,
the first included, is a target.

A batch pads every example on the right to the longest one: x with the end
token (any valid id works: those positions are ignored), y with -100.
A causal model's outputs at real positions never see the padding after them.

An example longer than block_size + 1 tokens is handled by one policy, `too_long`
(the command's --too-long), never silently:

    "skip"      (default) leave it out; one warning says how many, and names the first by file line
    "truncate"  cut tokens from the *start of its prompt* (one warning): the completion is what is
                learned and the end of the prompt is what it follows from; an example whose
                completion and end token alone do not fit is still an error
    "error"     stop at the first one, naming it

Skipping is the default because a cut prompt usually loses what the completion is about (in
E2E, the restaurant's name comes first).

Files:  JSONL, one {"prompt": ..., "completion": ...} per line;
        CSV with the E2E NLG columns `mr` (meaning representation) and `ref` (a
        reference text), turned into prompt "mr ||" and completion " ref".
Both are read as UTF-8 (a byte-order mark is allowed; other bytes are an error naming the
file and offset), and a bad line is an error naming the file and line.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np

from tinylora.data.text import read_text
from tinylora.io import parse_json

IGNORE_INDEX = -100  # the target value that F.cross_entropy skips
E2E_SEPARATOR = " ||"  # ends an E2E prompt, so the model knows the text starts next
TOO_LONG = ("skip", "truncate", "error")  # what PairDataset does with an example longer than block_size + 1


class ExampleTooLong(ValueError):
    """One example does not fit the model's context; `n_tokens` is how many tokens it needs."""

    def __init__(self, message: str, n_tokens: int):
        super().__init__(message)
        self.n_tokens = n_tokens


def e2e_pair(mr: str, ref: str) -> dict:
    """An E2E (mr, ref) row as a prompt/completion pair: "name[X], ... ||" -> " X is a ..."."""
    return {"prompt": mr + E2E_SEPARATOR, "completion": " " + ref}


def read_jsonl(path) -> list[dict]:
    """Pairs from a JSONL file: one object per line with string fields "prompt" and "completion"."""
    return _numbered_jsonl(path)[0]


def read_e2e_csv(path) -> list[dict]:
    """Pairs from a CSV file with the E2E NLG columns `mr` and `ref` (other columns are ignored)."""
    return _numbered_csv(path)[0]


def read_pairs(path) -> list[dict]:
    """Pairs from a .jsonl or .csv file, chosen by the file's suffix."""
    return read_numbered_pairs(path)[0]


def read_numbered_pairs(path) -> tuple[list[dict], list[str]]:
    """(pairs, where): read_pairs(path) and, for each pair, "FILE, line N" (the line its row starts on)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        pairs, lines = _numbered_jsonl(path)
    elif suffix == ".csv":
        pairs, lines = _numbered_csv(path)
    else:
        raise ValueError(f"{path}: unknown pairs format {suffix!r}; use .jsonl (prompt/completion) or .csv (mr/ref)")
    return pairs, [f"{path}, line {n}" for n in lines]


def _numbered_jsonl(path) -> tuple[list[dict], list[int]]:
    path = _existing_file(path)
    pairs, lines = [], []
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue  # blank lines are allowed
        obj = parse_json(line, f"{path}, line {line_no}")
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("prompt", "completion")):
            raise ValueError(f"{path}, line {line_no}: expected an object with string 'prompt' and 'completion'")
        pairs.append({"prompt": obj["prompt"], "completion": obj["completion"]})
        lines.append(line_no)
    if not pairs:
        raise ValueError(f"{path} holds no examples")
    return pairs, lines


def _numbered_csv(path) -> tuple[list[dict], list[int]]:
    path = _existing_file(path)
    pairs, lines = [], []
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    start = 1  # the line the current row starts on
    try:
        missing = {"mr", "ref"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; the header has {reader.fieldnames}")
        start = reader.line_num + 1  # a row may span lines (a quoted newline): name the line it starts on
        for row in reader:
            if not row["mr"] or not row["ref"]:
                raise ValueError(f"{path}, line {start}: empty 'mr' or 'ref'")
            pairs.append(e2e_pair(row["mr"], row["ref"]))
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(f"{path}, line {start}: not valid CSV ({err})") from None
    if not pairs:
        raise ValueError(f"{path} holds no examples")
    return pairs, lines


def write_jsonl(pairs, path) -> None:
    """Write pairs as JSONL, one {"prompt": ..., "completion": ...} per line."""
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps({"prompt": p["prompt"], "completion": p["completion"]}, ensure_ascii=False) + "\n")


def encode_pair(tokenizer, prompt: str, completion: str, block_size: int,
                cut_prompt: bool = True) -> tuple[np.ndarray, np.ndarray, bool]:
    """(x, y, truncated) for one example; x and y are (L,) int64 with L <= block_size (see the module doc).

    An example longer than block_size + 1 tokens has the start of its prompt cut if `cut_prompt`;
    otherwise, or if the completion and end token alone do not fit, ExampleTooLong is raised.
    """
    if tokenizer.eot_id is None:
        raise ValueError("prompt/completion data needs a tokenizer with an end-of-text token (eot_id is None)")
    p, c = tokenizer.encode(prompt), tokenizer.encode(completion)
    if not p:  # empty prompt: the end token serves as a start token, so the first completion token is a target
        p = [tokenizer.eot_id]
    n_tokens = len(p) + len(c) + 1
    if len(c) + 1 > block_size:
        raise ExampleTooLong(
            f"the completion and end token take {len(c) + 1} tokens but block_size is {block_size}: "
            f"no room for the prompt (completion starts {completion[:40]!r})", n_tokens)
    excess = n_tokens - (block_size + 1)  # tokens beyond the block_size + 1 that x and y need
    truncated = excess > 0
    if truncated and not cut_prompt:
        raise ExampleTooLong(f"prompt, completion and end token take {n_tokens} tokens but only "
                             f"block_size + 1 = {block_size + 1} fit", n_tokens)
    if truncated:
        p = p[excess:]  # drop the start of the prompt, keep its end next to the completion
    ids = np.asarray(p + c + [tokenizer.eot_id], dtype=np.int64)  # (P + C + 1,)
    x, y = ids[:-1], ids[1:].copy()  # (L,), (L,)
    y[: max(len(p) - 1, 0)] = IGNORE_INDEX  # targets that are still prompt tokens
    return x, y, truncated


class PairDataset:
    """Tokenized prompt/completion examples and padded batches of them.

    too_long: "skip" (default), "truncate" or "error", for examples longer than block_size + 1
        tokens (module docstring). Skipped ones are listed in `skipped` as (where, tokens needed).
    where: a name per pair for messages, such as "data.csv, line 1253" (default "example i").
    """

    def __init__(self, pairs, tokenizer, block_size: int, too_long: str = "skip", where=None):
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if too_long not in TOO_LONG:
            raise ValueError(f"too_long must be one of {TOO_LONG}, got {too_long!r}")
        pairs = list(pairs)
        if not pairs:
            raise ValueError("PairDataset needs at least one example")
        where = list(where) if where is not None else [f"example {i}" for i in range(len(pairs))]
        self.block_size = block_size
        self.pad_id = tokenizer.eot_id
        self.pairs, self.where, self.examples = [], [], []
        self.truncated = []  # indices (into the kept examples) whose prompts were shortened
        self.skipped = []  # (where, tokens needed) of the examples left out
        for name, pair in zip(where, pairs):
            try:
                x, y, cut = encode_pair(tokenizer, pair["prompt"], pair["completion"], block_size,
                                        cut_prompt=too_long == "truncate")
            except ExampleTooLong as err:
                if too_long != "skip":
                    raise ValueError(f"{name}: {err}") from None
                self.skipped.append((name, err.n_tokens))
                continue
            if cut:
                self.truncated.append(len(self.examples))
            self.pairs.append(pair)
            self.where.append(name)
            self.examples.append((x, y))
        self._report(len(pairs))

    def _report(self, n: int) -> None:
        """One warning line for what the too_long policy did (nothing when every example fit)."""
        fit = f"block_size + 1 = {self.block_size + 1} tokens"
        if self.skipped and not self.examples:
            raise ValueError(f"none of the {n} examples fits in {fit} (first: {self.skipped[0][0]}, "
                             f"{self.skipped[0][1]} tokens); use a model with a longer context or shorter examples")
        if self.skipped:
            name, tokens = self.skipped[0]
            warnings.warn(f"skipped {len(self.skipped)} of {n} examples longer than {fit} (first: {name}, "
                          f"{tokens} tokens); too_long='truncate' (--too-long truncate) keeps them with the start "
                          "of their prompts cut off", stacklevel=3)
        if self.truncated:
            warnings.warn(f"{len(self.truncated)} of {n} examples are longer than {fit}; the start of their "
                          f"prompts was cut off (first: {self.where[self.truncated[0]]})", stacklevel=3)

    def subset(self, indices) -> "PairDataset":
        """The examples at `indices` (already encoded), e.g. a train/validation split."""
        indices = [int(i) for i in indices]
        part = copy.copy(self)
        part.pairs = [self.pairs[i] for i in indices]
        part.where = [self.where[i] for i in indices]
        part.examples = [self.examples[i] for i in indices]
        kept = set(self.truncated)
        part.truncated = [j for j, i in enumerate(indices) if i in kept]
        part.skipped = []
        return part

    def __len__(self) -> int:
        return len(self.examples)

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), both (B, L) int64, L = the longest example among `indices`; padding: x = end token, y = -100."""
        rows = [self.examples[int(i)] for i in indices]
        length = max(len(x) for x, _ in rows)
        x = np.full((len(rows), length), self.pad_id, dtype=np.int64)  # (B, L)
        y = np.full((len(rows), length), IGNORE_INDEX, dtype=np.int64)  # (B, L)
        for b, (xb, yb) in enumerate(rows):
            x[b, : len(xb)] = xb
            y[b, : len(yb)] = yb
        return x, y

    def batches(self, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = False):
        """One epoch of (x, y) batches, in an order shuffled by `seed` (use seed + epoch for the next epoch)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            yield self.get_batch(order[start : start + batch_size])


def load_pairs(path, tokenizer, block_size: int, too_long: str = "skip") -> PairDataset:
    """read_pairs(path) tokenized into a PairDataset whose examples are named by file line."""
    pairs, where = read_numbered_pairs(path)
    return PairDataset(pairs, tokenizer, block_size, too_long=too_long, where=where)


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path
