"""Parameter: a leaf tensor that a Module owns and an optimizer may train."""

from __future__ import annotations

from tinylora.engine.backend import memory
from tinylora.engine.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that requires grad by default and is counted as 'parameters' memory.

    Set `requires_grad=False` to freeze it: a frozen parameter never gets a
    `.grad` and an optimizer keeps no state for it.
    """

    def __init__(self, data, requires_grad: bool = True, device=None, dtype=None):
        if isinstance(data, Tensor):
            device = device or data.device
            data = data.data
        super().__init__(data, requires_grad=requires_grad, device=device, dtype=dtype)
        memory.track(self.data, "parameters")  # memory: counted as "parameters"

    def __repr__(self) -> str:
        return "Parameter(" + super().__repr__() + ")"
