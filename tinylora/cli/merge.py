"""`tinylora merge`: W = W0 + (α/r) B A written into a plain model folder (no extra inference cost)."""

from __future__ import annotations

from tinylora.cli import flags
from tinylora.cli.loading import adapter_folder, base_of, load_adapter_onto, method_of


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge an adapter into its base: W = W0 + (alpha/r) B A",
                       description="Merge a LoRA adapter into its base model, W = W0 + (alpha/r) B A, and save "
                                   "the result as a plain model folder (no extra inference cost).")
    p.add_argument("--base", default=None, help="model folder or a shipped base: base-mini, base-mini-384 (default: the base the adapter records)")
    p.add_argument("--adapter", required=True, help="adapter folder written by finetune, any method (RUN/adapter or RUN/method)")
    p.add_argument("--out", required=True, help="model folder to write (an existing one needs --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the model in --out if there is one")
    p.add_argument("--force", action="store_true",
                   help="merge even into a base whose weights differ from the one the adapter was trained on")


def run(args) -> None:
    from tinylora.methods.merge import merge_method
    from tinylora.methods.table import method_row
    from tinylora.model.load import load_model, other_entries, save_model

    flags.refuse_shipped_name(args.out)  # ./base-mini would shadow the shipped base-mini
    adapter = adapter_folder(args.adapter)
    flags.refuse_output_over_inputs(args.out, adapter=adapter)
    if args.overwrite and other_entries(args.out):  # the folder is replaced whole (one rename): nothing else goes
        raise FileExistsError(f"--out {args.out} holds more than a model ({', '.join(other_entries(args.out)[:4])}); "
                              "--overwrite replaces the whole folder: choose a folder that holds only a model")
    method = method_of(adapter)
    if method_row(method).merge is not None:  # refused before anything is loaded
        raise ValueError(f"{method} cannot be merged: {method_row(method).merge}; use generate --adapter")
    base = base_of(adapter, args.base)
    flags.refuse_existing_model(args.out, args.overwrite, base=base)
    model, tokenizer = load_model(base)
    load_adapter_onto(model, adapter, force=args.force)
    merged, note = merge_method(model, method)
    save_model(merged, args.out, tokenizer, extra={"merged_from": {"base": str(base), "adapter": args.adapter}})
    print(f"merged model written to {args.out}{note}")
