"""Generation quality the way the E2E NLG challenge scores it (the LoRA paper's Table 3): greedy completions
scored by BLEU and ROUGE-L.

    refs = references_by_prompt(read_pairs("val.csv"))     [(prompt, [ref, ref, ...]), ...]
    hyps = [complete(model, tokenizer, p) for p, _ in refs]  greedy decoding until <|endoftext|>
    score(hyps, [r for _, r in refs])                        {"bleu": ..., "rouge_l": ..., "metrics": ...}

An E2E meaning representation has several human references (the CSV repeats the `mr` on
several rows); both metrics compare a completion with all of them, as the challenge's script does:

    BLEU     corpus BLEU-4 (0-100) with every reference of a prompt, on lowercased text: sacrebleu's
             corpus_bleu(..., lowercase=True) with its default 13a tokenizer, which reproduces the
             challenge's mteval-v13a BLEU (the script lowercases both sides; case-sensitive BLEU
             reads about 0.7 lower on typical outputs)
    ROUGE-L  the challenge's form: for one output, the longest common subsequence (LCS) with each
             reference j gives precision P_j = LCS / len(output) and recall R_j = LCS / len(ref_j);
             with P = max_j P_j and R = max_j R_j (each maximised on its own),

                 ROUGE-L = (1 + β²) P R / (R + β² P),   β = 1.2   (0 when P or R is 0)

             averaged over outputs, × 100. Words are lowercased and split on white space with
             punctuation dropped, which approximates the challenge's PTB tokenizer (a Java program,
             not used here); rouge-score's best-F1-with-stemming, which reads 2-3 points higher,
             is not this metric.

BLEU comes from sacrebleu (`pip install sacrebleu`, or `pip install 'tinylora[metrics]'`);
ROUGE-L is computed here (rouge_l below). Decoding is greedy (the paper uses beam search, beam 10,
for its Table 3; greedy is what tinylora.model.generate offers and keeps the comparison between
methods fair). A model with prefix-tuning tokens gets them around each prompt
(tinylora.methods.prefix.prompt_ids).
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


METRICS = {
    "bleu": "corpus BLEU-4, lowercased, 13a tokens, all references of a prompt (sacrebleu, lowercase=True)",
    "rouge_l": "ROUGE-L F(beta=1.2) of the best LCS precision and best LCS recall over references, "
               "lowercased words without punctuation, mean over outputs",
}
ROUGE_BETA = 1.2
PUNCTUATION = ".,!?;:'\"`()[]{}"


def require_sacrebleu():
    """The sacrebleu module, or one RuntimeError line saying what to install."""
    try:
        import sacrebleu
    except ImportError:
        raise RuntimeError("BLEU needs sacrebleu, which is not installed: pip install sacrebleu "
                           "(or pip install 'tinylora[metrics]')") from None
    return sacrebleu


def bleu(hypotheses, references) -> float:
    """Corpus BLEU (0-100) of n hypotheses against n lists of references, lowercased as the E2E script does.

    sacrebleu takes references as streams (stream i holds every prompt's i-th reference); a prompt
    with fewer references than the most has None in the streams it lacks, which sacrebleu skips.
    """
    sacrebleu = require_sacrebleu()
    n_refs = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(n_refs)]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams, lowercase=True).score)


def rouge_words(text: str) -> list[str]:
    """Lowercased words split on white space, punctuation stripped off their ends, empty ones dropped."""
    words = (w.strip(PUNCTUATION) for w in text.lower().split())
    return [w for w in words if w]


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence of a and b (dynamic programming, one row at a time)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_one(hypothesis: str, references: list[str], beta: float = ROUGE_BETA) -> float:
    """The challenge's ROUGE-L (0-1) of one output: F_beta of the best precision and the best recall."""
    hyp = rouge_words(hypothesis)
    precision = recall = 0.0
    for ref in map(rouge_words, references):
        common = lcs_length(hyp, ref)
        if hyp and ref:
            precision, recall = max(precision, common / len(hyp)), max(recall, common / len(ref))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_l(hypotheses, references) -> float:
    """Mean ROUGE-L (0-100) of n outputs against n lists of references (rouge_l_one)."""
    return 100.0 * float(np.mean([rouge_l_one(h, refs) for h, refs in zip(hypotheses, references)]))


def score(hypotheses, references) -> dict:
    """{"bleu", "rouge_l"} (both 0-100) of `hypotheses` (n strings) against `references` (n lists of
    strings), and "metrics", what each number is (METRICS)."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"score: {len(hypotheses)} hypotheses for {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("score: a prompt has no reference; every prompt needs at least one")
    return {"bleu": bleu(hypotheses, references), "rouge_l": rouge_l(hypotheses, references), "metrics": METRICS}


def model_record(model) -> dict:
    """What identifies the model that was scored: its shape, parameter count, and the SHA-256 of its weights
    other than LoRA's A and B (the base a LoRA adapter sits on; tinylora.lora.adapter_io.weights_sha256)."""
    from tinylora.lora.adapter_io import weights_sha256

    config = getattr(model, "config", None)
    shape = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
             if hasattr(config, k)}
    return {"shape": shape, "parameters": int(model.num_parameters()), "weights_sha256_without_lora": weights_sha256(model)}


def evaluate_generation(model, tokenizer, pairs, max_prompts: int | None = None, max_new_tokens: int = 128) -> dict:
    """Greedy completions of the (first `max_prompts`) prompts of `pairs`, scored; returns the scores, the
    model scored ("scored_model": model_record), the decoding settings and every completion with its references."""
    require_sacrebleu()  # before generating, not after
    refs = references_by_prompt(pairs)[:max_prompts]
    hyps = [complete(model, tokenizer, prompt, max_new_tokens) for prompt, _ in refs]
    result = score(hyps, [r for _, r in refs])
    result.update({"scored_model": model_record(model), "prompts": len(refs), "decoding": "greedy",
                   "max_new_tokens": max_new_tokens,
                   "examples": [{"prompt": p, "completion": h, "references": r} for (p, r), h in zip(refs, hyps)]})
    return result
