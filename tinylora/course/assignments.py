"""The assignments: which functions of tinylora a student writes, task by task.

Each task names functions by file and qualified name; `tinylora course release` replaces their bodies by
`raise NotImplementedError("A1 task 2: ...")` in a copy of the repository, keeping signatures and docstrings.
The reference code carries no markers: this file is the only place that says what a student writes.

A task's tests are the tests in tests/course/ marked `aN_taskM` (e.g. `@pytest.mark.a1_task2`). `needs` lists
the other tasks of the same assignment whose code the task's tests also run (usually earlier ones; A2's
accumulation and release both run inside every backward, so each needs the other): CI
checks that the task plus its needs, and nothing else of the assignment, reaches full marks.

A release of AN stubs AN and every later assignment, except the later tasks AN's tests run (`keeps`: A1's
op backwards need A2's engine to run at all). `copies` names fast paths that compute a task's answer
elsewhere in the tree; they are stubbed with the task.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinylora.errors import MissingNameError


@dataclass(frozen=True)
class Task:
    number: int
    title: str
    functions: tuple  # ((path from the repository root, qualified name), ...)
    text: str  # what to write: ends up in the NotImplementedError and in the handout
    needs: tuple = ()  # numbers of earlier tasks whose code this task's tests call
    copies: tuple = ()  # fast paths elsewhere that compute this task's answer: stubbed with it in a release


@dataclass(frozen=True)
class Assignment:
    id: str  # "A1"
    title: str
    notebook: str  # the handout, from the repository root
    tests: str  # the tests of every task, from the repository root
    tasks: tuple
    keeps: tuple = ()  # (assignment, task) of later assignments whose code these tests run: not stubbed

    def task(self, number: int) -> Task:
        for task in self.tasks:
            if task.number == number:
                return task
        raise MissingNameError(f"{self.id} has no task {number}; tasks are {[t.number for t in self.tasks]}")

    def marker(self, task: Task) -> str:
        return f"{self.id.lower()}_task{task.number}"

    def message(self, task: Task) -> str:
        return f"{self.id} task {task.number}: {task.text}"


OPS = "tinylora/engine/ops"

A1 = Assignment(
    "A1", "Ops and broadcasting", "tutorials/course/A1_ops_and_broadcasting.ipynb", "tests/course/test_a1_ops.py", (
        Task(1, "unbroadcast", ((f"{OPS}/_util.py", "unbroadcast"),),
             "sum the gradient over the axes that broadcasting stretched, so it has the input's shape"),
        Task(2, "exp and tanh", ((f"{OPS}/elementwise.py", "Exp.forward"), (f"{OPS}/elementwise.py", "Exp.backward"),
                                  (f"{OPS}/elementwise.py", "Tanh.forward"), (f"{OPS}/elementwise.py", "Tanh.backward")),
             "forward and backward of exp and tanh, saving the output (not the input) for backward"),
        Task(3, "mul and div", ((f"{OPS}/elementwise.py", "Mul.backward"), (f"{OPS}/elementwise.py", "Div.backward")),
             "backward of a * b and a / b with broadcasting (use unbroadcast)", needs=(1,)),
        Task(4, "matmul", ((f"{OPS}/matmul.py", "MatMul.backward"),),
             "backward of a @ b: da = dy @ b^T, db = a^T @ dy, batched and broadcast", needs=(1,)),
    ), keeps=(("A2", 1), ("A2", 2), ("A2", 3), ("A2", 4)))

AUTOGRAD = "tinylora/engine/autograd.py"

A2 = Assignment(
    "A2", "The autograd engine", "tutorials/course/A2_the_autograd_engine.ipynb", "tests/course/test_a2_autograd.py", (
        Task(1, "no_grad", ((AUTOGRAD, "no_grad.__enter__"), (AUTOGRAD, "no_grad.__exit__")),
             "switch graph building off on entry and back to what it was on exit (nesting, exceptions)"),
        Task(2, "topological order", ((AUTOGRAD, "topological_order"),),
             "every node before the nodes that made its inputs, with an explicit stack (no recursion)"),
        Task(3, "gradient accumulation", ((AUTOGRAD, "_send_to_inputs"),),
             "add each input gradient to its parent's running sum: a node's pending gradient or a leaf's",
             needs=(1, 2, 4)),  # backward releases each node it passes (task 4); gradcheck uses no_grad
        Task(4, "releasing nodes", ((AUTOGRAD, "Function.release"),),
             "drop the saved arrays (stop counting them) and the links, and mark the node freed", needs=(2, 3)),
        Task(5, "the frozen-weight rule", ((f"{OPS}/matmul.py", "Linear.forward"),),
             "y = x Wᵀ + b, saving W only if x needs a gradient and x only if W does", needs=(1, 2, 3, 4)),
    ))

A3 = Assignment(
    "A3", "Fused ops", "tutorials/course/A3_fused_ops.ipynb", "tests/course/test_a3_fused.py", (
        Task(1, "softmax", ((f"{OPS}/softmax.py", "Softmax.forward"), (f"{OPS}/softmax.py", "Softmax.backward")),
             "a stable softmax along one axis (subtract the max) and its backward dx = y * (dy - sum(dy * y))",
             copies=(("tinylora/engine/kernels/softmax.py", "rows_forward"),
                     ("tinylora/engine/kernels/softmax.py", "causal_backward"))),
        Task(2, "cross-entropy", ((f"{OPS}/loss.py", "CrossEntropy.backward"),),
             "backward of mean cross-entropy: (softmax - onehot) / N on kept rows, 0 on ignored ones"),
        Task(3, "layer norm", ((f"{OPS}/layer_norm.py", "LayerNorm.backward"),),
             "backward of layer norm for x, weight and bias from xhat and rstd",
             copies=(("tinylora/engine/kernels/layer_norm.py", "backward_input"),)),
    ))

GPT = "tinylora/model/gpt.py"

A4 = Assignment(
    "A4", "Attention and a GPT block", "tutorials/course/A4_attention_and_a_gpt_block.ipynb",
    "tests/course/test_a4_attention.py", (
        Task(1, "split into heads", ((GPT, "CausalSelfAttention._heads"),),
             "(B, T, C) -> (B, nh, T, hs): head h gets channels h*hs .. (h+1)*hs"),
        Task(2, "causal self-attention", ((GPT, "CausalSelfAttention.forward"),),
             "softmax(q kᵀ / sqrt(hs)) v with position t seeing keys 0..t only (and the cache's past), heads "
             "joined, then W_o", needs=(1,)),
        Task(3, "the pre-LN block", ((GPT, "Block.forward"),),
             "x + attn(ln_1(x)), then x + mlp(ln_2(x))", needs=(1, 2)),
        Task(4, "the KV cache", ((GPT, "KVCache.update"),),
             "append the new keys and values along the time axis and return all of them", needs=(1, 2, 3)),
    ))

A5 = Assignment(
    "A5", "The LoRA layer", "tutorials/course/A5_the_lora_layer.ipynb", "tests/course/test_a5_lora.py", (
        Task(1, "zero init", (("tinylora/lora/layer.py", "LoRALinear.reset_lora_parameters"),),
             "A random (Kaiming-uniform or Gaussian, per self.init), B = 0, so that ΔW = BA = 0"),
        Task(2, "forward", (("tinylora/lora/layer.py", "LoRALinear.forward"),),
             "h = W0 x + (α/r) B A x, never forming BA; the base layer alone when merged or disabled", needs=(1,)),
        Task(3, "merge and unmerge", (("tinylora/lora/layer.py", "LoRALinear.delta_weight"),
                                      ("tinylora/lora/layer.py", "LoRALinear.merge"),
                                      ("tinylora/lora/layer.py", "LoRALinear.unmerge")),
             "ΔW = (α/r) B A; merge adds it into W0 in place, unmerge subtracts it; both idempotent", needs=(1,)),
        Task(4, "freezing", (("tinylora/lora/apply.py", "mark_only_lora_as_trainable"),),
             "only A and B (and the chosen biases) require grad; everything else is frozen", needs=(1,)),
        Task(5, "the rank-2r export", (("tinylora/lora/peft.py", "_fuse"),),
             "LoRA on q and v as one c_attn LoRA: A' = [A_q; A_v], B' block-diagonal in the q, k, v rows",
             needs=(1, 4)),
    ))

NF4 = "tinylora/quant/nf4.py"

A6 = Assignment(
    "A6", "Memory: NF4 and LoRA-FA", "tutorials/course/A6_memory.ipynb", "tests/course/test_a6_memory.py", (
        Task(1, "the NF4 code book", ((NF4, "nf4_code_book"),),
             "16 values from normal quantiles (8 positive, 7 negative, an exact 0), scaled into [-1, 1]"),
        Task(2, "two codes per byte", ((NF4, "pack_nibbles"), (NF4, "unpack_nibbles")),
             "pack 4-bit codes two per uint8 (the first in the high nibble) and unpack them", needs=(1,)),
        Task(3, "block-wise absmax", ((NF4, "quantize_blocks"), (NF4, "dequantize_blocks")),
             "per block of 64: absmax c_b, the nearest code of x / c_b, packed; back: code[q] · c_b", needs=(1, 2)),
        Task(4, "LoRA-FA", (("tinylora/methods/lora_fa.py", "freeze_lora_A"),),
             "freeze every LoRA layer's A (no gradient, none kept), so the branch saves A x and not x"),
    ))

ASSIGNMENTS = (A1, A2, A3, A4, A5, A6)


def get_assignment(name: str) -> Assignment:
    """The assignment called `name` ("A1" or "a1")."""
    for assignment in ASSIGNMENTS:
        if assignment.id.lower() == str(name).lower():
            return assignment
    raise MissingNameError(f"no assignment {name!r}; there are {', '.join(a.id for a in ASSIGNMENTS)}")
