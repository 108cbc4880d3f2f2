"""Data-parallel training over MPI: every rank trains on its shard of each batch, gradients are averaged.

    mpiexec -n 2 tinylora finetune --data notes.txt --out runs/dp       # the command line
    mpiexec -n 2 python <a script that calls train()>                 # the API does the same

With N ranks (processes) and a global batch of B sequences, step s runs on every rank r:

    x_r, y_r = rows [r B/N, (r+1) B/N) of batch_for_step(s)       its shard (B must divide by N)
    g_r      = d loss_r / d theta                                   loss_r: mean over its n_r kept targets
    g        = sum_r (n_r / n) g_r,   n = sum_r n_r                 one MPI all-reduce (sum) per step
    theta   <- AdamW(theta, g)                                      the same update on every rank

sum_r n_r g_r / n is exactly the gradient of the mean loss over the whole global batch, so N ranks
compute what one process computes with the same batch, up to float rounding (the sums run in another
order). theta stays identical on every rank because every rank applies the same update to the same
values. Only the trainable parameters' gradients travel: for LoRA that is r(d + k) numbers per adapted
matrix instead of d k, so the bytes per step shrink by the same factor as the trainable parameters.

What else changes under MPI: only rank 0 writes (metrics, checkpoints, the plot, the model files), and
a checkpoint records the number of ranks, so a resume with another number is refused (the batches
would be split differently), and the ranks check that they start from the same step. Every wait for
the other ranks has a timeout (TINYLORA_MPI_TIMEOUT, default 120 s: a laptop run's longest wait, a
step plus a validation pass plus rank 0's checkpoint write, is seconds; raise it for big models on
slow disks): a rank that died makes the others stop with an error naming the step, not hang. A rank
whose Python exits before its run finished (an exception, sys.exit(0), the end of a script that
skipped training) stops the whole job at once with exit code 1 and a line naming the rank, so
`mpiexec` never reports success for an unfinished run. (A process killed outright, or one that calls
os._exit, runs no Python at exit: MPICH's mpiexec then ends the others itself; the run folder then
holds no result, only its last checkpoint.)
On CuPy the gradients go to MPI as one device buffer when the MPI is CUDA-aware (no copy to the
host), else through host memory (one copy each way per step). Whether it is: TINYLORA_MPI_CUDA_AWARE=1
or 0 says so; otherwise MPI is asked (MPIX_Query_cuda_support, where mpi4py offers it), and the answer
is "no" when it cannot be asked. pip's MPICH wheel is not CUDA-aware; a CUDA-aware Open MPI or MPICH
build is (then set TINYLORA_MPI_CUDA_AWARE=1 if mpi4py cannot ask it).

Needs `pip install 'tinylora[mpi]'` (mpi4py and the MPICH wheel). One process without mpiexec needs nothing:
`current()` is then a one-rank group whose methods do nothing.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

from tinylora.engine.backend import host, move, synchronize, to_host

TIMEOUT_ENV = "TINYLORA_MPI_TIMEOUT"
DEFAULT_TIMEOUT = 120.0  # seconds without an answer from the other ranks before the job is stopped
CUDA_AWARE_ENV = "TINYLORA_MPI_CUDA_AWARE"
_RANK_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")  # set by MPICH's and Open MPI's mpiexec


def launched_by_mpiexec() -> bool:
    """True when this process is one of several that mpiexec started."""
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _RANK_VARIABLES)


class SingleProcess:
    """One rank, no communication: what `current()` is without mpiexec."""

    rank, size, is_writer = 0, 1, True
    bytes_reduced = 0  # gradient bytes all-reduced so far

    def shard(self, x, y):
        return x, y

    def average_gradients(self, params, n_kept: int) -> None:
        pass

    def global_mean(self, value: float, n_kept: int) -> float:
        return value

    def start(self, step: int) -> None:
        """A run begins at `step` on this rank (the others must agree; see DataParallel)."""

    def finish(self) -> None:
        """This rank's run is done: it may exit."""

    def check_resume(self, saved_size) -> None:
        """Refuse a checkpoint written by another number of ranks (its batches were split differently)."""
        if saved_size is not None and saved_size != self.size:
            raise ValueError(f"this checkpoint was written by {saved_size} MPI rank(s), and this run has {self.size}; "
                             f"resume it with mpiexec -n {saved_size} (the batches are split by the number of ranks)")


