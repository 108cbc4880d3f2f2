"""Reverse-mode automatic differentiation in one file: Function, apply, the topological sort, backward.

The graph is made of op nodes, one `Function` subclass per op (ops/), each with
forward(*arrays) -> array and backward(dL/d(output)) -> one gradient per input.
`Op.apply(*tensors)` runs forward; if an input needs a gradient, the output's
`_ctx` is the node and `node.parents` are the inputs' nodes (or leaf tensors).
A node never points at an intermediate tensor, so an activation stays alive
only if a node saved it: with W frozen, y = x @ W.T saves W, not x (matmul.py).
That is where LoRA's memory saving comes from.

`backward()` visits nodes in reverse topological order (an explicit stack: no
recursion limit), hands each dL/d(its output), then releases it (a second
backward through it is an error). Only leaves get `.grad`, and it accumulates
(`_write_leaf_grads`, the last step). Lines marked `# memory:` are one call each
into backend/memory.py, which only counts bytes: a reader may skip them.
"""

from __future__ import annotations

import contextlib

from tinylora.engine.backend import memory

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) inside which ops build no graph: outputs never require grad."""

    def __enter__(self):
        global _grad_enabled
        self._previous, _grad_enabled = _grad_enabled, False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous


class Function:
    """One node of the graph: an op's forward, its backward, and what backward needs.

    `self.needs_input_grad[i]`: does input i want a gradient (forward saves only what those need).
    `self.xp`: the array module (numpy or cupy) of the inputs' device."""

    keeps_dtype = True  # float inputs give an output of the same dtype (only To changes it, on purpose)

    def __init__(self, needs_input_grad, device):
        self.needs_input_grad = needs_input_grad
        self.device, self.xp = device, device.xp  # the output's device (To.forward changes it)
        self.saved = ()
        self.parents = ()  # per input: a Function, a leaf Tensor, or None (no gradient needed)
        self.freed = False

    def save_for_backward(self, *arrays):
        memory.hold_for_backward(arrays)  # memory: counted as 'saved' until released
        self.saved = arrays

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Drop what backward needed; called as soon as backward has passed this node."""
        memory.drop_for_backward(self.saved)  # memory: no longer counted as 'saved'
        self.saved, self.parents, self.freed = (), (), True

    def __del__(self):
        if self.saved and memory is not None:  # (None only at interpreter shutdown)
            memory.drop_for_backward(self.saved)  # memory: a graph dropped without backward stops counting too

    @classmethod
    def apply(cls, *inputs, **options):
        """Run the op on tensors `inputs`; `options` are plain Python values such as `axis=`."""
        from tinylora.engine.tensor import Tensor, check_output_dtype, check_same_device_and_dtype

        device, float_dtype = check_same_device_and_dtype(cls.__name__, inputs)
        needs = tuple(_grad_enabled and t.requires_grad for t in inputs)
        node = cls(needs, device)
        out = node.forward(*(t.data for t in inputs), **options)
        if cls.keeps_dtype:
            check_output_dtype(cls.__name__, float_dtype, out)
        if not any(needs):
            return Tensor(out, device=node.device)  # no gradient needed: the node is dropped here
        node.parents = tuple((t if t._ctx is None else t._ctx) if need else None for t, need in zip(inputs, needs))
        result = Tensor(out, device=node.device, requires_grad=True)
        result._ctx = node
        return result


def topological_order(root):
    """Nodes reachable from `root`, every consumer before the nodes that produced its inputs.

    Each node is pushed twice: once to visit its parents, once (done) to be emitted after them;
    the emitted post-order, reversed, is the order backward needs."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
        elif id(node) not in visited:
            if node.freed:
                raise RuntimeError(
                    "backward through a graph that has already been freed: tinylora releases each node as "
                    "backward passes it, so call backward() once per forward pass (run the forward again)"
                )
            visited.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node.parents if isinstance(p, Function) and id(p) not in visited)
    order.reverse()
    return order


def backward(tensor, grad) -> None:
    """Backpropagate `grad` = dL/d(tensor) (an array of its shape and dtype: Tensor.backward makes
    it), adding dL/d(leaf) into every leaf's `.grad`."""
    leaf_grads = {}  # id(leaf) -> (leaf, dL/d(leaf) summed over every use)
    if tensor._ctx is None:  # backward on a leaf itself
        leaf_grads[id(tensor)] = (tensor, grad)
    else:
        pending = {id(tensor._ctx): grad}  # id(node) -> dL/d(node's output), summed over its consumers
        for node in topological_order(tensor._ctx):
            out_grad = pending.pop(id(node), None)
            if out_grad is not None:
                _send_to_inputs(node, node.backward(out_grad), pending, leaf_grads)
            node.release()  # memory: its saved arrays and links go now, not after the pass (and it is marked used)
    _write_leaf_grads(leaf_grads.values())


def _send_to_inputs(node, input_grads, pending, leaf_grads) -> None:
    """Add each of `node`'s input gradients to its parent's running sum (a node or a leaf)."""
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    for parent, g in zip(node.parents, input_grads):
        if parent is None or g is None:  # this input needs no gradient
            continue
        if isinstance(parent, Function):
            key = id(parent)
            pending[key] = g if key not in pending else pending[key] + g
        else:
            previous = leaf_grads.get(id(parent))
            leaf_grads[id(parent)] = (parent, g if previous is None else previous[1] + g)


def _write_leaf_grads(pairs) -> None:
    """leaf.grad += dL/d(leaf) for each (leaf, gradient) pair (PyTorch semantics: gradients accumulate).

    A leaf's first `.grad` gets a buffer of its own (a copy) when the gradient array
    - was already given to another leaf in this pass (Add hands one upstream array to both
      inputs): optimizers and clipping change `.grad` in place, so one leaf's update would
      silently change the other's;
    - is a view of another array (Sum's backward is a broadcast view): a view keeps its whole
      base alive, and a broadcast view is read-only;
    - has another dtype than the leaf.
    """
    from tinylora.engine.tensor import Tensor

    given = set()  # ids of the arrays already given to a leaf (each owns its data, so its id names its buffer)
    for leaf, g in pairs:
        if leaf.grad is not None:
            leaf.grad.data += g  # accumulate into the existing buffer
            continue
        if id(g) in given or not g.flags.owndata or g.dtype != leaf.dtype:
            g = g.astype(leaf.dtype, copy=True)
        given.add(id(g))
        leaf.grad = Tensor(g, device=leaf.device)
        memory.track(g, "gradients")  # memory: counted as 'gradients' from now on
