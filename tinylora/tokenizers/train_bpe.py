"""Learn a byte-level BPE vocabulary (vocab.json + merges.txt, GPT-2's format) from text.

The training loop of byte-pair encoding:

    start from the 256 byte symbols; cut the text into pieces with GPT-2's pre-tokenizer
    repeat until the vocabulary is full:
        count every adjacent symbol pair inside every piece
        merge the most frequent pair (a, b) into a new symbol ab everywhere; record "a b"

Ties between equally frequent pairs go to the pair whose symbol strings sort
first, so training is deterministic. Identical pieces are counted once with a
weight (" the" x 5000), and after a merge only the pieces that contained the
pair are recounted, with a heap to find the most frequent pair: fast enough for
a few megabytes of text in pure Python.

Ids: 0..255 are the bytes in byte order (so a base token's id is its byte, as in
ByteTokenizer), then the merges in the order learned, then the special tokens
(<|endoftext|> last, as in GPT-2). The result is a `BPETokenizer`; `.save(dir)`
writes the two files.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict

from tinylora.tokenizers.bpe import BYTE_TO_CHAR, EOT_TEXT, PRETOKENIZE, BPETokenizer, merge_pair


def train_bpe(texts, vocab_size: int, special_tokens=(EOT_TEXT,), min_frequency: int = 2) -> BPETokenizer:
    """A BPE tokenizer with at most `vocab_size` tokens learned from `texts` (a str or an iterable of str).

    vocab_size = 256 bytes + number of merges + len(special_tokens). Training stops
    early when no pair occurs `min_frequency` times, so the vocabulary may be smaller.
    Special tokens written in the text are skipped, never merged with their neighbours.
    """
    if isinstance(texts, str):
        texts = [texts]
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        need = 256 + len(special_tokens)
        raise ValueError(f"vocab_size={vocab_size} is too small: the 256 bytes and the special tokens need {need}")

    words, counts = _count_pieces(texts, special_tokens)
    merges = _learn_merges(words, counts, n_merges, min_frequency)

    vocab = {c: b for b, c in BYTE_TO_CHAR.items()}  # id = byte value
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))  # two merge paths can spell the same token: keep the first id
    for s in special_tokens:
        vocab[s] = len(vocab)
    return BPETokenizer(vocab, merges, special_tokens=list(special_tokens))


def _count_pieces(texts, special_tokens) -> tuple[list[list[str]], list[int]]:
    """Each distinct pre-tokenized piece as a list of byte symbols, and how often it occurs."""
    longest_first = sorted(special_tokens, key=len, reverse=True)
    split = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
    pieces = Counter()
    for text in texts:
        for part in split.split(text) if split else [text]:
            pieces.update(PRETOKENIZE.findall(part))
    words = [[BYTE_TO_CHAR[b] for b in piece.encode("utf-8")] for piece in pieces]
    return words, list(pieces.values())


def _learn_merges(words: list[list[str]], counts: list[int], n_merges: int, min_frequency: int) -> list[tuple]:
    """Merge the most frequent adjacent pair `n_merges` times; `words` are updated in place."""
    pair_count = Counter()  # (a, b) -> occurrences, weighted by each word's count
    where = defaultdict(set)  # (a, b) -> indices of words that contain (or once contained) it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_count[pair] += counts[i]
            where[pair].add(i)
    # max-heap via negated counts; a popped entry whose count is out of date is skipped
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    learned = set()
    while heap and len(merges) < n_merges:
        negative, pair = heapq.heappop(heap)
        if -negative != pair_count.get(pair) or pair in learned:
            continue  # stale entry: the count has changed since it was pushed
        if -negative < min_frequency:
            break
        merges.append(pair)
        learned.add(pair)
        touched = set()
        for i in where.pop(pair):
            old, new = words[i], merge_pair(words[i], pair)
            for p in zip(old, old[1:]):  # remove the word's old pairs ...
                pair_count[p] -= counts[i]
                touched.add(p)
            for p in zip(new, new[1:]):  # ... and add its new ones
                pair_count[p] += counts[i]
                where[p].add(i)
                touched.add(p)
            words[i] = new
        for p in touched:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                del pair_count[p]
    return merges

