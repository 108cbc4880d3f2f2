"""The autograd engine: read it first, in this order.

    backend/    where arrays live (NumPy on the CPU, CuPy on a GPU) and how many bytes they take
    tensor.py   Tensor: an array, its dtype and device, and the node that made it
    autograd.py Function (one op node), apply, the topological sort and backward
    ops/        one small Function subclass per op, each with its forward, backward and math
    random.py   seeded random numbers on the host and the device

Everything above the engine (nn, the model, LoRA) builds on these names only.
"""
