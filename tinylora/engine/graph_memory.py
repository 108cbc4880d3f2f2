"""What autograd does for memory's sake: a reader learning backward may skip this file.

autograd.py calls these on the lines it marks `# memory:`.

    hold(arrays), let_go(arrays)   count the arrays a node keeps for backward as 'saved' while it keeps
                                   them (see backend/memory.py); no array is copied or freed here
    write_leaf_grads(pairs)        put each leaf's summed gradient into its `.grad`, in a buffer of its own
"""

from __future__ import annotations

from tinylora.engine.backend import memory


def hold(arrays) -> None:
    """A node keeps `arrays` for its backward: count each as 'saved' memory meanwhile."""
    for a in arrays:
        if a is not None:
            memory.hold_for_backward(a)


def let_go(arrays) -> None:
    """The node let go of `arrays` (backward passed it, or its graph was dropped): stop counting them."""
    for a in arrays:
        if a is not None:
            memory.drop_for_backward(a)


def write_leaf_grads(pairs) -> None:
    """Add each (leaf, gradient) pair into the leaf's `.grad` (PyTorch semantics: gradients accumulate).

    A leaf's first `.grad` must own its buffer, so the gradient is copied when
    - another leaf got the same array (an Add node hands one upstream array to both
      inputs); optimizers and clipping update `.grad` in place, so one leaf's update
      would silently change the other's;
    - it is a view of another array (e.g. Sum's backward is a broadcast view): a view
      keeps its whole base array alive (memory), and a broadcast view is read-only;
    - its dtype differs from the leaf's.
    """
    from tinylora.engine.tensor import Tensor

    taken = set()  # ids of the buffers already given to a leaf in this pass
    for leaf, g in pairs:
        if leaf.grad is not None:
            leaf.grad.data += g  # accumulate into the existing buffer
            continue
        if id(memory._base_buffer(g)) in taken or not g.flags.owndata or g.dtype != leaf.dtype:
            g = g.astype(leaf.dtype, copy=True)
        taken.add(id(memory._base_buffer(g)))
        leaf.grad = Tensor(g, device=leaf.device)
        memory.track(g, "gradients")  # memory: counted as 'gradients' from now on
