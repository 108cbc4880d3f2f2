"""Smoke tests of the benchmark harness (benchmarks/): every entry point runs on the tiny shape.

They check that the harness works and that its numbers hang together, not how fast anything is:
each entry point writes a JSON record with the machine and command, the report turns the records into
RESULTS.md, and the analytic model agrees with the models the benchmarks build. Most entry points run
in this process (their main(argv)); one runs as `python -m` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # benchmarks/ is run from the repository root (python -m), not installed
    sys.path.insert(0, str(REPO))

from benchmarks import adapter_size, analytic, ceiling, flops, inference, memory, report, run_all, speed  # noqa: E402
from benchmarks.shapes import SHAPES, get_shape  # noqa: E402

TINY = ["--config", "tiny", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_threads():
    """The entry points pin thread variables (and torch's thread count): undo that for the tests that follow."""
    saved = {name: os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch else None
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(torch_threads or max(1, (os.cpu_count() or 1)))


def test_memory_tinylora_lora_and_full_write_consistent_records(tmp_path):
    # two steps: AdamW creates its state in the first, so the second step's peak includes it
    lora = memory.main([*TINY, "--impl", "tinylora", "--method", "lora", "--rank", "4", "--steps", "2",
                        "--out", str(tmp_path / "m_lora.json")])
    full = memory.main([*TINY, "--impl", "tinylora", "--method", "full", "--steps", "2",
                        "--out", str(tmp_path / "m_full.json")])
    for record in (lora, full):
        assert record["machine"]["cpu_model"] and record["threads"] == 1
        assert record["command"].startswith("python -m benchmarks.memory")
        assert record["result"]["peak_above_model_bytes"] >= 0
        tagged = record["result"]["tagged"]
        assert tagged["peak_split"]["saved"] > 0, "tinylora's accounting saw nothing saved for backward"
    # what the benchmark built has exactly the parameters the analytic model counts
    for record, method in ((lora, "lora"), (full, "full")):
        expected = analytic.parameter_counts(get_shape("tiny"), method, rank=4)
        assert record["result"]["params"] == {"total": expected["total"], "trainable": expected["trainable"]}
    # full fine-tuning holds AdamW state for every weight; LoRA only for A and B
    assert full["result"]["tagged"]["peak_split"]["optimizer"] > 10 * lora["result"]["tagged"]["peak_split"]["optimizer"]
    assert json.loads((tmp_path / "m_lora.json").read_text())["contender"]["label"] == "tinylora-lora-r4"


def test_saved_activations_match_the_analytic_model():
    """After a forward pass, tinylora keeps (nearly) exactly the tensors analytic.py lists as necessary."""
    import tinylora
    from tinylora.engine.autograd import Function
    from tinylora.engine.backend import memory as tracker

    from benchmarks.shapes import make_batch
    from benchmarks.tinylora_contender import Contender

    shape = get_shape("tiny")
    for method in ("lora", "full"):
        contender = Contender(shape, method, 4, "cpu", seed=0)
        idx, targets = contender.batch(*make_batch(shape))
        loss = contender.model(idx, targets)[1]
        params = {id(tracker._base_buffer(p.data)) for p in contender.model.parameters()}
        buffers, seen, stack = {}, set(), [loss._ctx]
        while stack:  # every array the graph's nodes hold for backward, counted once per buffer
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            for array in node.saved:
                if array is not None and hasattr(array, "nbytes"):
                    base = tracker._base_buffer(array)
                    if id(base) not in params:
                        buffers[id(base)] = base.nbytes
            stack.extend(p for p in node.parents if isinstance(p, Function))
        saved = sum(buffers.values())
        expected = analytic.memory_model(shape, method, rank=4)["saved_activations"]
        # slack: a few 4-byte scalars (each LoRA layer's `scaling` constant, kept by its multiply)
        assert expected <= saved <= expected + 64, f"{method}: saved {saved} B, analytic minimum {expected} B"
        del loss
        tinylora.manual_seed(0)


def test_speed_with_profile_accounts_for_the_step(tmp_path):
    record = speed.main([*TINY, "--impl", "tinylora", "--method", "lora", "--rank", "4", "--warmup", "1",
                         "--steps", "2", "--profile", "1", "--out", str(tmp_path / "s.json")])
    result = record["result"]
    assert len(result["step_seconds"]) == 2 and result["median_step_seconds"] > 0
    assert result["tokens_per_second"] == pytest.approx(get_shape("tiny").tokens / result["median_step_seconds"])
    profile = result["profile"]
    assert {"matmul", "optimizer"} <= set(profile["categories"])
    assert 0 < profile["total"] <= profile["step"] * 1.01  # op times are part of the step
    from tinylora.engine.autograd import Function

    from benchmarks.op_profile import _all_subclasses

    patched = [c.__name__ for c in _all_subclasses(Function) if c.__dict__.get("forward", min).__name__ == "timed"]
    assert not patched, f"the profiler must restore every op on exit; still patched: {patched}"


def test_step_flops_lora_is_about_two_thirds_of_full():
    shape = SHAPES["gpt2"]
    full, lora = flops.step_flops(shape, "full"), flops.step_flops(shape, "lora", rank=8)
    forward = flops.forward_flops(shape, "full")["total"]
    assert full == 3 * forward  # full FT: every product three times (y, dx, dW)
    assert 0.6 < lora / full < 0.72


def test_inference_adapter_and_ceiling_entry_points(tmp_path):
    inf = inference.main([*TINY, "--rank", "4", "--lengths", "8", "--rounds", "2", "--new-tokens", "3",
                          "--prompt", "4", "--gen-repeats", "1", "--out", str(tmp_path / "i.json")])
    latency = inf["result"]["latency"]["8"]
    assert set(latency["seconds"]) == {"base", "merged", "unmerged"}
    assert inf["result"]["generation"]["with_cache"]["tokens_per_second"] > 0
    size = adapter_size.main([*TINY, "--ranks", "1,4", "--out", str(tmp_path / "a.json")])["result"]
    assert size["adapters"]["1"]["bytes"] < size["adapters"]["4"]["bytes"] < size["checkpoint_bytes"]
    for rank in ("1", "4"):
        assert size["adapters"][rank]["params"] == size["adapters"][rank]["formula_params"]
    ceil = ceiling.main([*TINY, "--repeats", "1", "--out", str(tmp_path / "c.json")])["result"]
    assert ceil["ceiling_gflops_per_second"]["numpy"] > 0


@pytest.mark.slow  # imports torch (and transformers) in a fresh process
@pytest.mark.parametrize("impl", ["torch", "hf"])
def test_peer_memory_and_speed(tmp_path, impl):
    require("torch")
    if impl == "hf":
        require("transformers")
        require("peft")
    m = memory.main([*TINY, "--impl", impl, "--method", "lora", "--rank", "4", "--steps", "1",
                     "--out", str(tmp_path / "m.json")])
    expected = analytic.parameter_counts(get_shape("tiny"), "lora", rank=4)
    # HF adapts the fused c_attn: r (C + 3C) per layer, the same count as separate q and v
    assert m["result"]["params"]["trainable"] == expected["trainable"]
    s = speed.main([*TINY, "--impl", impl, "--method", "full", "--warmup", "0", "--steps", "1",
                    "--out", str(tmp_path / "s.json")])
    assert s["result"]["median_step_seconds"] > 0


def test_python_m_entry_point_pins_threads(tmp_path):
    out = tmp_path / "m.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "benchmarks.memory", *TINY, "--impl", "tinylora", "--steps", "1",
                    "--out", str(out)], check=True, cwd=REPO, env=env, capture_output=True, timeout=120)
    record = json.loads(out.read_text())
    assert record["threads_pinned_before_import"] is True


