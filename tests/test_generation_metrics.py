"""BLEU / ROUGE-L of greedy completions (tinylora/train/generation_metrics.py): known answers and grouping."""

import json
import math
import sys
from collections import Counter

import pytest
from conftest import require

from tinylora.train.generation_metrics import bleu, lcs_length, references_by_prompt, rouge_l, rouge_l_one, score


def test_repeated_prompts_pool_their_references_in_order():
    pairs = [{"prompt": "a ||", "completion": " one"}, {"prompt": "b ||", "completion": " two"},
             {"prompt": "a ||", "completion": " uno"}]
    assert references_by_prompt(pairs) == [("a ||", ["one", "uno"]), ("b ||", ["two"])]


def test_scores_have_their_known_values():
    require("sacrebleu")
    refs = [["the red fox is a pub near the mill", "a pub"], ["cheap french food by the river"]]
    perfect = score(["the red fox is a pub near the mill", "cheap french food by the river"], refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["rouge_l"] == pytest.approx(100.0)
    nothing = score(["zzz", "qqq"], refs)
    assert nothing["bleu"] == pytest.approx(0.0, abs=1e-6) and nothing["rouge_l"] == 0.0
    # ROUGE-L takes the best reference: "a pub" matches the second reference of the first prompt exactly
    assert score(["a pub"], [refs[0]])["rouge_l"] == pytest.approx(100.0)


def test_mismatched_lengths_are_one_error():
    with pytest.raises(ValueError, match="1 hypotheses for 2 reference lists"):
        score(["x"], [["a"], ["b"]])


# ---------------------------------------------------------------- BLEU as the E2E script computes it
OUTPUTS = ["The Eagle is a Coffee Shop near the river", "Cheap French food at the Mill in the city centre",
           "the wrestlers is a pub"]
REFERENCES = [["the eagle is a coffee shop by the river", "There is a coffee shop called The Eagle near the river"],
              ["The Mill serves cheap French food in the city centre"],
              ["The Wrestlers is a family friendly pub", "the wrestlers pub", "a pub called the wrestlers"]]


def _bleu_by_hand(outputs, references) -> float:
    """Corpus BLEU-4 written out from Papineni et al. (2002) as mteval-v13a computes it: lowercased words,
    each n-gram count clipped by its largest count in any one reference, the brevity penalty from the
    reference length closest to each output's (the shorter on a tie). Holds for text without punctuation,
    where 13a tokenization is splitting on spaces."""
    matched, total, out_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for out, refs in zip(outputs, references):
        words, ref_words = out.lower().split(), [r.lower().split() for r in refs]
        out_len += len(words)
        ref_len += min((abs(len(r) - len(words)), len(r)) for r in ref_words)[1]
        for n in range(1, 5):
            grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
            most = Counter()
            for r in ref_words:
                most |= Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matched[n - 1] += sum(min(c, most[g]) for g, c in grams.items())
            total[n - 1] += sum(grams.values())
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total)) / 4
    brevity = min(0.0, 1 - ref_len / out_len)
    return 100 * math.exp(log_precision + brevity)


def test_bleu_is_lowercased_and_equals_the_formula_written_out():
    sacrebleu = require("sacrebleu")
    expected = _bleu_by_hand(OUTPUTS, REFERENCES)
    assert 20 < expected < 80  # the set is neither trivial nor hopeless
    assert bleu(OUTPUTS, REFERENCES) == pytest.approx(expected, abs=0.01)
    # case matters to sacrebleu's default: the E2E script's lowercasing is what makes these equal
    cased = sacrebleu.corpus_bleu(OUTPUTS, [[r[i] if i < len(r) else None for r in REFERENCES] for i in range(3)])
    assert abs(cased.score - expected) > 1.0, (cased.score, expected)


# ---------------------------------------------------------------- ROUGE-L as the E2E challenge defines it
def test_lcs_has_its_known_lengths():
    assert lcs_length("a b c d".split(), "a c d".split()) == 3
    assert lcs_length("a b".split(), "b a".split()) == 1
    assert lcs_length([], ["a"]) == 0


