"""BLEU / ROUGE-L of greedy completions (tinylora/train/generation_metrics.py): known answers and grouping."""

import pytest
from conftest import require

from tinylora.train.generation_metrics import references_by_prompt, score


def test_repeated_prompts_pool_their_references_in_order():
    pairs = [{"prompt": "a ||", "completion": " one"}, {"prompt": "b ||", "completion": " two"},
             {"prompt": "a ||", "completion": " uno"}]
    assert references_by_prompt(pairs) == [("a ||", ["one", "uno"]), ("b ||", ["two"])]


def test_scores_have_their_known_values():
    require("sacrebleu"), require("rouge_score")
    refs = [["the red fox is a pub near the mill", "a pub"], ["cheap french food by the river"]]
    perfect = score(["the red fox is a pub near the mill", "cheap french food by the river"], refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge_l"] == pytest.approx(100.0)
    nothing = score(["zzz", "qqq"], refs)
    assert nothing["bleu"] == pytest.approx(0.0, abs=1e-6) and nothing["rouge_l"] == 0.0
    # ROUGE-L takes the best reference: "a pub" matches the second reference of the first prompt exactly
    assert score(["a pub"], [refs[0]])["rouge_l"] == pytest.approx(100.0)


def test_mismatched_lengths_are_one_error():
    require("sacrebleu"), require("rouge_score")
    with pytest.raises(ValueError, match="1 hypotheses for 2 reference lists"):
        score(["x"], [["a"], ["b"]])