def test_run_all_suites_list_jobs_and_report_builds_results_md(tmp_path, capsys):
    for suite in ("smoke", "teaching", "gpt2", "curve", "all"):
        assert run_all.main(["--suite", suite, "--dry-run", "--results-dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "benchmarks.memory --config gpt2 --impl tinylora --method lora --rank 8" in listed
    # the report over records written by the entry points
    memory.main([*TINY, "--impl", "tinylora", "--method", "lora", "--rank", "8", "--steps", "1",
                 "--out", str(tmp_path / "memory__tiny__tinylora-lora-r8__cpu__rep0.json")])
    speed.main([*TINY, "--impl", "tinylora", "--method", "lora", "--rank", "8", "--warmup", "0", "--steps", "1",
                "--out", str(tmp_path / "speed__tiny__tinylora-lora-r8__cpu__rep0.json")])
    path = report.main(["--results-dir", str(tmp_path), "--no-plots"])
    text = path.read_text()
    assert "| tinylora-lora-r8 | 1 |" in text and "GPU numbers are pending" in text
    assert "not measured" in text  # no GPT-2 run here: the targets say so instead of guessing


@pytest.mark.slow  # matplotlib renders every figure
def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks import plots

    # each in a fresh process, as the benchmarks run: inside this long-lived test process the steps'
    # memory can be pages the process already holds, and a peak of 0 bytes draws no ratio curve
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for method, name in ((["full"], "tinylora-full"), (["lora", "--rank", "8"], "tinylora-lora-r8")):
        subprocess.run([sys.executable, "-m", "benchmarks.memory", *TINY, "--impl", "tinylora", "--method", *method,
                        "--steps", "1", "--out", str(tmp_path / f"memory__tiny__{name}__cpu__rep0.json")],
                       check=True, cwd=REPO, env=env, capture_output=True, timeout=120)
    paths = plots.write_all(report.load(tmp_path), tmp_path)
    assert {p.name for p in paths} >= {"memory__cpu__tiny.png", "ratio_curve__cpu.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_bad_input_gives_clear_errors():
    with pytest.raises(ValueError, match="unknown config 'gpt5'"):
        get_shape("gpt5")
    with pytest.raises(ValueError, match="seq=2048 must lie in"):
        get_shape("gpt2", seq=2048)
    with pytest.raises(SystemExit):
        memory.main([*TINY, "--rank", "0"])
    with pytest.raises(ValueError, match="method must be"):
        analytic.memory_model(get_shape("tiny"), "bitfit")


@pytest.mark.parametrize("name", ["allocator", "gpt2", "teaching", "kernels"])
def test_compare_sets_name_runnable_speed_commands(name):
    from benchmarks import compare

    rows = compare.contenders(name)
    assert len({label for label, _, _ in rows}) == len(rows) > 1  # distinct labels, more than one contender
    for label, args, env in rows:
        assert args[args.index("--impl") + 1] in ("tinylora", "torch", "hf") and "--config" in args, label
        assert all(key.startswith(("TINYLORA_", "MALLOC_")) for key in env), label
    if name == "kernels":
        assert {env.get("TINYLORA_KERNELS") for _, _, env in rows} == {None, "0"}
