"""Every figure the docs state is read back from its result file (benchmarks/figures.json).

Each entry of benchmarks/figures.json names a document, a snippet of it, the figure as printed in that
snippet, and where the figure comes from:

    "source": {"file": "benchmarks/results/....json", "key": ["result", "rows", {"where": {...}}, "bleu"],
               "format": "{:.1f}", "scale": 1}      a measured number: read, scaled, formatted, compared
                                                    (a .jsonl file is read as the list of its lines' records;
                                                    "minus": [another key] subtracts that value first)
    "arithmetic": "2 * 4 * 8 * (128 + 128)"         a number computed, not measured: evaluated, compared
    "paper": "Table 7"                              the LoRA paper's own number, quoted
    "setting": "--steps of benchmarks/table3_e2e.py"  a setting of the run (a step count, a rank), not a result
    "label": "the notebook's number"                a name written with digits (a notebook, a task), not a figure

Inside the regions a document marks with <!-- figures:checked --> ... <!-- /figures:checked -->, every
number outside code spans and link targets must be one of the registered figures, so a number added
there without a source fails here; README.md, benchmarks/README.md and tutorials/README.md must each have
such a region. Rows of one "table" must come from files of one machine.
"""

import ast
import json
import operator
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("README.md", "benchmarks/README.md", "tutorials/README.md")  # the documents that state measured figures
REGISTRY = json.loads((ROOT / "benchmarks" / "figures.json").read_text(encoding="utf-8"))
ENTRIES = REGISTRY["figures"]
KINDS = ("source", "arithmetic", "paper", "setting", "label")
BEGIN, END = "<!-- figures:checked -->", "<!-- /figures:checked -->"
NUMBER = re.compile(r"(?<![\w.])[-+−]?\d(?:[\d,]*\d)?(?:\.\d+)?(?:e[-+]?\d+)?%?")
# code spans, link targets, comments, table rules, and names with digits (GPT-2, Table 3, §7, Figure 4, App. H.2)
IGNORED = re.compile(r"`[^`]*`|\]\([^)]*\)|<!--.*?-->|\|[-:| ]+\||GPT-\d|(?:Tables?|Figures?|Fig\.|§|App\. [A-Z]\.?)\s?\d+(?:\s*(?:and|,)\s*\d+)*|[A-Za-z]+\d\w*")


def _resolve(record, key):
    """Follow `key` through nested dicts and lists; {"where": {...}} picks the list item with those fields."""
    value = record
    for step in key:
        if isinstance(step, dict):
            matches = [item for item in value if all(item.get(k) == v for k, v in step["where"].items())]
            assert len(matches) == 1, f"{step} matches {len(matches)} items"
            value = matches[0]
        else:
            value = value[step]
    return value


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg}


def _arithmetic(expression: str) -> float:
    """Evaluate numbers and + - * / ** only."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError(f"not plain arithmetic: {ast.dump(node)}")
    return walk(ast.parse(expression, mode="eval"))


def _read(file: str):
    """A result file's records: the JSON object, or for .jsonl the list of one record per line."""
    text = (ROOT / file).read_text(encoding="utf-8")
    if file.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def _value_of(entry):
    if "source" in entry:
        src = entry["source"]
        record = _read(src["file"])
        value = _resolve(record, src["key"])
        if "minus" in src:
            value = value - _resolve(record, src["minus"])
        value = value * src.get("scale", 1)
        return src.get("format", "{}").format(value)
    if "arithmetic" in entry:
        return entry.get("format", "{}").format(_arithmetic(entry["arithmetic"]))
    return None


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e['doc']}:{e['value']}:{i}" for i, e in enumerate(ENTRIES)])
def test_each_figure_equals_its_source(entry):
    doc = (ROOT / entry["doc"]).read_text(encoding="utf-8")
    assert entry["text"] in doc, f"{entry['doc']} no longer says {entry['text']!r}"
    assert entry["value"] in entry["text"], f"{entry['value']!r} is not in its snippet {entry['text']!r}"
    assert sum(k in entry for k in KINDS) == 1, f"say where {entry['value']} comes from: one of {KINDS}"
    value = _value_of(entry)
    if value is not None:
        assert value == entry["value"], f"{entry['doc']} says {entry['value']}, its source gives {value}"


def _checked_numbers(doc: str):
    for region in re.findall(re.escape(BEGIN) + r"(.*?)" + re.escape(END), doc, flags=re.S):
        for line in region.splitlines():
            yield from (m.group(0) for m in NUMBER.finditer(IGNORED.sub(" ", line)))


@pytest.mark.parametrize("doc", sorted({e["doc"] for e in ENTRIES} | set(SCANNED)))
def test_every_number_in_a_checked_region_is_registered(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert text.count(BEGIN) == text.count(END) >= 1, f"{doc}: unbalanced or missing {BEGIN} markers"
    assert any(e["doc"] == doc for e in ENTRIES), f"{doc}: no figure of it is registered in benchmarks/figures.json"
    registered = {e["value"] for e in ENTRIES if e["doc"] == doc} | set(REGISTRY.get("not_figures", []))
    bare = {r.strip("+-−%") for r in registered}  # a sign or a percent sign is part of how a figure is printed
    unregistered = sorted({n for n in _checked_numbers(text) if n.strip("+-−%") not in bare})
    assert not unregistered, f"{doc}: numbers with no source in benchmarks/figures.json: {unregistered}"


def test_no_table_mixes_machines():
    machines = {}
    for entry in ENTRIES:
        if "source" in entry and "table" in entry:
            record = _read(entry["source"]["file"])
            machine = record.get("provenance", record).get("machine", {}) if isinstance(record, dict) else {}
            machines.setdefault(entry["table"], set()).add((machine.get("cpu_model"), machine.get("gpu")))
    mixed = {table: sorted(map(str, found)) for table, found in machines.items() if len(found) > 1}
    assert not mixed, f"tables whose rows come from different machines: {mixed}"


def test_a_figure_that_differs_from_its_file_fails():
    entry = {"doc": "README.md", "text": "x", "value": "1.0",
             "source": {"file": "benchmarks/figures.json", "key": ["figures", 0, "value"]}}
    assert _value_of(entry) == ENTRIES[0]["value"]
    scale = ["figures", 0, "source", "scale"]
    difference = {"source": {"file": "benchmarks/figures.json", "key": scale, "minus": scale}}
    assert _value_of(difference) == "0.0"
    assert all(isinstance(line, dict) for line in _read("benchmarks/results/lr_sweep.jsonl"))
    assert _value_of({"label": "a notebook's number"}) is None
    assert _arithmetic("2 * 4 * 8 * (128 + 128)") == 16384
    with pytest.raises(ValueError, match="not plain arithmetic"):
        _arithmetic("__import__('os')")
    text = f"{BEGIN}\nloss 1.23 and `cmd --steps 40` [a](b/2.md) on GPT-2, Table 3, §7, E2E\n{END}"
    assert list(_checked_numbers(text)) == ["1.23"]
