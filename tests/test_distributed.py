"""Data-parallel training over MPI (tinylora/train/distributed.py), on 2 ranks of this machine.

- 2 ranks, each on half of every batch, end with the parameters that 1 process gets from the same global
  batches: equal to float32 rounding (the gradient sums run in another order), not bitwise;
- only rank 0 writes, and a checkpoint written by 2 ranks refuses to resume in 1 process;
- a rank that dies makes the job end with an error instead of hanging.

The MPI tests skip when mpi4py or mpiexec is missing (`pip install 'tinylora[mpi]'`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinylora.io import load_tensors
from tinylora.train import distributed

from conftest import assert_close

SCRIPT = Path(__file__).with_name("mpi_train.py")
ROOT = Path(__file__).resolve().parent.parent


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OPENBLAS_NUM_THREADS="1", **extra)
    return env


def _mpiexec():
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'tinylora[mpi]')")
    exe = shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec on PATH (pip install 'tinylora[mpi]' brings MPICH's)")
    return exe


def _run(args, ranks=None, timeout=180, **env):
    cmd = ([_mpiexec(), "-n", str(ranks)] if ranks else []) + [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_ranks_train_like_one_process_with_the_same_global_batch(tmp_path, method):
    two = _run([tmp_path / "two", "--method", method], ranks=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = _run([tmp_path / "one", "--method", method])
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_tensors(tmp_path / "one" / "params.safetensors"), load_tensors(tmp_path / "two" / "params.safetensors")
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith("attn.k.bias"):
            # its true gradient is 0 (a shift of every key by the same b adds q.b to a whole row of scores,
            # which softmax ignores), so both runs hold rounding noise that Adam scales up to lr-sized steps
            continue
        # float32: the two ranks' halves are summed in another order than one process sums the whole batch
        assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, what=name)
    assert any(not np.array_equal(a[n], np.zeros_like(a[n])) for n in a)  # something trained
    # only rank 0 wrote: one complete checkpoint, no half-written folders
    run = tmp_path / "two" / "run"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith((".", "step"))) == ["step-000003"]


@pytest.mark.slow
def test_a_checkpoint_of_two_ranks_resumes_only_with_two(tmp_path):
    assert _run([tmp_path, "--steps", "2"], ranks=2).returncode == 0
    alone = _run([tmp_path, "--steps", "2", "--resume"])
    assert alone.returncode != 0 and "written by 2 MPI rank(s)" in alone.stderr, alone.stderr[-2000:]
    again = _run([tmp_path, "--steps", "2", "--resume"], ranks=2)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_a_dead_rank_stops_the_others_instead_of_hanging(tmp_path):
    start = time.monotonic()
    done = _run([tmp_path, "--steps", "5", "--die-at", "2"], ranks=2, timeout=120, TINYLORA_MPI_TIMEOUT="5")
    assert done.returncode != 0
    assert time.monotonic() - start < 100
    assert not (tmp_path / "params.safetensors").exists()


@pytest.mark.slow
def test_a_rank_that_exits_0_before_finishing_fails_the_job_at_once(tmp_path):
    """sys.exit(0) on rank 1 mid-run: the job ends non-zero, naming the rank, long before the hung-rank timeout."""
    start = time.monotonic()
    done = _run([tmp_path, "--steps", "5", "--quit-at", "2"], ranks=2, timeout=120, TINYLORA_MPI_TIMEOUT="60")
    assert done.returncode != 0, done.stderr[-2000:]
    assert time.monotonic() - start < 50  # not the 60 s timeout: the exiting rank said so itself
    assert "rank 1: exiting before the run finished" in done.stderr
    assert not (tmp_path / "params.safetensors").exists()


def test_the_hung_rank_timeout_is_a_positive_number_with_a_laptop_default(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed._timeout() == distributed.DEFAULT_TIMEOUT == 120
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7.5")
    assert distributed._timeout() == 7.5
    for bad in ("0", "-3", "nan", "soon"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match="TINYLORA_MPI_TIMEOUT"):
            distributed._timeout()


def test_one_process_is_a_group_of_one_that_refuses_a_checkpoint_of_two():
    group = distributed.SingleProcess()
    x, y = np.zeros((4, 3)), np.ones((4, 3))
    assert group.shard(x, y) == (x, y) and group.size == 1 and group.is_writer
    group.check_resume(None)
    group.check_resume(1)
    with pytest.raises(ValueError, match="written by 2 MPI rank"):
        group.check_resume(2)


def test_cuda_aware_mpi_is_decided_by_the_variable_then_by_mpi(monkeypatch):
    class AnMPI:  # stands in for mpi4py.MPI: only the extension's query matters here
        @staticmethod
        def Query_cuda_support():
            return 1

    monkeypatch.delenv(distributed.CUDA_AWARE_ENV, raising=False)
    assert distributed.cuda_aware(AnMPI) is True
    assert distributed.cuda_aware(object()) is False  # an MPI that cannot be asked: through the host
    monkeypatch.setenv(distributed.CUDA_AWARE_ENV, "0")
    assert distributed.cuda_aware(AnMPI) is False
    monkeypatch.setenv(distributed.CUDA_AWARE_ENV, "1")
    assert distributed.cuda_aware(object()) is True
    monkeypatch.setenv(distributed.CUDA_AWARE_ENV, "yes")
    with pytest.raises(ValueError, match="TINYLORA_MPI_CUDA_AWARE"):
        distributed.cuda_aware(object())
