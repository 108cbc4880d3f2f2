"""Probe the newer surfaces with bad inputs and faults, as a user would, and count the outcomes per category.

    python tests/reliability_probe.py            # the tinylora that `import tinylora` finds (set PYTHONPATH)

Each case runs `python -m tinylora.cli ...` (or a few lines of Python) in a fresh process on a tiny model
made here, and is counted as:
    clear      refused with exit 2 and one `tinylora: error:` line naming the culprit (flag, file, field)
    unhelpful  refused, but with a traceback, or a line that does not name the culprit
    silent     a bad input accepted (exit 0)
    correct    a valid input that works (a case marked ok)
    broken     a valid input refused, or an input file lost or changed, or a half-written output
Not a test (the reliability tests assert each case); this is the census behind the before/after table.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict

SETUP = """
import sys, numpy as np, tinylora
from tinylora import GPT, GPTConfig
from tinylora.lora import apply_lora, lora_layers, save_adapter
from tinylora.model.load import save_model, load_model
from tinylora.tokenizers import ByteTokenizer
root = sys.argv[1]
tinylora.manual_seed(0)
model = GPT(GPTConfig.tiny(vocab_size=ByteTokenizer().vocab_size, n_embd=32, n_layer=2, dropout=0.0))
save_model(model, root + "/base", ByteTokenizer())
model, _ = load_model(root + "/base")
apply_lora(model, r=4, targets=("q", "v"))
save_adapter(model, root + "/adapter")
"""


def run(argv, cwd, code=None):
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "tinylora.cli", *argv]
    env = dict(os.environ, TINYLORA_DEBUG="")
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    return done.returncode, done.stderr


def classify(rc, err, words, ok=False):
    lines = [ln for ln in err.splitlines() if not ln.startswith("tinylora: warning")]
    if ok:
        return "correct" if rc == 0 else "broken"
    if rc == 0:
        return "silent"
    one = len(lines) == 1 and lines[0].startswith("tinylora: error:") and "Traceback" not in err
    # each of `words` is a word the line must hold, or a tuple of words of which it must hold one
    named = all(any(alt in lines[0] for alt in ((w,) if isinstance(w, str) else w)) for w in words)
    return "clear" if one and named else "unhelpful"


def main() -> None:
    root = tempfile.mkdtemp(prefix="probe-")
    subprocess.run([sys.executable, "-c", SETUP, root], check=True)
    base, adapter = f"{root}/base", f"{root}/adapter"
    text = f"{root}/notes.txt"
    with open(text, "w") as f:
        f.write(" ".join(f"the otter number {i} naps by the canal." for i in range(200)))
    held = f"{root}/held.jsonl"
    with open(held, "w") as f:
        f.write("".join(json.dumps({"prompt": f"name[A{i}] ||", "completion": "ok"}) + "\n" for i in range(4)))
    reqs = f"{root}/requests.jsonl"
    with open(reqs, "w") as f:
        f.write('{"adapter": "a", "prompt": "hi"}\n')
    fast = ["--batch-size", "4", "--eval-batches", "1", "--no-progress"]
    ada = ["finetune", "--base", base, "--data", text, "--method", "adalora", "--rank", "3", "--target-r", "2", *fast]
    serve = ["serve", "--model", base, "--adapter", f"a={adapter}", "--requests", reqs, "--out", f"{root}/c.jsonl"]
    results = defaultdict(Counter)
    counter = iter(range(10_000))

    def case(category, argv, words=(), ok=False, code=None, check=None):
        out = f"{root}/run{next(counter)}"
        argv = [a.replace("OUT", out) for a in argv]
        rc, err = run(argv, root, code)
        outcome = classify(rc, err, words, ok)
        if check is not None and not check(out):
            outcome = "broken"
        results[category][outcome] += 1
        print(f"{category:22} {outcome:9} {' '.join(argv)[:110]}", flush=True)

    # AdaLoRA
    for more in (["--max-steps", "1"], ["--max-steps", "4", "--tfinal", "3"],
                 ["--max-steps", "3", "--tinit", "1", "--tfinal", "1", "--delta-t", "5"]):
        case("adalora", [*ada, *more, "--out", "OUT"], ok=True)
    for flag, value, word in (("--delta-t", "0", "delta_t"), ("--delta-t", "-2", "delta_t"), ("--tinit", "-1", "tinit"),
                              ("--tfinal", "-1", "tfinal"), ("--target-r", "9", "target_r"),
                              ("--orth-reg-weight", "nan", "orth_reg_weight"),
                              ("--orth-reg-weight", "-1", "orth_reg_weight")):
        case("adalora", [*ada, "--max-steps", "3", flag, value, "--out", "OUT"], [(word, flag)])
    resumed = f"{root}/adaresume"
    run([*ada, "--max-steps", "4", "--checkpoint-every", "2", "--out", resumed], root)
    case("adalora", [*ada, "--max-steps", "4", "--checkpoint-every", "2", "--out", resumed, "--resume"], ok=True)

    # outputs that name an input
    def same_bytes(path):
        before = open(path, "rb").read()
        return lambda _: open(path, "rb").read() == before
    case("outputs over inputs", ["evaluate", "--model", base, "--data", held, "--out", held], ["--data"],
         check=same_bytes(held))
    case("outputs over inputs", [*serve[:-1], reqs], ["--requests"], check=same_bytes(reqs))
    config = f"{adapter}/adapter_config.json"
    case("outputs over inputs", ["merge", "--base", base, "--adapter", adapter, "--out", adapter], ["--adapter"],
         check=same_bytes(config))
    case("outputs over inputs", ["merge", "--base", base, "--adapter", adapter, "--out", adapter, "--overwrite"],
         ["--adapter"], check=same_bytes(config))
    case("outputs over inputs", ["merge", "--base", base, "--adapter", adapter, "--out", f"{adapter}/m"], ["--adapter"],
         check=lambda _: not os.path.exists(f"{adapter}/m"))
    case("outputs over inputs", ["evaluate", "--model", base, "--adapter", adapter, "--data", held, "--out",
                                 f"{adapter}/s.json"], ["--adapter"], check=lambda _: not os.path.exists(f"{adapter}/s.json"))

    # the newer commands' flags
    for flag, value in (("--batch-size", "-1"), ("--batch-size", "0"), ("--temperature", "nan"),
                        ("--temperature", "-1"), ("--max-new-tokens", "0"), ("--seed", "-1")):
        case("flags", [*serve, flag, value], [flag])
    case("flags", ["evaluate", "--model", base, "--data", held, "--max-prompts", "-1"], ["--max-prompts"])
    for flag, value in (("--ranks", "a"), ("--ranks", "1,0"), ("--steps", "0"), ("--seed", "-1"), ("--lr", "nan")):
        case("flags", ["analyze", "--out", "OUT", flag, value], [flag])
    case("flags", ["course", "grade", root, "--timeout", "nan"], ["--timeout"])
    os.makedirs(f"{root}/part/A3")
    open(f"{root}/part/A3/mine.txt", "w").write("x")
    case("flags", ["course", "release", "all", "--out", f"{root}/part"], ["A3"],
         check=lambda _: sorted(os.listdir(f"{root}/part")) == ["A3"])
    listy = f"{root}/listy.jsonl"
    open(listy, "w").write('{"adapter": ["a"], "prompt": "hi"}\n')
    case("flags", [*serve[:5], "--requests", listy, "--out", f"{root}/c2.jsonl"], ["listy.jsonl"])
    latin = f"{root}/latin.jsonl"
    open(latin, "wb").write(b'{"adapter": "a", "prompt": "caf\xe9"}\n')
    case("flags", [*serve[:5], "--requests", latin, "--out", f"{root}/c4.jsonl"], ["latin.jsonl", "line 1"])
    bom = f"{root}/bom.jsonl"
    open(bom, "wb").write(b"\xef\xbb\xbf" + b'{"adapter": "a", "prompt": "hi"}\n')
    case("flags", [*serve[:5], "--requests", bom, "--out", f"{root}/c3.jsonl", "--max-new-tokens", "2"], ok=True)

    # files read
    def broken_adapter(name, config_text=None, header=None):
        folder = f"{root}/{name}"
        shutil.copytree(adapter, folder)
        if config_text is not None:
            open(f"{folder}/adapter_config.json", "w").write(config_text)
        if header is not None:
            raw = json.dumps(header).encode()
            open(f"{folder}/adapter.safetensors", "wb").write(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
        return folder
    gen = ["generate", "--model", base, "--max-new-tokens", "2", "--adapter"]
    case("files read", [*gen, broken_adapter("a1", "[1, 2]")], ["adapter_config.json"])
    case("files read", [*gen, broken_adapter("a2", "[" * 100_000 + "]" * 100_000)], ["adapter_config.json"])
    case("files read", [*gen, broken_adapter("a3", '{"r": ' + "7" * 100_001 + "}")], ["adapter_config.json"])
    case("files read", [*gen, broken_adapter("a4", json.dumps({"format": "tinylora-method-adapter", "method": "dora",
                                                                 "settings": [1, 2], "base_model": {}}))],
         ["adapter_config.json"])
    for i, entry in enumerate(({"dtype": "F32", "shape": [2**40, 2**40, 2**40], "data_offsets": [0, 16]},
                               {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]},
                               {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 16]},
                               {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]})):
        case("files read", ["info", "--adapter", broken_adapter(f"h{i}", header={"w": entry})], ["adapter.safetensors"])
    overlap = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}
    case("files read", ["info", "--adapter", broken_adapter("h9", header=overlap)], ["adapter.safetensors"])
    noextra = f"{root}/noextra"
    run(["finetune", "--base", base, "--data", text, "--max-steps", "2", *fast, "--out", noextra], root)
    state = f"{noextra}/step-000002/state.json"
    saved = json.load(open(state))
    del saved["extra"]
    json.dump(saved, open(state, "w"))
    case("files read", ["finetune", "--base", base, "--data", text, "--max-steps", "2", *fast, "--out", noextra,
                        "--resume"], ["state.json"])
    os.makedirs(f"{root}/rel")
    open(f"{root}/rel/COURSE_RELEASE.json", "w").write("[1, 2]")
    case("files read", ["course", "solve", f"{root}/rel"], ["COURSE_RELEASE.json"])

    # side outputs
    disk_full = (
        "import errno, sys\nfrom matplotlib.figure import Figure\n"
        "def full(self, path, **kw):\n    open(path, 'wb').write(b'half')\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "Figure.savefig = full\nfrom tinylora.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    case("side outputs", ["finetune", "--base", base, "--data", text, "--max-steps", "2", *fast, "--out", "OUT"],
         ok=True, code=disk_full, check=lambda out: os.path.exists(f"{out}/adapter/adapter.safetensors"))

    # defects that outlived the first hardening
    case("old defects", ["info", "--targets", "nonsense"], ["--targets"])
    case("old defects", ["finetune", "--base", base, "--data", text, "--max-steps", "2", *fast, "--out",
                         f"{root}/mistyped", "--resume"], ["mistyped"], check=lambda _: not os.path.exists(f"{root}/mistyped"))
    short = f"{root}/short.txt"
    open(short, "w").write("hi there")
    case("old defects", ["finetune", "--base", base, "--data", short, "--max-steps", "2", *fast, "--out", "OUT"],
         ["short.txt"])
    case("old defects", [], ["alpha"], code=(
        "import sys\nfrom tinylora import nn\nfrom tinylora.lora import LoRALinear\n"
        "try:\n    LoRALinear(nn.Linear(8, 8), r=2, alpha=float('inf'))\n"
        "except ValueError as e:\n    print('tinylora: error:', e, file=sys.stderr); sys.exit(2)\n"))

    # user errors that must stay one line now that a bare KeyError is a bug
    case("user errors", ["course", "release", "A9", "--out", "OUT"], ["A9"])
    missing = broken_adapter("m1")
    from_safetensors = (
        "import sys\nfrom tinylora.io import load_tensors, save_tensors\n"
        "t = load_tensors(sys.argv[1]); t.pop(min(t)); save_tensors(sys.argv[1], t)\n")
    subprocess.run([sys.executable, "-c", from_safetensors, f"{missing}/adapter.safetensors"], check=True)
    case("user errors", [*gen, missing], ["adapter.safetensors"])
    model_missing = f"{root}/model_missing"
    shutil.copytree(base, model_missing)
    subprocess.run([sys.executable, "-c", from_safetensors, f"{model_missing}/model.safetensors"], check=True)
    case("user errors", ["info", "--model", model_missing], ["model.safetensors"])

    print("\ncategory               " + "  ".join(f"{k:>9}" for k in ("clear", "unhelpful", "silent", "correct", "broken")))
    for category, counts in results.items():
        print(f"{category:22} " + "  ".join(f"{counts[k]:>9}" for k in ("clear", "unhelpful", "silent", "correct",
                                                                          "broken")))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
