"""Generation quality the way the LoRA paper reports E2E (Table 3): greedy completions scored by BLEU and ROUGE-L.

    refs = references_by_prompt(read_pairs("val.csv"))     [(prompt, [ref, ref, ...]), ...]
    hyps = [complete(model, tokenizer, p) for p, _ in refs]  greedy decoding until <|endoftext|>
    score(hyps, [r for _, r in refs])                        {"bleu": ..., "rouge_l": ...}

An E2E meaning representation has several human references (the CSV repeats the `mr` on
several rows); both metrics compare a completion with all of them:

    BLEU     sacrebleu's corpus BLEU (0-100) with every reference of a prompt (Papineni et al. 2002;
             the E2E challenge's own scripts compute multi-reference BLEU the same way)
    ROUGE-L  rouge-score's ROUGE-L F-measure (0-100), the best over a prompt's references, averaged
             over prompts (the E2E metrics take the max over references too)

The metrics come from sacrebleu and rouge-score (`pip install tinylora[metrics]`), never computed
by hand here. Decoding is greedy (the paper uses beam search, beam 10, for its Table 3; greedy is
what tinylora.model.generate offers and keeps the comparison between methods fair).
A model with prefix-tuning tokens gets them around each prompt (tinylora.methods.prefix.prompt_ids).
"""

from __future__ import annotations

import numpy as np

from tinylora.engine.tensor import tensor
from tinylora.methods.prefix import max_new_tokens_for, prompt_ids
from tinylora.model.generate import generate


def references_by_prompt(pairs) -> list:
    """[(prompt, [completions...])] with every completion of a repeated prompt gathered, in first-seen order."""
    grouped: dict[str, list] = {}
    for pair in pairs:
        grouped.setdefault(pair["prompt"], []).append(pair["completion"].strip())
    return list(grouped.items())


def complete(model, tokenizer, prompt: str, max_new_tokens: int = 128) -> str:
    """The greedy completion of `prompt` (stripped, without the end token)."""
    ids = prompt_ids(model, tokenizer.encode(prompt) or [tokenizer.eot_id])
    n_new = max_new_tokens_for(model, len(ids), max_new_tokens)
    device = model.wte.weight.device
    out = generate(model, tensor([ids], device=device), n_new, greedy=True, eos_token=tokenizer.eot_id)
    new = [int(t) for t in np.asarray(out.numpy()[0, len(ids):]) if t != tokenizer.eot_id]
    text = tokenizer.decode([t for t in new if t < tokenizer.vocab_size])
    return text.split("<|endoftext|>")[0].strip()


def score(hypotheses, references) -> dict:
    """{"bleu", "rouge_l"} (both 0-100) of `hypotheses` (n strings) against `references` (n lists of strings)."""
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ImportError(f"BLEU and ROUGE-L need sacrebleu and rouge-score: pip install 'tinylora[metrics]' ({err})")
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"score: {len(hypotheses)} hypotheses for {len(references)} reference lists")
    n_refs = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(n_refs)]
    bleu = sacrebleu.corpus_bleu(list(hypotheses), streams).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rouge = [max(scorer.score(ref, hyp)["rougeL"].fmeasure for ref in refs) for hyp, refs in zip(hypotheses, references)]
    return {"bleu": float(bleu), "rouge_l": 100.0 * float(np.mean(rouge))}


def evaluate_generation(model, tokenizer, pairs, max_prompts: int | None = None, max_new_tokens: int = 128) -> dict:
    """Greedy completions of the (first `max_prompts`) prompts of `pairs`, scored; returns scores and examples."""
    refs = references_by_prompt(pairs)[:max_prompts]
    hyps = [complete(model, tokenizer, prompt, max_new_tokens) for prompt, _ in refs]
    result = score(hyps, [r for _, r in refs])
    result.update({"prompts": len(refs), "decoding": "greedy", "max_new_tokens": max_new_tokens,
                   "examples": [{"prompt": p, "completion": h, "references": r} for (p, r), h in zip(refs, hyps)]})
    return result
