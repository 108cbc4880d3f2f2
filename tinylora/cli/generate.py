"""`tinylora generate`: continue a prompt with a model, optionally with an adapter on top."""

from __future__ import annotations

from tinylora.cli import flags
from tinylora.cli.loading import adapter_folder, load_with_adapter
from tinylora.tokenizers import decode_text


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text from a model (and an adapter)",
                       description="Continue a prompt with a model, optionally with a LoRA adapter on top. "
                                   "With the same --seed, a model with its adapter and the merged model sample "
                                   "the same text.")
    p.add_argument("--model", default=None,
                   help="model folder or a shipped base: base-mini, base-mini-384 (default: the base the adapter records, else base-mini)")
    p.add_argument("--adapter", default=None, help="adapter folder written by finetune, any method (RUN/adapter or RUN/method)")
    p.add_argument("--force", action="store_true",
                   help="use the adapter even on a base whose weights differ from the one it was trained on")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=flags.COUNT, default=100, help="tokens to add at most")
    p.add_argument("--temperature", type=flags.NON_NEGATIVE, default=0.8, help="sampling temperature; 0 means greedy")
    p.add_argument("--top-k", type=flags.POSITIVE_INT, default=None,
                   help="sample among the k likeliest tokens (default: all)")
    p.add_argument("--top-p", type=flags.float_in(0.0, 1.0, low_open=True), default=None,
                   help="sample within this cumulative probability (default: 1, off)")
    p.add_argument("--seed", type=flags.COUNT, default=0, help="sampling seed")
    p.add_argument("--device", default=None, help="cpu or cuda (default: TINYLORA_DEVICE, else cpu)")


def run(args) -> None:
    from tinylora import manual_seed, tensor
    from tinylora.methods.prefix import max_new_tokens_for, prompt_ids
    from tinylora.model.generate import generate

    adapter = adapter_folder(args.adapter) if args.adapter else None
    model, tokenizer = load_with_adapter(args.model, adapter, device=args.device, force=args.force)
    prompt = tokenizer.encode(args.prompt) or [tokenizer.eot_id if tokenizer.eot_id is not None else 0]
    ids = prompt_ids(model, prompt)  # prefix + prompt + infix for prefix tuning, else the prompt
    n_new = max_new_tokens_for(model, len(ids), args.max_new_tokens)  # a prefix must stay in the context
    # seeded here, after loading: building a model and applying LoRA draw random numbers, and sampling
    # must start from the same state whether the model came with an adapter or was merged
    manual_seed(args.seed)
    out = generate(model, tensor([ids], device=args.device), n_new,
                   temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, eos_token=tokenizer.eot_id)
    print(decode_text(tokenizer, prompt + out.numpy()[0, len(ids):].tolist()))

