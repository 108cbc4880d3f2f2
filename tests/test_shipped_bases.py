"""The bases shipped in the package (tinylora/assets/): each loads, is what its README says, and
base-mini-384's context holds E2E rows that base-mini's 256 bytes cannot.

Real E2E rows ("MR || reference" and the end token) are at most 544 bytes, 95% of them at most 338;
a 384-byte context holds 99.5% of the dev set, a 256-byte one 53%. The generated E2E-style rows of
tinylora.data.e2e have the same spread of lengths, so they stand in for the real ones here.
"""

import json
import re

import numpy as np
import pytest

from tinylora.data import PairDataset, make_e2e
from tinylora.data.pairs import read_e2e_csv
from tinylora.data.e2e import write_e2e
from tinylora.model.load import ASSETS, SHIPPED, load_model

ASSETS_README = open(f"{ASSETS}/README.md", encoding="utf-8").read()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_shipped_base_is_what_the_assets_readme_says(name):
    model, tokenizer = load_model(name)
    section = ASSETS_README.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
    stated = re.search(r"([\d,]+) parameters", section).group(1)
    assert model.num_parameters() == int(stated.replace(",", "")), f"{name}: the README says {stated} parameters"
    assert f"context {model.config.block_size}" in section, f"{name}: the README states another context"
    assert tokenizer.vocab_size == model.config.vocab_size == 257  # bytes + <|endoftext|>
    assert all(np.isfinite(p.detach().numpy()).all() for p in model.parameters())
    recorded = json.loads(open(f"{SHIPPED[name]}/config.json", encoding="utf-8").read())["pretrain"]
    assert recorded["command"].startswith("tinylora pretrain") and recorded["val_loss"] < 1.6


def _long_rows(low: int, high: int) -> list:
    """Generated E2E rows whose 'MR || reference' is between `low` and `high` bytes."""
    rows = [r for r in make_e2e(600, seed=3) if low <= len(f"{r['mr']} || {r['ref']}".encode()) <= high]
    assert len(rows) >= 10, "the generator should give some long rows"
    return rows


def test_base_mini_384_holds_rows_that_base_mini_must_skip(tmp_path):
    rows = _long_rows(300, 383)  # 95% of real E2E rows are at most 338 bytes
    path = tmp_path / "long.csv"
    write_e2e(rows, path)  # the real E2E CSV's columns, mr and ref
    pairs = read_e2e_csv(path)  # prompt "MR ||", completion " reference"
    model, tokenizer = load_model("base-mini-384")
    assert len(PairDataset(pairs, tokenizer, model.config.block_size)) == len(pairs)  # every row kept
    model, tokenizer = load_model("base-mini")
    with pytest.raises(ValueError, match="none of the .* examples fits in block_size \\+ 1 = 257 tokens.*longer context"):
        PairDataset(pairs, tokenizer, model.config.block_size)


def test_base_mini_384_predicts_text_like_base_mini():
    """Same recipe, longer context: on Python source the two bases' losses are close."""
    from tinylora import no_grad, tensor

    text = open(make_e2e.__code__.co_filename, encoding="utf-8").read().encode()[:4097]
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
    losses = {}
    for name in ("base-mini", "base-mini-384"):
        model, _ = load_model(name)
        x = ids[:256 * 16].reshape(16, 256)
        y = ids[1:256 * 16 + 1].reshape(16, 256)
        with no_grad():
            losses[name] = float(model(tensor(x), tensor(y))[1].item())
    assert abs(losses["base-mini"] - losses["base-mini-384"]) < 0.3, losses
