"""`tinylora pretrain`: train a small GPT from scratch on a text file or folder (default: this Python's
standard-library source).
"""

from __future__ import annotations

import os
import shlex
import sys

from tinylora.cli import flags


def add_parser(sub) -> None:
    p = sub.add_parser("pretrain", help="train a GPT from scratch on text",
                       description="Train a small GPT from scratch on a text file or folder (default: this "
                                   "Python installation's standard-library source, which every machine has).")
    p.add_argument("--data", default="stdlib", help="UTF-8 text file, folder, or 'stdlib'")
    p.add_argument("--config", default="mini", help="GPT preset: tiny, mini, gpt2, ...")
    p.add_argument("--block-size", type=flags.POSITIVE_INT, default=256, help="context length T in tokens")
    p.add_argument("--tokenizer", default="byte", help="'byte' or a folder with vocab.json + merges.txt")
    p.add_argument("--out", required=True, help="model folder to write (an existing one needs --overwrite)")
    p.add_argument("--run-dir", default=None, help="metrics and checkpoints (default: OUT/run)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint (refused if a setting differs)")
    flags.add_train_flags(p, steps=2000, lr=2e-3, batch=16)


def corpus_path(data: str) -> str:
    """'stdlib' means the top-level *.py files of this Python's standard library (about 4.7 MB on 3.11)."""
    if data != "stdlib":
        return data
    import sysconfig

    return os.path.join(sysconfig.get_paths()["stdlib"], "*.py")


def run(args) -> None:
    from tinylora import manual_seed
    from tinylora.data import load_text_dataset
    from tinylora.model.gpt import GPT, GPTConfig
    from tinylora.model.load import save_model
    from tinylora.tokenizers import load_tokenizer
    from tinylora.train.loop import train

    flags.refuse_shipped_name(args.out)  # ./base-mini would shadow the shipped base-mini
    run_dir = args.run_dir or os.path.join(args.out, "run")
    if args.data != "stdlib":  # the model and its run never go over the text they learn from
        flags.refuse_output_over_inputs(args.out, data=args.data)
        flags.refuse_output_over_inputs(run_dir, data=args.data)
    flags.check_run_flags(args, run_dir)
    flags.refuse_existing_model(args.out, args.overwrite or args.resume)
    manual_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer)
    data = corpus_path(args.data)
    train_set, val_set = load_text_dataset(data, tokenizer, args.block_size, val_fraction=0.05, seed=args.seed)
    config = GPTConfig.from_preset(args.config, vocab_size=tokenizer.vocab_size, block_size=args.block_size,
                                   dropout=0.0)
    model = GPT(config, device=args.device)
    setup = {"command": "pretrain", "preset": args.config, "block_size": args.block_size,
             "tokenizer": args.tokenizer, "data": args.data, "data_sha256": flags.data_digest(data), "val_fraction": 0.05}
    print(f"pretraining a {args.config} GPT ({model.num_parameters():,} parameters) "
          f"on {len(train_set.tokens):,} tokens")
    result = train(model, train_set, val_set, flags.train_config(args, args.lr), run_dir=run_dir, resume=args.resume,
                   setup=setup, overwrite=args.overwrite)
    save_model(model, args.out, tokenizer, extra={
        "pretrain": {"command": "tinylora " + shlex.join(args.argv), "data": args.data,
                     "val_loss": result.val_loss_after, "python": sys.version.split()[0]}})
    print(f"{flags.losses(result)}; model written to {args.out}")