def test_rouge_l_takes_the_best_precision_and_the_best_recall_on_their_own():
    # "the cat sat" against "the cat sat on the mat": LCS 3, P = 3/3, R = 3/6; against "a cat": LCS 1,
    # P = 1/3, R = 1/2. Best P = 1, best R = 1/2: F = (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1) = 1.22 / 1.94
    assert rouge_l_one("The cat sat.", ["the cat sat on the mat", "a cat"]) == pytest.approx(1.22 / 1.94)
    # the best P and the best R may come from different references: against "a pub near the river" LCS 2,
    # P = 1, R = 2/5; against "pub" LCS 1, P = 1/2, R = 1. Best P = 1 and best R = 1 give F = 1, where the
    # best F over references (rouge-score's way) would be below 1
    assert rouge_l_one("a pub", ["a pub near the river", "pub"]) == pytest.approx(1.0)
    # "pub cafe" against "pub" and against "cafe": P = 1/2, R = 1 each: F = 2.44 * 0.5 / (1 + 1.44 * 0.5)
    assert rouge_l_one("pub cafe", ["pub", "cafe"]) == pytest.approx(1.22 / 1.72)
    assert rouge_l_one("zzz", ["a pub"]) == 0.0 and rouge_l_one("", ["a pub"]) == 0.0
    assert rouge_l(["The cat sat.", "zzz"], [["the cat sat on the mat", "a cat"], ["a"]]) == pytest.approx(
        100 * (1.22 / 1.94) / 2)


def test_score_says_what_each_metric_is():
    require("sacrebleu")
    result = score(["a pub"], [["a pub"]])
    assert "lowercase" in result["metrics"]["bleu"] and "beta=1.2" in result["metrics"]["rouge_l"]


def test_bleu_without_sacrebleu_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # import sacrebleu now raises ImportError
    with pytest.raises(RuntimeError, match="pip install sacrebleu"):
        bleu(["a"], [["a"]])


def test_evaluate_without_sacrebleu_is_one_error_line(tmp_path, monkeypatch, capsys):
    from tinylora.cli import main

    data = tmp_path / "val.csv"
    data.write_text("mr,ref\nname[The Eagle],The Eagle is a pub.\n")
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    assert main(["evaluate", "--data", str(data), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install sacrebleu" in err, err


def test_evaluation_records_the_model_it_scored():
    require("sacrebleu")
    from tinylora.lora import apply_lora
    from tinylora.model.load import load_model
    from tinylora.train.generation_metrics import evaluate_generation

    model, tokenizer = load_model("base-mini")
    pairs = [{"prompt": "name[The Eagle] ||", "completion": " The Eagle is a pub."}]
    before = evaluate_generation(model, tokenizer, pairs, max_new_tokens=2)["scored_model"]
    assert before["parameters"] == model.num_parameters() and before["shape"]["n_layer"] == 4
    apply_lora(model, r=2)  # LoRA's A and B are not part of the digest: the base it sits on is
    assert evaluate_generation(model, tokenizer, pairs, max_new_tokens=2)["scored_model"]["weights_sha256_without_lora"] \
        == before["weights_sha256_without_lora"]
    model.blocks[0].attn.k.weight.data[0, 0] += 1.0  # another base: another digest
    assert evaluate_generation(model, tokenizer, pairs, max_new_tokens=2)["scored_model"]["weights_sha256_without_lora"] \
        != before["weights_sha256_without_lora"]


def test_evaluate_writes_the_model_it_scored(tmp_path, capsys):
    require("sacrebleu")
    from tinylora.cli import main

    data, out = tmp_path / "val.csv", tmp_path / "scores.json"
    data.write_text("mr,ref\nname[The Eagle],The Eagle is a pub.\n")
    assert main(["evaluate", "--data", str(data), "--max-new-tokens", "2", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["scored_model"]["parameters"] == 859_008 and len(written["scored_model"]["weights_sha256_without_lora"]) == 64
