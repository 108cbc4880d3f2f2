"""`tinylora analyze` over seeds (tinylora/cli/analyze.py): the ranks it compares, spreads, saved adapters."""

import json

import numpy as np
import pytest

from tinylora.analysis import phi_grid
from tinylora.analysis.sweep import load_updates
from tinylora.cli.analyze import check_seeds, figure3_ranks, spread
from tinylora.cli import main
from tinylora.model.load import load_model


@pytest.mark.parametrize("ranks, pair", [((1, 2, 4, 8, 16, 64), (8, 64)), ((1, 4, 8), (4, 8)), ((2, 8), (2, 8)),
                                         ((64, 8, 16), (8, 64)), ((1, 16, 32), (16, 32))])
def test_figure3_compares_two_different_ranks(ranks, pair):
    assert figure3_ranks(ranks) == pair


def test_one_rank_or_one_seed_is_one_error():
    with pytest.raises(ValueError, match="--ranks needs at least two different ranks"):
        figure3_ranks((8, 8))
    with pytest.raises(ValueError, match="--seeds needs at least two different seeds"):
        check_seeds([3])


def test_spread_is_mean_and_sample_sd():
    entry = spread([1.0, 2.0, 3.0])
    assert entry["mean"] == 2.0 and entry["sd"] == pytest.approx(1.0) and entry["values"] == [1.0, 2.0, 3.0]


@pytest.mark.slow
def test_analyze_saves_its_adapters_and_its_numbers_recompute_from_them(tmp_path, capsys):
    out = tmp_path / "an"
    code = main(["analyze", "--out", str(out), "--ranks", "4,8", "--seeds", "0,1", "--steps", "2",
                 "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    report = (out / "RESULTS.md").read_text()
    assert results["figure3_ranks"] == [4, 8] and "φ(A_{r=4}, A_{r=8}, i, j)" in report
    assert "r=64" not in report and "nan" not in report.lower(), report
    assert results["provenance"]["command"].startswith("tinylora analyze --out")
    assert sorted(results["table7"]) == ["4", "8"]
    assert len(results["table7"]["4"]["amplification"]["values"]) == 2  # one per seed
    # Figure 3's φ(1, 1), recomputed from the saved adapters, is the reported one
    base, _ = load_model("base-mini")
    name = f"blocks.{results['layer']}.attn.q"
    phis = []
    for seed in (0, 1):
        small = load_updates(out / "adapters" / f"seed{seed}_r4.safetensors", base)[name]["A"]
        large = load_updates(out / "adapters" / f"seed{seed}_r8.safetensors", base)[name]["A"]
        phis.append(phi_grid(small, large)[0, 0])
    assert results["figure3"]["q"]["phi_1_1"]["values"] == pytest.approx(phis, abs=1e-5)
    assert np.array(results["figure3"]["q"]["phi"]).shape == (4, 8)
