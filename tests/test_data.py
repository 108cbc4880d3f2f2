"""Data: reading text, next-token windows, the train/validation split, prompt/completion masks, E2E files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinylora
import tinylora.functional as F
from tinylora.data import (
    IGNORE_INDEX,
    PairDataset,
    TextDataset,
    e2e_pair,
    encode_pair,
    format_mr,
    load_pairs,
    load_text_dataset,
    make_e2e,
    parse_mr,
    read_documents,
    read_e2e_csv,
    read_jsonl,
    read_pairs,
    split_tokens,
    tokenize_documents,
    write_e2e,
    write_jsonl,
)
from tinylora.data.e2e import NAMES, SLOTS
from tinylora.tokenizers import ByteTokenizer

TOK = ByteTokenizer()


# ----------------------------------------------------------- reading text
@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("first text", encoding="utf-8")
    (tmp_path / "sub" / "b.py").write_text("print('code')", encoding="utf-8")
    (tmp_path / "sub" / "deeper" / "c.txt").write_text("déjà vu", encoding="utf-8")
    (tmp_path / "notes.md").write_text("markdown", encoding="utf-8")
    return tmp_path


def test_read_documents_file_folder_pattern_and_glob(corpus):
    assert read_documents(corpus / "a.txt") == ["first text"]
    assert read_documents(corpus) == ["first text", "print('code')", "déjà vu"]  # sorted paths, recursive
    assert read_documents(corpus, pattern="*.md") == ["markdown"]
    assert read_documents(f"{corpus}/**/*.txt") == ["first text", "déjà vu"]


def test_read_documents_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_documents(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no files matching"):
        read_documents(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="glob"):
        read_documents(f"{tmp_path}/*.nothing")
    (tmp_path / "empty" / "blank.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_documents(tmp_path / "empty")


def test_tokenize_documents_puts_an_end_token_after_each_document():
    tokens = tokenize_documents(["ab", "c"], TOK)
    assert tokens.dtype == np.int64
    assert tokens.tolist() == [97, 98, TOK.eot_id, 99, TOK.eot_id]
    assert tokenize_documents(["ab", "c"], ByteTokenizer(eot=False)).tolist() == [97, 98, 99]


# ----------------------------------------------------- next-token windows
# With tokens 0, 1, 2, ... every token is its own position, so a window's content says where it came from.
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 30), st.integers(0, 2**31))
def test_text_batches_are_shifted_windows(batch_size, block_size, extra, seed):
    data = TextDataset(np.arange(block_size + 1 + extra), block_size)
    assert len(data) == extra + 1
    x, y = data.get_batch(batch_size, np.random.default_rng(seed))
    assert x.shape == y.shape == (batch_size, block_size)
    assert x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x, x[:, :1] + np.arange(block_size))  # consecutive tokens
    np.testing.assert_array_equal(y, x + 1)  # each target is the next token
    assert x.min() >= 0 and y.max() <= block_size + extra


def test_text_batches_are_deterministic_by_seed_and_cover_all_starts():
    data = TextDataset(np.arange(200), block_size=8)
    one, two, other = data.batches(4, seed=1), data.batches(4, seed=1), data.batches(4, seed=2)
    a = [next(one) for _ in range(3)]
    b = [next(two) for _ in range(3)]
    c = [next(other) for _ in range(3)]
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))
    starts = np.concatenate([data.get_batch(64, np.random.default_rng(s))[0][:, 0] for s in range(20)])
    assert set(starts.tolist()) == set(range(200 - 8))  # every window start is reachable, none beyond
    pieces = TextDataset([np.arange(10), np.arange(100, 112)], block_size=4)  # windows of 5 tokens in each piece
    starts = np.concatenate([pieces.get_batch(64, np.random.default_rng(s))[0][:, 0] for s in range(5)])
    assert set(starts.tolist()) == set(range(0, 6)) | set(range(100, 108))


@given(st.floats(0.05, 0.5), st.integers(0, 1000))
def test_split_holds_out_whole_chunks_and_windows_never_cross_them(val_fraction, seed):
    chunk, block = 20, 5
    train, val = split_tokens(np.arange(400), val_fraction, chunk, seed)
    n_val = len(val)
    assert n_val == max(1, round(val_fraction * 20)) and len(train) == 20 - n_val
    held = np.concatenate(val)
    assert np.intersect1d(held, np.concatenate(train)).size == 0
    assert sorted(np.concatenate([held, np.concatenate(train)]).tolist()) == list(range(400))
    for part in (TextDataset(train, block), TextDataset(val, block)):
        x, y = part.get_batch(32, np.random.default_rng(seed))
        assert np.all(x[:, 0] // chunk == y[:, -1] // chunk)  # a window's first input and last target share a chunk
    again, _ = split_tokens(np.arange(400), val_fraction, chunk, seed)
    assert all(np.array_equal(p, q) for p, q in zip(train, again))


def test_split_depends_on_the_seed_and_checks_its_arguments():
    held = {tuple(np.concatenate(split_tokens(np.arange(400), 0.2, 20, seed)[1]).tolist()) for seed in range(5)}
    assert len(held) > 1
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(np.arange(100), 1.0, 10)
    with pytest.raises(ValueError, match="only one chunk"):
        split_tokens(np.arange(10), 0.1, 10)
    train, val = split_tokens(np.arange(25), 0.0, 10)
    assert val == [] and [len(c) for c in train] == [10, 10, 5]


def test_text_dataset_errors():
    with pytest.raises(ValueError, match="block_size \\+ 1 = 11"):
        TextDataset(np.arange(10), block_size=10)
    with pytest.raises(ValueError, match="block_size"):
        TextDataset(np.arange(10), block_size=0)
    with pytest.raises(ValueError, match="batch_size"):
        TextDataset(np.arange(10), block_size=2).get_batch(0, np.random.default_rng(0))


def test_load_text_dataset_end_to_end(tmp_path):
    text = "".join(row["ref"] + "\n" for row in make_e2e(40, seed=0))
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    train, val = load_text_dataset(tmp_path, TOK, block_size=16, val_fraction=0.1, seed=0)
    n_tokens = len(text.encode("utf-8")) + 1  # plus the end token
    assert len(train.tokens) + len(val.tokens) == n_tokens
    assert 0.05 < len(val.tokens) / n_tokens < 0.15
    x, y = train.get_batch(3, np.random.default_rng(0))
    assert TOK.decode(x[0].tolist()) in text
    train2, none = load_text_dataset(tmp_path / "train.txt", TOK, block_size=16, val_fraction=0.0)
    assert none is None and len(train2.tokens) == n_tokens
    with pytest.raises(ValueError, match="chunk_size"):
        load_text_dataset(tmp_path, TOK, block_size=16, chunk_size=10)


# -------------------------------------------------- prompt / completion
def test_encode_pair_masks_the_prompt_and_ends_with_the_end_token():
    x, y, truncated = encode_pair(TOK, "Q: 2+2?", " A: 4", block_size=64)
    assert not truncated
    assert TOK.decode(x.tolist()) == "Q: 2+2? A: 4"
    assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (len("Q: 2+2? A: 4"),)
    assert np.sum(y == IGNORE_INDEX) == len("Q: 2+2?") - 1  # targets that are still prompt
    kept = y[y != IGNORE_INDEX].tolist()
    assert kept == TOK.encode(" A: 4") + [TOK.eot_id]  # the completion and the end token, nothing else
    np.testing.assert_array_equal(y[y != IGNORE_INDEX], np.append(x[len("Q: 2+2?") :], TOK.eot_id))


@given(st.text(max_size=30), st.text(min_size=1, max_size=20), st.integers(1, 40))
def test_encode_pair_properties(prompt, completion, block_size):
    c = TOK.encode(completion)
    if len(c) + 1 > block_size:
        with pytest.raises(ValueError, match="no room for the prompt"):
            encode_pair(TOK, prompt, completion, block_size)
        return
    p = TOK.encode(prompt) or [TOK.eot_id]  # an empty prompt is the end token, used as a start token
    x, y, truncated = encode_pair(TOK, prompt, completion, block_size)
    assert len(x) == len(y) <= block_size
    assert truncated == (len(p) + len(c) > block_size)
    assert y[y != IGNORE_INDEX].tolist() == c + [TOK.eot_id]  # the whole completion is always a target
    assert x.tolist() == (p + c)[-len(x) :]  # a cut removes the *start* of the prompt
    assert np.all(y[: len(x) - len(c) - 1] == IGNORE_INDEX)  # the prompt's targets, the last prompt token's excepted


def test_loss_falls_on_the_completion_only():
    """Cross-entropy with the masked targets equals the mean over completion positions by hand."""
    data = PairDataset([{"prompt": "abc", "completion": "de"}, {"prompt": "x", "completion": "yz!"}], TOK, 16)
    x, y = data.get_batch([0, 1])  # (2, 5)
    logits = np.random.default_rng(0).standard_normal((*x.shape, TOK.vocab_size))  # (B, L, V)
    loss = F.cross_entropy(tinylora.tensor(logits, dtype="float64"), y).item()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [-log_p[b, i, y[b, i]] for b in range(2) for i in range(x.shape[1]) if y[b, i] != IGNORE_INDEX]
    assert len(expected) == len("de") + 1 + len("yz!") + 1
    assert abs(loss - np.mean(expected)) < 1e-12  # float64 all the way


def test_pair_batches_pad_on_the_right():
    pairs = [{"prompt": "p", "completion": "long completion"}, {"prompt": "pp", "completion": "c"}]
    data = PairDataset(pairs, TOK, block_size=32)
    x, y = data.get_batch([0, 1])
    long_len = len("plong completion")
    assert x.shape == y.shape == (2, long_len) and x.dtype == y.dtype == np.int64
    short_len = len("ppc")
    assert np.all(x[1, short_len:] == TOK.eot_id) and np.all(y[1, short_len:] == IGNORE_INDEX)
    np.testing.assert_array_equal(x[1, :short_len], data.examples[1][0])


def test_pair_epochs_cover_every_example_once_and_are_deterministic():
    pairs = [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(10)]
    data = PairDataset(pairs, TOK, block_size=16)
    first = [x for x, _ in data.batches(3, seed=5)]
    assert [len(x) for x in first] == [3, 3, 3, 1]
    seen = sorted(TOK.decode(row[row != TOK.eot_id].tolist()) for x in first for row in x)
    assert seen == sorted(f"p{i} c{i}" for i in range(10))
    assert all(np.array_equal(a, b) for a, b in zip(first, (x for x, _ in data.batches(3, seed=5))))
    assert not all(np.array_equal(a, b) for a, b in zip(first, (x for x, _ in data.batches(3, seed=6))))
    assert [len(x) for x, _ in data.batches(3, drop_last=True)] == [3, 3, 3]


def test_too_long_truncate_cuts_long_prompts_with_a_warning_and_long_completions_fail():
    """too_long="truncate" (no longer the default: see test_too_long_examples_are_skipped_by_default)."""
    pairs = [{"prompt": "short", "completion": " ok"}, {"prompt": "a very long prompt " * 5, "completion": " kept"}]
    with pytest.warns(UserWarning, match="1 of 2 examples.*example 1"):
        data = PairDataset(pairs, TOK, block_size=20, too_long="truncate")
    assert data.truncated == [1]
    x, y = data.examples[1]
    assert len(x) == 20 and TOK.decode(x.tolist()).endswith("prompt  kept")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing too long: no warning
        PairDataset(pairs[:1], TOK, block_size=20)
    with pytest.raises(ValueError, match="example 1: .*block_size is 20"):
        PairDataset([pairs[0], {"prompt": "p", "completion": "x" * 20}], TOK, block_size=20, too_long="truncate")
    with pytest.raises(ValueError, match="end-of-text"):
        encode_pair(ByteTokenizer(eot=False), "p", "c", 8)


# -------------------------------------------------------------- files
def test_jsonl_round_trip_and_errors(tmp_path):
    pairs = [{"prompt": "héllo", "completion": " wörld"}, {"prompt": "a\nb", "completion": ' "q"'}]
    path = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, path)
    assert read_jsonl(path) == pairs == read_pairs(path)
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": oops}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: expected an object"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no examples"):
        read_jsonl(path)
    with pytest.raises(ValueError, match="unknown pairs format"):
        read_pairs(tmp_path / "pairs.txt")


def test_e2e_csv_has_mr_ref_columns_and_loads_like_the_jsonl(tmp_path):
    rows = make_e2e(12, seed=3, refs_per_mr=2)
    write_e2e(rows, tmp_path / "e2e.csv")
    write_e2e(rows, tmp_path / "e2e.jsonl")
    header = (tmp_path / "e2e.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "mr,ref"
    from_csv = read_e2e_csv(tmp_path / "e2e.csv")
    assert from_csv == read_jsonl(tmp_path / "e2e.jsonl") == [e2e_pair(r["mr"], r["ref"]) for r in rows]
    assert from_csv[0]["prompt"] == rows[0]["mr"] + " ||" and from_csv[0]["completion"] == " " + rows[0]["ref"]
    data = load_pairs(tmp_path / "e2e.csv", TOK, block_size=512)
    assert len(data) == 24
    (tmp_path / "bad.csv").write_text("meaning,text\na,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column"):
        read_e2e_csv(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("mr,ref\na,b\nc,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        read_e2e_csv(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="csv or .jsonl"):
        write_e2e(rows, tmp_path / "e2e.txt")


# --------------------------------------------------------------- E2E task
def test_make_e2e_is_deterministic_by_seed():
    assert make_e2e(30, seed=7) == make_e2e(30, seed=7)
    assert make_e2e(30, seed=7) != make_e2e(30, seed=8)
    rows = make_e2e(10, seed=1, refs_per_mr=3)
    assert len(rows) == 30
    assert all(rows[3 * i]["mr"] == rows[3 * i + 1]["mr"] == rows[3 * i + 2]["mr"] for i in range(10))
    assert make_e2e(0, seed=0) == []


def test_e2e_meaning_representations_look_like_the_real_ones():
    for row in make_e2e(300, seed=0):
        mr = parse_mr(row["mr"])
        assert format_mr(mr) == row["mr"]
        assert list(mr) == [s for s in SLOTS if s in mr]  # E2E's slot order
        assert 3 <= len(mr) <= 8 and "name" in mr
        assert mr["name"] in NAMES and mr.get("near") != mr["name"]
    assert {s for row in make_e2e(300, seed=0) for s in parse_mr(row["mr"])} == set(SLOTS)
    with pytest.raises(ValueError, match="meaning representation"):
        parse_mr("name[X], broken")


def test_every_e2e_reference_mentions_every_attribute():
    rows = make_e2e(400, seed=2)
    for row in rows:
        mr, ref = parse_mr(row["mr"]), row["ref"]
        low = ref.lower()
        assert ref[0].isupper() and ref.endswith(".")
        for slot, value in mr.items():
            if slot == "familyFriendly":
                assert any(w in low for w in ("family", "child", "kid")), row
                assert (" not " in low) == (value == "no"), row
            else:
                assert value.lower() in low, (slot, row)
    assert len({row["ref"] for row in rows}) == len(rows)  # varied wording: no two references alike
