"""`tinylora evaluate`: BLEU and ROUGE-L of greedy completions of held-out prompts, as JSON."""

from __future__ import annotations

from tinylora.cli import flags
from tinylora.cli.loading import adapter_folder, load_with_adapter


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="BLEU and ROUGE-L of greedy completions of held-out prompts",
                       description="Greedy generation for every prompt of a file of prompts with references "
                                   "(E2E CSV mr,ref or JSONL prompt,completion; repeated prompts pool their "
                                   "references), scored as the E2E challenge scores them: BLEU lowercased "
                                   "(sacrebleu), ROUGE-L F(beta=1.2) of the best precision and the best recall "
                                   "(tinylora). Needs: pip install sacrebleu (or 'tinylora[metrics]').")
    p.add_argument("--model", default=None,
                   help="model folder or a shipped base: base-mini, base-mini-384 (default: the base a LoRA adapter records, else base-mini)")
    p.add_argument("--adapter", default=None, help="adapter folder of any method (optional)")
    p.add_argument("--force", action="store_true", help="use the adapter on a base whose weights differ")
    p.add_argument("--data", required=True, help=".csv (mr,ref) or .jsonl (prompt,completion)")
    p.add_argument("--max-prompts", type=flags.POSITIVE_INT, default=None,
                   help="score only the first N distinct prompts (default: all)")
    p.add_argument("--max-new-tokens", type=flags.POSITIVE_INT, default=128, help="tokens generated per prompt")
    p.add_argument("--out", default=None, help="JSON file for the scores and completions (default: print only)")
    p.add_argument("--device", default=None)


def check_metrics_installed() -> None:
    """BLEU needs sacrebleu (the `metrics` extra): say so in one line before minutes of generation, not after."""
    import importlib.util

    if importlib.util.find_spec("sacrebleu") is None:
        raise RuntimeError("evaluate scores BLEU with sacrebleu, which is not installed: pip install sacrebleu "
                           "(or pip install 'tinylora[metrics]')")


def run(args) -> None:
    import json

    from tinylora.data import read_pairs
    from tinylora.io import write_json_atomic
    from tinylora.train.generation_metrics import evaluate_generation

    flags.refuse_output_over_inputs(args.out, data=args.data, adapter=args.adapter, model=args.model)
    check_metrics_installed()
    adapter = adapter_folder(args.adapter) if args.adapter else None
    model, tokenizer = load_with_adapter(args.model, adapter, device=args.device, force=args.force)
    result = evaluate_generation(model, tokenizer, read_pairs(args.data), args.max_prompts, args.max_new_tokens)
    result.update({"model": str(args.model), "adapter": args.adapter, "data": str(args.data)})
    if args.out:
        write_json_atomic(args.out, result)
    print(json.dumps({k: result[k] for k in ("bleu", "rouge_l", "prompts")}))

