"""Random numbers: one seed for everything tinylora draws (initialisation, dropout, sampling, data order).

    tinylora.manual_seed(0)   # same seed, same run

Weights are drawn on the host with NumPy (so a model is identical on CPU and
GPU); dropout masks are drawn on the tensor's device for speed.
"""

from __future__ import annotations

import numpy

_seed = 0
_host = numpy.random.default_rng(_seed)


def manual_seed(seed: int) -> None:
    """Reseed every generator tinylora uses."""
    global _seed, _host
    _seed = int(seed)
    _host = numpy.random.default_rng(_seed)


def host_rng() -> numpy.random.Generator:
    """The NumPy generator used for parameter initialisation and data shuffling."""
    return _host


def device_rng(device):
    """A generator that draws directly on `device` (NumPy's on the CPU, CuPy's on the GPU).

    Off the CPU it is a new generator seeded from the host generator at every call, so the host
    generator's state, which checkpoints save, decides every draw and a resumed run is exact there too.
    """
    if device.name == "cpu":
        return _host
    return device.xp.random.default_rng(int(_host.integers(2**63 - 1)))


def get_rng_state() -> dict:
    """The host generator's state as JSON-friendly data (saved in checkpoints)."""
    return {"seed": _seed, "bit_generator": _host.bit_generator.state}


def set_rng_state(state: dict) -> None:
    """Restore a state returned by `get_rng_state()`."""
    global _seed
    _seed = int(state["seed"])
    _host.bit_generator.state = state["bit_generator"]
