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

An example longer than block_size + 1 tokens loses tokens from the *start of
its prompt* (with a warning): the completion is what is learned, and the end
of the prompt is what it follows from. If even the completion and end token do
not fit, loading fails instead of silently dropping the example.

Files:  JSONL, one {"prompt": ..., "completion": ...} per line;
        CSV with the E2E NLG columns `mr` (meaning representation) and `ref` (a
        reference text), turned into prompt "mr ||" and completion " ref".
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np

IGNORE_INDEX = -100  # the target value that F.cross_entropy skips
E2E_SEPARATOR = " ||"  # ends an E2E prompt, so the model knows the text starts next


def e2e_pair(mr: str, ref: str) -> dict:
    """An E2E (mr, ref) row as a prompt/completion pair: "name[X], ... ||" -> " X is a ..."."""
    return {"prompt": mr + E2E_SEPARATOR, "completion": " " + ref}


def read_jsonl(path) -> list[dict]:
    """Pairs from a JSONL file: one object per line with string fields "prompt" and "completion"."""
    path = _existing_file(path)
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue  # blank lines are allowed
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_no}: not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in ("prompt", "completion")):
                raise ValueError(f"{path}, line {line_no}: expected an object with string 'prompt' and 'completion'")
            pairs.append({"prompt": obj["prompt"], "completion": obj["completion"]})
    if not pairs:
        raise ValueError(f"{path} holds no examples")
    return pairs


def read_e2e_csv(path) -> list[dict]:
    """Pairs from a CSV file with the E2E NLG columns `mr` and `ref` (other columns are ignored)."""
    path = _existing_file(path)
    pairs = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"mr", "ref"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; the header has {reader.fieldnames}")
        for row in reader:
            if not row["mr"] or not row["ref"]:
                raise ValueError(f"{path}, line {reader.line_num}: empty 'mr' or 'ref'")
            pairs.append(e2e_pair(row["mr"], row["ref"]))
    if not pairs:
        raise ValueError(f"{path} holds no examples")
    return pairs


def read_pairs(path) -> list[dict]:
    """Pairs from a .jsonl or .csv file, chosen by the file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".csv":
        return read_e2e_csv(path)
    raise ValueError(f"{path}: unknown pairs format {suffix!r}; use .jsonl (prompt/completion) or .csv (mr/ref)")


def write_jsonl(pairs, path) -> None:
    """Write pairs as JSONL, one {"prompt": ..., "completion": ...} per line."""
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps({"prompt": p["prompt"], "completion": p["completion"]}, ensure_ascii=False) + "\n")


def encode_pair(tokenizer, prompt: str, completion: str, block_size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(x, y, truncated) for one example; x and y are (L,) int64 with L <= block_size (see the module doc)."""
    if tokenizer.eot_id is None:
        raise ValueError("prompt/completion data needs a tokenizer with an end-of-text token (eot_id is None)")
    p, c = tokenizer.encode(prompt), tokenizer.encode(completion)
    if not p:  # empty prompt: the end token serves as a start token, so the first completion token is a target
        p = [tokenizer.eot_id]
    if len(c) + 1 > block_size:
        raise ValueError(
            f"the completion and end token take {len(c) + 1} tokens but block_size is {block_size}: "
            f"no room for the prompt (completion starts {completion[:40]!r})"
        )
    excess = len(p) + len(c) + 1 - (block_size + 1)  # tokens beyond the block_size + 1 that x and y need
    truncated = excess > 0
    if truncated:
        p = p[excess:]  # drop the start of the prompt, keep its end next to the completion
    ids = np.asarray(p + c + [tokenizer.eot_id], dtype=np.int64)  # (P + C + 1,)
    x, y = ids[:-1], ids[1:].copy()  # (L,), (L,)
    y[: max(len(p) - 1, 0)] = IGNORE_INDEX  # targets that are still prompt tokens
    return x, y, truncated


class PairDataset:
    """Tokenized prompt/completion examples and padded batches of them."""

    def __init__(self, pairs, tokenizer, block_size: int):
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("PairDataset needs at least one example")
        self.block_size = block_size
        self.pad_id = tokenizer.eot_id
        self.examples, cut = [], []
        for i, pair in enumerate(self.pairs):
            try:
                x, y, truncated = encode_pair(tokenizer, pair["prompt"], pair["completion"], block_size)
            except ValueError as err:
                raise ValueError(f"example {i}: {err}") from None
            self.examples.append((x, y))
            if truncated:
                cut.append(i)
        if cut:
            warnings.warn(
                f"{len(cut)} of {len(self.pairs)} examples are longer than block_size + 1 = {block_size + 1} tokens; "
                f"the start of their prompts was cut off (first: example {cut[0]})",
                stacklevel=2,
            )
        self.truncated = cut  # indices of the examples whose prompts were shortened

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


def load_pairs(path, tokenizer, block_size: int) -> PairDataset:
    """read_pairs(path) tokenized into a PairDataset."""
    return PairDataset(read_pairs(path), tokenizer, block_size)


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path
