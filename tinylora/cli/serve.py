"""`tinylora serve`: answer a file of (adapter, prompt) requests, many adapters per batch.

    tinylora serve --model base-mini --adapter e2e=runs/e2e/adapter --adapter poem=runs/poem/adapter \\
                   --requests requests.jsonl --out completions.jsonl

requests.jsonl, one request per line:   {"adapter": "e2e", "prompt": "name[The Eagle] ||"}
                                          ("adapter": "base", or absent, means the base model alone)
completions.jsonl, in the same order:   {"adapter": ..., "prompt": ..., "completion": ...}

The base is loaded once; every adapter is loaded beside it under its name
(tinylora.lora.load_named_adapter). Requests are batched with each row running
its own adapter (tinylora.lora.mixed). The model has no padding mask, so a batch
holds prompts of one token length: requests are grouped by length, then cut into
batches of --batch-size.
"""

from __future__ import annotations

import json
import time

from tinylora.cli import flags
from tinylora.io import _atomic_write, parse_json


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="batch generation over a JSONL of (adapter, prompt) requests",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--model", default="base-mini", help="model folder or a shipped base: base-mini, base-mini-384")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                   help="an adapter folder (save_adapter / finetune) served as NAME; repeat for more")
    p.add_argument("--force", action="store_true",
                   help="serve adapters even on a base whose weights differ from the one they were trained on")
    p.add_argument("--requests", required=True, help="JSONL file of {\"adapter\", \"prompt\"}")
    p.add_argument("--out", required=True, help="JSONL file of completions to write")
    p.add_argument("--max-new-tokens", type=flags.POSITIVE_INT, default=64, help="tokens generated per request")
    p.add_argument("--temperature", type=flags.NON_NEGATIVE, default=0.0, help="0 (default) means greedy")
    p.add_argument("--batch-size", type=flags.POSITIVE_INT, default=32, help="requests per batch")
    p.add_argument("--seed", type=flags.COUNT, default=0, help="seed of the sampling (temperature > 0)")
    p.add_argument("--device", default=None)


def _adapters(specs) -> dict:
    adapters = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--adapter takes NAME=DIR, got {spec!r}")
        if name in adapters:
            raise ValueError(f"--adapter: the name '{name}' is given twice")
        adapters[name] = path
    return adapters


def read_requests(path) -> list:
    """The requests of a JSONL file: [{"adapter": str, "prompt": str}, ...] ("base" when no adapter is named).

    The file is read as training data is (tinylora.data.read_text): a byte-order mark is skipped, and
    bytes that are not UTF-8 are one error naming the file, offset and line."""
    from tinylora.data import read_text

    requests = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}:{number}")
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise ValueError(f"{path}:{number}: a request needs a \"prompt\" string")
        if row.get("adapter") is not None and not isinstance(row["adapter"], str):
            raise ValueError(f"{path}:{number}: \"adapter\" must be one adapter's name (a string), "
                             f"got {json.dumps(row['adapter'])[:40]}")
        requests.append({"adapter": row.get("adapter") or "base", "prompt": row["prompt"]})
    if not requests:
        raise ValueError(f"{path} holds no requests")
    return requests


def serve(model, tokenizer, requests: list, max_new_tokens: int, temperature: float, batch_size: int,
          mixed: bool = True) -> list:
    """Completions for `requests`, in order; each batch mixes adapters (mixed=False: a model without LoRA)."""
    import numpy as np

    from tinylora.model.generate import generate

    encoded = [tokenizer.encode(r["prompt"]) or [tokenizer.eot_id or 0] for r in requests]
    by_length = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    completions = [None] * len(requests)
    for length, rows in sorted(by_length.items()):
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            idx = np.array([encoded[i] for i in batch], dtype=np.int64)  # (B, length)
            names = [requests[i]["adapter"] for i in batch] if mixed else None  # None: no LoRA at all
            out = generate(model, idx, max_new_tokens, temperature=temperature, eos_token=tokenizer.eot_id,
                           adapter_ids=names).numpy()
            for i, row in zip(batch, out):
                text = tokenizer.decode(row[length:].tolist())
                completions[i] = text.split("<|endoftext|>")[0]
    return completions


def servable(adapters: dict):
    """Refuse, in one line, an adapter whose method has no per-example form (tinylora/methods/table.py), or
    adapters trained on differently quantized bases; returns the quantization they share (None: a float base)."""
    from tinylora.cli.loading import method_of
    from tinylora.lora.adapter_io import read_adapter_config
    from tinylora.methods.table import method_row

    quantizations = {}
    for name, path in adapters.items():
        method = method_of(path)
        reason = method_row(method).serve
        if reason is not None:
            raise ValueError(f"--adapter {name}={path} is a {method!r} adapter, which serve cannot batch: {reason}")
        quantizations[name] = read_adapter_config(path).get("quantization")
    if len({json.dumps(q, sort_keys=True) for q in quantizations.values()}) > 1:
        raise ValueError(f"--adapter: the adapters were trained on differently quantized bases {quantizations}; "
                         "serve those of one base together")
    return next(iter(quantizations.values()), None)


def run(args) -> None:
    from tinylora import manual_seed
    from tinylora.lora import list_adapters, load_named_adapter
    from tinylora.lora.adapters import BASE
    from tinylora.methods.qlora import quantize_model
    from tinylora.model.load import load_model

    adapters = _adapters(args.adapter)
    flags.refuse_output_over_inputs(args.out, requests=args.requests, adapter=list(adapters.values()), model=args.model)
    requests = read_requests(args.requests)
    quantization = servable(adapters)
    model, tokenizer = load_model(args.model, device=args.device)
    if quantization is not None:  # QLoRA adapters: the base quantized as they were trained on it
        quantize_model(model, **{**quantization, "targets": tuple(quantization["targets"])})
    for name, path in adapters.items():
        load_named_adapter(model, path, name, force=args.force)  # checks each: base hash, shapes, finite values
    known = list_adapters(model) if adapters else []
    unknown = sorted({r["adapter"] for r in requests} - set(known) - {BASE})
    if unknown:
        raise ValueError(f"requests name adapters {unknown} that no --adapter gives (given: {known or 'none'})")
    manual_seed(args.seed)
    started = time.perf_counter()
    completions = serve(model, tokenizer, requests, args.max_new_tokens, args.temperature, args.batch_size,
                        mixed=bool(adapters))
    seconds = time.perf_counter() - started
    text = "".join(json.dumps({**r, "completion": c}, ensure_ascii=False) + "\n" for r, c in zip(requests, completions))

    def write(temp):
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_write(args.out, write)
    print(f"{len(requests)} requests, {len(adapters)} adapters: {seconds:.1f} s; wrote {args.out}")