class DataParallel(SingleProcess):
    """N ranks of an MPI communicator training one model together (see the module docstring)."""

    def __init__(self, comm=None, timeout: float | None = None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_writer = self.rank == 0
        self.timeout = _timeout() if timeout is None else timeout
        self.bytes_reduced = 0
        self.step = 0  # all-reduces so far (named in a timeout's message)
        self.cuda_aware = cuda_aware(MPI)
        self.running = False  # between start() and finish(): exiting now leaves the others waiting
        atexit.register(self._exit_before_finishing)  # runs before mpi4py's MPI_Finalize (registered earlier)

    def start(self, step: int) -> None:
        """Every rank must start from the same step (a run folder that one rank sees differently, say on a
        disk that is not shared, would pair different steps' gradients): one line on every rank if not."""
        first, last = self._all_reduce(host.array([-float(step), float(step)]), "the start steps", self.MPI.MAX)
        if -first != last:
            raise RuntimeError(f"data-parallel training: the ranks would start from different steps "
                               f"({-first:.0f} to {last:.0f}); does every rank see the same run folder?")
        self.running = True

    def finish(self) -> None:
        self.running = False

    def _exit_before_finishing(self) -> None:
        if self.running:  # the others would wait for this rank until the timeout, then mpiexec might say 0
            sys.stderr.write(f"tinylora rank {self.rank}: exiting before the run finished (after all-reduce "
                             f"{self.step}); stopping every rank.\n")
            sys.stderr.flush()
            self.comm.Abort(1)

    def shard(self, x, y):
        """This rank's rows of the global batch (x, y): host arrays (B, T)."""
        batch = x.shape[0]
        if batch % self.size:
            raise ValueError(f"data-parallel training: the batch size {batch} must be a multiple of the "
                             f"number of MPI ranks {self.size}")
        rows = slice(self.rank * batch // self.size, (self.rank + 1) * batch // self.size)
        return x[rows], y[rows]

    def _all_reduce(self, buffer, what: str, op=None):
        """Sum (or `op`) `buffer` (a host array) over the ranks in place, waiting at most `timeout` seconds."""
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=op or self.MPI.SUM)
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                sys.stderr.write(f"tinylora rank {self.rank}: no answer from the other ranks within {self.timeout:.0f} s "
                                 f"while summing {what} (all-reduce {self.step}); a rank has probably died. "
                                 f"Stopping every rank ({TIMEOUT_ENV} sets the limit).\n")
                sys.stderr.flush()
                self.comm.Abort(1)  # ends this process and every other rank of the job
            time.sleep(0.0005)
        self.step += 1
        return buffer

    def average_gradients(self, params, n_kept: int) -> None:
        """Replace each trainable p.grad by sum_r (n_r / n) g_r, the gradient of the global batch's mean loss."""
        counts = self._all_reduce(host.array([float(n_kept)]), "the target counts")
        grads = [p.grad for p in params if p.grad is not None]
        if len(grads) != len(params):
            raise RuntimeError("data-parallel training: some trainable parameters got no gradient on this rank")
        device = grads[0].device
        on_device = device.name == "cuda" and self.cuda_aware  # MPI reads and writes the GPU buffer itself
        xp = device.xp if on_device else host
        flat = xp.concatenate([(g.data if on_device else to_host(g.data)).ravel() for g in grads])  # one message
        flat *= flat.dtype.type(n_kept / counts[0])
        if on_device:
            synchronize(device)  # the GPU must have written the buffer before MPI reads it
        self._all_reduce(flat, "the gradients")
        self.bytes_reduced += flat.nbytes
        offset = 0
        for g in grads:
            part = flat[offset : offset + g.size].reshape(g.shape)
            g.data[...] = part if on_device else move(part, g.device)
            offset += g.size

    def global_mean(self, value: float, n_kept: int) -> float:
        """The mean over the global batch of a per-rank mean `value` over n_kept targets (the loss, for logs)."""
        pair = self._all_reduce(host.array([value * n_kept, float(n_kept)]), "the losses")
        return float(pair[0] / pair[1])


def _timeout() -> float:
    """TINYLORA_MPI_TIMEOUT in seconds (a positive number), else DEFAULT_TIMEOUT."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: give the seconds to wait for the other ranks, a positive number")
    return value


def cuda_aware(MPI) -> bool:
    """Can this MPI take GPU buffers? TINYLORA_MPI_CUDA_AWARE=1/0 decides; else MPI's own answer; else no."""
    value = os.environ.get(CUDA_AWARE_ENV, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{CUDA_AWARE_ENV}={value!r}: give 1 (the MPI takes GPU buffers) or 0 (copy through the host)")
    if value:
        return value == "1"
    query = getattr(MPI, "Query_cuda_support", None)  # MPIX_Query_cuda_support, in mpi4py builds that have it
    try:
        return bool(query()) if query is not None else False
    except Exception:  # an MPI without the extension: it cannot say, so copy through the host
        return False


_current = None


def current():
    """The data-parallel group of this process: DataParallel under mpiexec, else SingleProcess."""
    global _current
    if _current is None:
        if launched_by_mpiexec():
            try:
                _current = DataParallel()
            except ImportError as err:
                raise RuntimeError("started by mpiexec with several ranks, but mpi4py is not installed: "
                                   "pip install 'tinylora[mpi]'") from err
        else:
            _current = SingleProcess()
    return _current
