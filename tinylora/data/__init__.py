"""Data: token batches as host NumPy int64 arrays; the training loop moves them to its device.

    load_text_dataset(path, tokenizer, block_size)   (train, val) next-token windows   (text.py)
    load_pairs(path, tokenizer, block_size)           prompt/completion, loss on the completion   (pairs.py)
    make_e2e(n, seed), write_e2e(rows, path)          a generated E2E-style data-to-text task   (e2e.py)
    constant_sentence(mr), template_sentence(mr)      E2E outputs that learn nothing: the floor   (e2e_baselines.py)
"""

from tinylora.data.e2e import format_mr, make_e2e, parse_mr, write_e2e
from tinylora.data.e2e_baselines import constant_sentence, template_sentence
from tinylora.data.pairs import (
    IGNORE_INDEX,
    TOO_LONG,
    ExampleTooLong,
    PairDataset,
    e2e_pair,
    encode_pair,
    load_pairs,
    read_e2e_csv,
    read_jsonl,
    read_numbered_pairs,
    read_pairs,
    write_jsonl,
)
from tinylora.data.text import (
    TextDataset,
    load_text_dataset,
    read_documents,
    read_text,
    split_tokens,
    text_files,
    tokenize_documents,
)

__all__ = [
    "IGNORE_INDEX", "TOO_LONG", "ExampleTooLong", "PairDataset", "TextDataset", "constant_sentence", "e2e_pair",
    "encode_pair",
    "format_mr", "load_pairs", "load_text_dataset", "make_e2e", "parse_mr", "read_documents", "read_e2e_csv",
    "read_jsonl", "read_numbered_pairs", "read_pairs", "read_text", "split_tokens", "text_files",
    "template_sentence", "tokenize_documents", "write_e2e", "write_jsonl",
]
