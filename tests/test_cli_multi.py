"""`tinylora serve`, `tinylora download` and `tinylora analyze`, in-process on tiny models."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_cli import adapter, base, cli  # noqa: F401: the fixtures of tests/test_cli.py

from tinylora import no_grad, tensor
from tinylora.lora import load_adapter
from tinylora.model.generate import generate
from tinylora.model.load import load_model
from tinylora.tokenizers import ByteTokenizer


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_serve_answers_each_request_as_its_adapter_alone_would(capsys, tmp_path, base, adapter):  # noqa: F811
    requests = [{"adapter": "x", "prompt": "the otter"}, {"prompt": "the otter"}, {"adapter": "x", "prompt": "hi"},
                {"adapter": "y", "prompt": "the heron"}]
    path = _write_jsonl(tmp_path / "requests.jsonl", requests)
    code, out, err = cli(capsys, "serve", "--model", base, "--adapter", f"x={adapter}", "--adapter", f"y={adapter}",
                         "--requests", path, "--out", tmp_path / "out.jsonl", "--max-new-tokens", "6")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in requests]
    tok = ByteTokenizer()
    for request, row in zip(requests, rows):
        model, _ = load_model(base)
        if request.get("adapter"):
            load_adapter(model, adapter)
        ids = tok.encode(request["prompt"])
        alone = generate(model, tensor([ids]), 6, temperature=0.0, eos_token=tok.eot_id).numpy()[0]
        assert row["completion"] == tok.decode(alone[len(ids):].tolist()).split("<|endoftext|>")[0]
    assert rows[0]["completion"] != rows[1]["completion"]  # the adapter changes the answer


def test_serve_bad_input_is_one_line(capsys, tmp_path, base, adapter):  # noqa: F811
    path = _write_jsonl(tmp_path / "r.jsonl", [{"adapter": "nope", "prompt": "a"}])
    code, _, err = cli(capsys, "serve", "--model", base, "--adapter", f"x={adapter}", "--requests", path,
                       "--out", tmp_path / "o.jsonl")
    assert code == 2 and "no --adapter gives" in err and err.count("\n") == 1
    code, _, err = cli(capsys, "serve", "--model", base, "--adapter", "x", "--requests", path, "--out", tmp_path / "o")
    assert code == 2 and "NAME=DIR" in err


def _fake_hub_cache(root, model_dir, repo="gpt2", commit="0" * 40):
    """The layout huggingface_hub keeps on disk: models--REPO/refs/main -> COMMIT, snapshots/COMMIT/files."""
    repo_dir = root / f"models--{repo}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name in os.listdir(model_dir):
        (snapshot / name).write_bytes((model_dir / name).read_bytes())


def test_download_fetches_a_gpt2_folder_from_the_hub_cache_offline(capsys, tmp_path, monkeypatch):
    """Up to the network boundary: huggingface_hub resolves 'gpt2' from a cache this test builds, offline."""
    pytest.importorskip("huggingface_hub")
    from tinylora import GPT, GPTConfig, manual_seed
    from tinylora.model.hf_gpt2 import save_gpt2

    manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=256, dropout=0.0))
    made = tmp_path / "made"
    save_gpt2(model, made)
    (made / "vocab.json").write_text(json.dumps({chr(33 + i): i for i in range(256)}))
    (made / "merges.txt").write_text("#version: 0.2\n")
    _fake_hub_cache(tmp_path / "hub", made)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import: set it here too
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    code, out, err = cli(capsys, "download", "gpt2", "--out", tmp_path / "gpt2")
    assert code == 0, err
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
        assert (tmp_path / "gpt2" / name).read_bytes() == (made / name).read_bytes()
    from tinylora.model.hf_gpt2 import load_gpt2

    loaded = load_gpt2(tmp_path / "gpt2")
    idx = np.arange(8)[None]
    with no_grad():
        np.testing.assert_array_equal(loaded(idx)[0].numpy(), model(idx)[0].numpy())
    code, _, err = cli(capsys, "download", "gpt2-xl", "--out", tmp_path / "xl")  # not in the cache, offline
    assert code == 2 and err.startswith("tinylora: error:") and err.count("\n") == 1


@pytest.mark.slow
def test_analyze_writes_results_for_every_analysis(capsys, tmp_path):
    code, out, err = cli(capsys, "analyze", "--out", tmp_path, "--ranks", "2,8", "--seeds", "0,1", "--steps", "2",
                         "--batch-size", "2")
    assert code == 0, err
    results = json.loads((tmp_path / "results.json").read_text())
    assert [row["r"] for row in results["rank_sweep"]] == [2, 8]
    assert np.array(results["figure3"]["q"]["phi"]).shape == (2, 8)  # r = 2 against r = 8, never 8 against itself
    assert np.array(results["figure4"]["v"]["phi"]).shape == (8, 8)
    assert set(results["table7"]) == {"2", "8"}
    assert "Table 7" in (tmp_path / "RESULTS.md").read_text()
