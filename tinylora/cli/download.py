"""`tinylora download gpt2 --out DIR`: fetch a Hugging Face GPT-2 folder that tinylora loads.

    pip install "tinylora[hub]"          # huggingface_hub, imported only by this command
    tinylora download gpt2 --out models/gpt2
    tinylora finetune --base models/gpt2 --data train.jsonl

It fetches only what tinylora reads (config.json, model.safetensors, vocab.json,
merges.txt) through huggingface_hub's `snapshot_download`, which keeps its own
cache (~/.cache/huggingface, or HF_HUB_CACHE) and honours HF_HUB_OFFLINE=1 (then
the files must already be in that cache). The files are then copied into DIR.
"""

from __future__ import annotations

import os
import shutil

FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")
MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")  # the Hub ids of OpenAI's GPT-2 checkpoints


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch a Hugging Face GPT-2 folder (needs: pip install huggingface_hub)",
                       description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("model", choices=MODELS, help="which GPT-2")
    p.add_argument("--out", required=True, help="folder to write (created; files in it are replaced)")
    p.add_argument("--revision", default=None, help="a Hub branch, tag or commit (default: main)")


def download(model: str, out, revision: str | None = None) -> str:
    """Fetch `model`'s FILES into folder `out` via huggingface_hub; returns `out`."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise RuntimeError("tinylora download needs huggingface_hub: pip install 'tinylora[hub]' "
                           "(or pip install huggingface_hub)") from None
    snapshot = snapshot_download(repo_id=model, revision=revision, allow_patterns=list(FILES))
    missing = [name for name in FILES if not os.path.isfile(os.path.join(snapshot, name))]
    if missing:
        raise FileNotFoundError(f"the Hub snapshot of '{model}' lacks {missing}")
    os.makedirs(out, exist_ok=True)
    for name in FILES:
        shutil.copyfile(os.path.join(snapshot, name), os.path.join(out, name))
    return os.fspath(out)


def run(args) -> None:
    out = download(args.model, args.out, args.revision)
    print(f"wrote {', '.join(FILES)} of {args.model} to {out}; use it as --base {out}")
