"""Tokenizers: byte round trips, GPT-2 byte-level BPE against Hugging Face `tokenizers`, and the BPE trainer.

No GPT-2 vocabulary can be downloaded, so a small one is trained here with
`train_bpe`, saved as vocab.json + merges.txt, and both tinylora and HF load
those same files.
"""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import require
from hypothesis import example, given
from hypothesis import strategies as st

from tinylora.data import make_e2e
from tinylora.tokenizers import EOT_TEXT, BPETokenizer, ByteTokenizer, bytes_to_unicode, load_tokenizer, train_bpe
from tinylora.tokenizers.bpe import BYTE_TO_CHAR, PRETOKENIZE

TRICKY = [
    "",
    "Hello world!",
    "I'm sure you'll say it's what they've done, isn't it? I'd LOVE 'quotes' 'S",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵",
    "日本語のテキスト、中文字符，한국어 텍스트",
    "tabs\tand\nnewlines\r\n\n\n  indented\n\tcode",
    "multiple     spaces   between    words     ",
    "   leading and trailing   ",
    "numbers 123 4567.89 ١٢٣ and units 5kg",
    "mixed: café naïve Ωmega ß straße ﬁ",
    "def f(x):\n    return x ** 2  # square\n",
    f"one document{EOT_TEXT}the next one{EOT_TEXT}",
    f"{EOT_TEXT}{EOT_TEXT} back to back, and a broken <|endoftext| token",
    "\u00a0non-breaking\u2003em space\u3000ideographic space\u200bzero width",
    "control \x00\x01\x1f\x7f bytes",
]


def _corpus() -> str:
    """A small but varied training text: E2E-style sentences, code, and the tricky strings."""
    refs = " ".join(row["ref"] for row in make_e2e(150, seed=0))
    code = "def forward(self, x):\n    return self.linear(x) * self.scaling\n" * 10
    return refs + "\n" + code + "\n".join(TRICKY * 3)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bpe")
    train_bpe(_corpus(), vocab_size=512).save(directory)
    return directory


@pytest.fixture(scope="module")
def bpe(bpe_dir):
    return BPETokenizer.from_directory(bpe_dir)


@pytest.fixture(scope="module")
def hf_bpe(bpe_dir):
    tokenizers = require("tokenizers")
    hf = tokenizers.ByteLevelBPETokenizer.from_file(str(bpe_dir / "vocab.json"), str(bpe_dir / "merges.txt"))
    hf.add_special_tokens([EOT_TEXT])
    return hf


# ------------------------------------------------------------------- bytes
@given(st.text())
def test_byte_round_trip_and_ids_are_utf8_bytes(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    if EOT_TEXT not in text:
        assert ids == list(text.encode("utf-8"))


def test_byte_end_of_text_token():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.eot_id) == (257, 256)
    ids = tok.encode(f"ab{EOT_TEXT}c")
    assert ids == [ord("a"), ord("b"), 256, ord("c")]
    assert tok.decode(ids) == f"ab{EOT_TEXT}c"

    plain = ByteTokenizer(eot=False)
    assert (plain.vocab_size, plain.eot_id) == (256, None)
    assert plain.encode(EOT_TEXT) == list(EOT_TEXT.encode())  # no special token: just its bytes
    with pytest.raises(ValueError, match="256"):
        plain.decode([256])


def test_byte_decode_replaces_a_cut_character_and_rejects_bad_ids():
    tok = ByteTokenizer()
    cut = tok.encode("é")[:1]  # the first of two UTF-8 bytes
    assert tok.decode(cut + tok.encode("x")) == "\ufffdx"
    for bad in (-1, 257, 1000):
        with pytest.raises(ValueError, match=str(bad)):
            tok.decode([bad])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")


# --------------------------------------------------------------- BPE basics
def test_bytes_to_unicode_is_gpt2s_printable_bijection():
    tokenizers = require("tokenizers")
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert all(c.isprintable() and not c.isspace() for c in mapping.values())
    assert all(mapping[b] == chr(b) for b in range(ord("!"), ord("~") + 1))  # printable ASCII stands for itself
    # HF's ByteLevel pre-tokenizer uses the same 256 characters
    assert set(mapping.values()) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())


def test_pretokenizer_keeps_spaces_with_the_next_word():
    assert PRETOKENIZE.findall("Hello world!  it's 42") == ["Hello", " world", "!", " ", " it", "'s", " 42"]


