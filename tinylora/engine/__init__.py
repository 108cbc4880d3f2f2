"""The autograd engine: read it first, in this order.

    tensor.py        Tensor: an array, its dtype and device, and the node that made it
    autograd.py      Function (one op node), apply, the topological sort, backward and the writing of
                     each leaf's `.grad`: all in one file
    ops/             one small Function subclass per op, its math in the class docstring
                     (called through tinylora.functional, the one op namespace)
    backend/         where arrays live (NumPy on the CPU, CuPy on a GPU) and how many bytes they take;
                     tune_for_training(), the one switch for allocator and thread settings
    kernels/         the fast paths of the hottest ops: the same numbers as their readable lines (skip at first)
    random.py        seeded random numbers on the host and the device

Everything above the engine (nn, the model, LoRA) builds on these names only.
"""
