"""Reverse-mode automatic differentiation: op nodes, the backward pass, no_grad.

The graph is made of *op nodes*, not of tensors. Every op is a small `Function`
subclass with two methods:

    forward(self, *arrays)  -> output array      (and self.save_for_backward(...))
    backward(self, grad)    -> one gradient per input (None where not needed)

Calling `SomeOp.apply(*tensors)` runs forward and, if any input needs a
gradient, returns an output tensor whose `_ctx` is the node. The node links to
its inputs' nodes (or, for leaves such as parameters, to the leaf tensor
itself), never to intermediate tensors, so an activation is kept alive only if
some node saved it on purpose. That is where LoRA's memory saving comes from:

    y = x @ W.T with W frozen:  backward needs dx = dy @ W, so the node saves W,
                                 not x (see ops/matmul.py).

`backward()` walks the nodes in reverse topological order (computed with an
explicit stack, so a chain of 10,000 ops does not hit Python's recursion
limit), hands each node the gradient of its output, and then *releases* the
node: its saved arrays and links are dropped at once. A second backward through
the same graph therefore raises an error instead of silently using stale data.

Gradients accumulate into leaves only (`.grad`), as in PyTorch: two backward
passes without `zero_grad()` add up. Intermediate tensors never get `.grad`.
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
        self._previous = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False


class Function:
    """One node of the graph: an op's forward, its backward, and what backward needs.

    Subclasses implement `forward(self, *arrays, **options)` and `backward(self, grad)`.
    Inside both, `self.needs_input_grad[i]` tells whether input i wants a gradient,
    so forward can save only what those gradients need, and `self.xp` is the
    array module (numpy or cupy) of the inputs' device.
    """

    def __init__(self, needs_input_grad, xp):
        self.needs_input_grad = needs_input_grad
        self.xp = xp
        self.saved = ()
        self.parents = ()  # per input: a Function, a leaf Tensor, or None
        self.freed = False

    def save_for_backward(self, *arrays):
        """Keep `arrays` until backward has used them (counted as 'saved' memory meanwhile)."""
        for a in arrays:
            if a is not None:
                memory.hold_for_backward(a)
        self.saved = arrays

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    def release(self):
        """Drop everything backward needed: called as soon as backward has passed this node."""
        for a in self.saved:
            if a is not None:
                memory.drop_for_backward(a)
        self.saved = ()
        self.parents = ()
        self.freed = True

    def __del__(self):
        # a graph dropped without backward (e.g. an evaluation forward) gives its saved arrays back too
        if self.saved and memory is not None:  # (memory is None only at interpreter shutdown)
            for a in self.saved:
                if a is not None:
                    memory.drop_for_backward(a)

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def apply(cls, *inputs, **options):
        """Run the op on tensors `inputs` (options are plain Python values such as `axis=`)."""
        from tinylora.engine.tensor import Tensor, check_same_device_and_dtype

        device, float_dtype = check_same_device_and_dtype(cls.__name__, inputs)
        track_grad = _grad_enabled
        needs = tuple(track_grad and t.requires_grad for t in inputs)
        node = cls(needs, device.xp)
        out = node.forward(*(t.data for t in inputs), **options)
        if float_dtype is not None and out.dtype.kind == "f" and out.dtype != float_dtype:
            raise RuntimeError(
                f"{cls.__name__} turned {float_dtype} inputs into {out.dtype}: an op must keep the dtype "
                "(look for a NumPy float64 scalar such as np.sqrt(2.0) mixed into float32 math)"
            )
        if not any(needs):
            return Tensor(out, device=device)
        node.parents = tuple(
            (t._ctx if t._ctx is not None else t) if need else None for t, need in zip(inputs, needs)
        )
        result = Tensor(out, device=device, requires_grad=True)
        result._ctx = node
        return result


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the gradient of NumPy broadcasting.

    If forward broadcast an input of shape (1, C) to (B, T, C), each of its
    entries was used B*T times, so its gradient is the sum over those axes.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _topological_order(root):
    """Nodes reachable from `root`, each after every node that consumes its output.

    An explicit stack replaces recursion. Each node is pushed twice: once to
    visit its parents, once (marked done) to be emitted after them. Reversing
    the emitted post-order puts every consumer before its producers.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        if node.freed:
            raise RuntimeError(
                "backward through a graph that has already been freed: tinylora releases each node as "
                "backward passes it, so call backward() once per forward pass (run the forward again)"
            )
        visited.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if isinstance(parent, Function) and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def backward(tensor, grad=None) -> None:
    """Backpropagate from `tensor`, adding d(tensor)/d(leaf) into every leaf's `.grad`.

    `grad` is the upstream gradient dL/d(tensor); it may be omitted only when
    `tensor` holds a single element (then it is 1).
    """
    from tinylora.engine.tensor import Tensor

    if not tensor.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad (was it made under no_grad?)")
    xp = tensor.device.xp
    if grad is None:
        if tensor.data.size != 1:
            raise RuntimeError(
                f"backward() on a tensor of shape {tensor.shape} needs an explicit upstream gradient "
                "of the same shape (only a single-element tensor gets the implicit gradient 1)"
            )
        grad = xp.ones_like(tensor.data)
    else:
        grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=tensor.dtype)
        if grad.shape != tensor.shape:
            raise ValueError(f"backward(): gradient shape {grad.shape} does not match tensor shape {tensor.shape}")
        grad = grad.astype(tensor.dtype, copy=True)  # our own buffer: the caller may reuse theirs

    leaf_grads: dict[int, list] = {}  # id(leaf) -> [leaf, summed gradient]

    def deliver_to_leaf(leaf, g):
        entry = leaf_grads.get(id(leaf))
        if entry is None:
            leaf_grads[id(leaf)] = [leaf, g]
        else:
            entry[1] = entry[1] + g

    if tensor._ctx is None:  # backward on a leaf itself
        deliver_to_leaf(tensor, grad)
    else:
        pending = {id(tensor._ctx): grad}  # gradient of each node's output, summed over its consumers
        for node in _topological_order(tensor._ctx):
            g = pending.pop(id(node), None)
            if g is not None:
                input_grads = node.backward(g)
                if not isinstance(input_grads, tuple):
                    input_grads = (input_grads,)
                for parent, need, pg in zip(node.parents, node.needs_input_grad, input_grads):
                    if not need or parent is None or pg is None:
                        continue
                    if isinstance(parent, Function):
                        key = id(parent)
                        pending[key] = pg if key not in pending else pending[key] + pg
                    else:
                        deliver_to_leaf(parent, pg)
                del g, input_grads
            node.release()

    _write_leaf_grads(leaf_grads.values())


def _write_leaf_grads(entries) -> None:
    """Add each summed gradient into its leaf's `.grad`.

    A new `.grad` must own its buffer: optimizers and gradient clipping update
    `.grad` in place, so two leaves must never share one array (an add node
    hands the same upstream gradient to both of its inputs).
    """
    from tinylora.engine.tensor import Tensor

    seen_buffers = set()
    for leaf, g in entries:
        if leaf.grad is None:
            buffer_id = id(memory._base_buffer(g))
            if buffer_id in seen_buffers or not g.flags.owndata or g.dtype != leaf.dtype:
                g = g.astype(leaf.dtype, copy=True)
            seen_buffers.add(id(memory._base_buffer(g)))
            leaf.grad = Tensor(g, device=leaf.device)
            memory.track(g, "gradients")
        else:
            leaf.grad.data += g  # accumulate, PyTorch semantics