@given(st.text(max_size=80))
def test_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trips_tricky_strings(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_special_token_is_one_id(bpe):
    assert bpe.eot_id == bpe.vocab[EOT_TEXT] == bpe.vocab_size - 1
    a, b = bpe.encode("first"), bpe.encode("second")
    assert bpe.encode(f"first{EOT_TEXT}second") == a + [bpe.eot_id] + b
    assert bpe.decode([bpe.eot_id]) == EOT_TEXT


def test_bpe_compresses_frequent_words(bpe):
    word = " restaurant"  # hundreds of times in the corpus: one token
    assert len(bpe.encode(word)) == 1
    text = make_e2e(20, seed=99)[0]["ref"]
    assert len(bpe.encode(text)) < len(text.encode("utf-8")) / 2


def test_bpe_cache_does_not_change_results(bpe_dir):
    text = " ".join(TRICKY)
    warm = BPETokenizer.from_directory(bpe_dir)
    first = warm.encode(text)
    assert warm.encode(text) == first  # now served from the cache
    assert BPETokenizer.from_directory(bpe_dir).encode(text) == first  # a fresh (empty) cache


# --------------------------------------------------------- parity with HF
@pytest.mark.ref
@pytest.mark.parametrize("text", TRICKY)
def test_bpe_matches_hf_tokenizers_on_tricky_strings(bpe, hf_bpe, text):
    assert bpe.encode(text) == hf_bpe.encode(text).ids
    assert bpe.decode(hf_bpe.encode(text).ids) == text


@pytest.mark.ref
def test_bpe_matches_hf_tokenizers_on_the_training_text(bpe, hf_bpe):
    text = _corpus()
    assert bpe.encode(text) == hf_bpe.encode(text).ids


# Unassigned code points (category Cn) are left out: the `regex` package knows newer
# Unicode than HF's Oniguruma, so letters added since (e.g. U+088F) split differently.
@pytest.mark.ref
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cn")), max_size=80))
def test_bpe_matches_hf_tokenizers_on_random_text(bpe, hf_bpe, text):
    assert bpe.encode(text) == hf_bpe.encode(text).ids


@pytest.mark.ref
@given(st.lists(st.sampled_from(["a", "b", "ab", " ", "  ", "\n", "'s", "é", "😀", "1", EOT_TEXT]), max_size=30))
def test_bpe_matches_hf_tokenizers_on_runs_and_special_tokens(bpe, hf_bpe, parts):
    text = "".join(parts)
    assert bpe.encode(text) == hf_bpe.encode(text).ids


# ---------------------------------------------------------------- trainer
def _naive_merges(text: str, n_merges: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """BPE training the slow, obvious way: recount every pair after every merge."""
    words = Counter(PRETOKENIZE.findall(text))
    symbols = {w: [BYTE_TO_CHAR[b] for b in w.encode("utf-8")] for w in words}
    merges = []
    while len(merges) < n_merges:
        pairs = Counter()
        for w, n in words.items():
            for pair in zip(symbols[w], symbols[w][1:]):
                if pair not in merges:
                    pairs[pair] += n
        if not pairs:
            break
        best, count = min(pairs.items(), key=lambda item: (-item[1], item[0]))  # most frequent, then smallest
        if count < min_frequency:
            break
        merges.append(best)
        for w in words:
            s, out, i = symbols[w], [], 0
            while i < len(s):
                if s[i : i + 2] == list(best):
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            symbols[w] = out
    return merges


@given(st.text(alphabet="ab c\n'sé", max_size=60), st.integers(0, 20))
@example("ababa", 6)  # after merging (a, b), the heap still holds (b, a) with its old count 2: it must be skipped
def test_trainer_matches_naive_bpe(text, n_merges):
    tok = train_bpe(text, vocab_size=256 + n_merges + 1)
    assert tok.merges == _naive_merges(text, n_merges)


def test_trainer_vocab_layout_and_determinism():
    text = _corpus()
    tok = train_bpe(text, vocab_size=300)
    assert tok.vocab_size == 300 and len(tok.merges) == 300 - 256 - 1
    assert all(tok.vocab[BYTE_TO_CHAR[b]] == b for b in range(256))  # base ids are the bytes themselves
    assert tok.eot_id == 299
    for rank, (a, b) in enumerate(tok.merges):
        assert tok.vocab[a + b] >= 256  # every merge made a new token...
        assert tok.vocab[a] < tok.vocab[a + b] and tok.vocab[b] < tok.vocab[a + b]  # ...from older ones
    assert train_bpe(text, vocab_size=300).merges == tok.merges
    # the first merge is the most frequent adjacent pair of byte symbols
    pairs = Counter()
    for piece in PRETOKENIZE.findall(text.replace(EOT_TEXT, "")):
        s = [BYTE_TO_CHAR[b] for b in piece.encode("utf-8")]
        pairs.update(zip(s, s[1:]))
    assert pairs[tok.merges[0]] == max(pairs.values())


def test_trainer_stops_at_min_frequency_and_never_merges_across_special_tokens():
    tok = train_bpe(f"xy{EOT_TEXT}zw", vocab_size=1000)
    assert tok.merges == []  # every pair occurs once
    tok = train_bpe(f"ab{EOT_TEXT}ab", vocab_size=1000, min_frequency=1)
    assert ("b", "<") not in tok.merges and tok.merges == [("a", "b")]


def test_trainer_rejects_a_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size=200 is too small"):
        train_bpe("text", vocab_size=200)


# ------------------------------------------------------------------ errors
def test_bpe_file_errors(tmp_path, bpe_dir):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        BPETokenizer.from_directory(tmp_path / "nowhere")
    (tmp_path / "vocab.json").write_text((bpe_dir / "vocab.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        BPETokenizer.from_directory(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nr e\nthree parts here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        BPETokenizer.from_directory(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nq z\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'qz'"):
        BPETokenizer.from_directory(tmp_path)  # the merged token is not in the vocab


def test_bpe_rejects_an_incomplete_byte_vocab_and_bad_ids(bpe):
    vocab = {c: b for b, c in BYTE_TO_CHAR.items() if b != 7}
    with pytest.raises(ValueError, match="byte 7"):
        BPETokenizer(vocab, [])
    with pytest.raises(ValueError, match=str(bpe.vocab_size)):
        bpe.decode([bpe.vocab_size])


def test_load_tokenizer(bpe_dir, tmp_path):
    assert isinstance(load_tokenizer("byte"), ByteTokenizer)
    assert load_tokenizer(bpe_dir).encode("restaurant") == BPETokenizer.from_directory(bpe_dir).encode("restaurant")
    with pytest.raises(ValueError, match="unknown tokenizer"):
        load_tokenizer(tmp_path / "missing")
