"""A catalogue of plausible wrong solutions: each a small edit of a reference body that a student might make.

Each entry names the task and the function, says what is wrong in a student's terms, and gives the edit as
(text of the reference body, what the student wrote instead) pairs. CI (tests/test_course_catalogue.py)
applies each to a release where only its task and the task's `needs` are solved, grades that task alone,
and requires the entry to lose marks: a test suite that lets one through does not check what it claims.

Instructor-only: the edits quote reference lines, so a release never ships this file.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WrongSolution:
    assignment: str
    task: int
    function: str  # qualified name, as in the manifest
    why: str  # the mistake, as a student would make it
    edits: tuple  # ((reference text, wrong text), ...): each reference text occurs once in the body


W = WrongSolution
CATALOGUE = (
    # ------------------------------------------------------------------ A1 ops and broadcasting
    W("A1", 1, "unbroadcast", "sums the leading axes but not the size-1 ones ((2, 3, 4) -> (2, 1, 4) keeps 3)",
      (("grad = grad.sum(axis=axes, keepdims=True)", "grad = grad"),)),
    W("A1", 1, "unbroadcast", "sums the size-1 axes away instead of keeping them (keepdims=False)",
      (("axis=axes, keepdims=True", "axis=axes, keepdims=False"),)),
    W("A1", 1, "unbroadcast", "sums the trailing axes instead of the leading ones",
      (("range(extra)", "range(grad.ndim - extra, grad.ndim)"),)),
    W("A1", 2, "Exp.forward", "saves the input x for backward instead of the output y",
      (("self.save_for_backward(y)", "self.save_for_backward(x)"),)),
    W("A1", 2, "Exp.backward", "returns exp(x) without the upstream gradient", (("return grad * y", "return y"),)),
    W("A1", 2, "Tanh.backward", "writes tanh' as 1 - y instead of 1 - y²", (("(1 - y * y)", "(1 - y)"),)),
    W("A1", 2, "Tanh.forward", "saves x instead of y, so backward computes 1 - x²",
      (("self.save_for_backward(y)", "self.save_for_backward(x)"),)),
    W("A1", 3, "Mul.backward", "forgets to unbroadcast b's gradient",
      (("unbroadcast(grad * a, self.shapes[1])", "grad * a"),)),
    W("A1", 3, "Mul.backward", "multiplies a's gradient by a instead of b",
      (("unbroadcast(grad * b, self.shapes[0])", "unbroadcast(grad * a, self.shapes[0])"),)),
    W("A1", 3, "Div.backward", "drops the minus sign of d(a/b)/db", (("-grad * a / (b * b)", "grad * a / (b * b)"),)),
    W("A1", 3, "Div.backward", "writes d(a/b)/db as -a / b", (("-grad * a / (b * b)", "-grad * a / b"),)),
    W("A1", 4, "MatMul.backward", "uses a.T (all axes reversed) instead of swapping the last two in a batch",
      (("unbroadcast(threads.matmul(_swap_last(a), grad), self.shapes[1])",
        "unbroadcast(threads.matmul(a.T, grad), self.shapes[1])"),)),
    W("A1", 4, "MatMul.backward", "forgets to sum b's gradient over a broadcast batch",
      (("unbroadcast(threads.matmul(_swap_last(a), grad), self.shapes[1])",
        "threads.matmul(_swap_last(a), grad)"),)),
    # ------------------------------------------------------------------ A2 the autograd engine
    W("A2", 1, "no_grad.__exit__", "switches gradients back on instead of restoring the previous state",
      (("_grad_enabled = self._previous", "_grad_enabled = True"),)),
    W("A2", 1, "no_grad.__enter__", "forgets to switch graph building off",
      (("self._previous, _grad_enabled = _grad_enabled, False", "self._previous = _grad_enabled"),)),
    W("A2", 2, "topological_order", "never marks a node visited, so a shared node appears twice",
      (("visited.add(id(node))", "pass"),)),
    W("A2", 2, "topological_order", "forgets to reverse the post-order", (("order.reverse()", "pass"),)),
    W("A2", 3, "_send_to_inputs", "overwrites a node's pending gradient instead of adding (d(2x)²/dx = 4x)",
      (("pending[key] = g if key not in pending else pending[key] + g", "pending[key] = g"),)),
    W("A2", 3, "_send_to_inputs", "adds in place into an array another input shares (10 instead of 7)",
      (("pending[key] = g if key not in pending else pending[key] + g",
        "pending[key] = g if key not in pending else pending[key].__iadd__(g)"),)),
    W("A2", 3, "_send_to_inputs", "treats a one-input op's bare gradient as a tuple of gradients",
      (("input_grads = (input_grads,)", "input_grads = tuple(input_grads)"),)),
    W("A2", 3, "_send_to_inputs", "overwrites a leaf's gradient from an earlier use",
      (("g if previous is None else previous[1] + g", "g"),)),
    W("A2", 4, "Function.release", "drops the links but keeps counting the saved arrays",
      (("graph_memory.let_go(self.saved)", "pass"),)),
    W("A2", 4, "Function.release", "forgets to mark the node freed (a second backward runs silently)",
      (("self.saved, self.parents, self.freed = (), (), True", "self.saved, self.parents = (), ()"),)),
    W("A2", 5, "Linear.forward", "always saves x, even when W is frozen",
      (("x2 if self.needs_input_grad[1] else None", "x2"),)),
    W("A2", 5, "Linear.forward", "swaps the rule: keeps x when x needs a gradient, W when W does",
      (("weight if self.needs_input_grad[0] else None", "weight if self.needs_input_grad[1] else None"),
       ("x2 if self.needs_input_grad[1] else None", "x2 if self.needs_input_grad[0] else None"))),
    W("A2", 5, "Linear.forward", "forgets the bias", (("y += bias", "pass"),)),
    # ------------------------------------------------------------------ A3 fused ops
    W("A3", 1, "Softmax.forward", "does not subtract the maximum (overflows at logits near 1000)",
      (("self.xp.exp(x - x.max(axis=axis, keepdims=True))", "self.xp.exp(x)"),)),
    W("A3", 1, "Softmax.backward", "drops the sum term: dx = y * dy",
      (("y * (grad - (grad * y).sum(axis=self.axis, keepdims=True))", "y * grad"),)),
    W("A3", 1, "Softmax.backward", "always sums over the last axis", (("axis=self.axis", "axis=-1"),)),
    W("A3", 2, "CrossEntropy.backward", "does not divide by the number of kept rows",
      (("keep[:, None] * (grad / self.kept)", "keep[:, None] * grad"),)),
    W("A3", 2, "CrossEntropy.backward", "gives ignored rows a gradient", (("keep[:, None] * (grad", "(grad"),)),
    W("A3", 2, "CrossEntropy.backward", "divides by every row, ignored ones too",
      (("grad / self.kept", "grad / dz.shape[0]"),)),
    W("A3", 3, "LayerNorm.backward", "misses the xhat * mean(g * xhat) term of dx",
      ((" - xhat * (g * xhat).mean(axis=-1, keepdims=True)", ""),)),
    W("A3", 3, "LayerNorm.backward", "forgets to multiply dy by the weight", (("g = grad * weight", "g = grad"),)),
    W("A3", 3, "LayerNorm.backward", "writes dweight as the sum of dy", (("dw = (grad * xhat).sum", "dw = grad.sum"),)),
    # ------------------------------------------------------------------ A4 attention and a GPT block
    W("A4", 1, "CausalSelfAttention._heads", "reshapes to (B, nh, T, hs) directly (right shape, wrong numbers)",
      (("x.reshape(b, t, self.n_head, self.head_size).transpose(1, 2)",
        "x.reshape(b, self.n_head, t, self.head_size)"),)),
    W("A4", 1, "CausalSelfAttention._heads", "swaps head size and head count in the reshape",
      (("x.reshape(b, t, self.n_head, self.head_size)", "x.reshape(b, t, self.head_size, self.n_head)"),)),
    W("A4", 2, "CausalSelfAttention.forward", "a mask that ignores the cache's past positions (k=1)",
      (("k=past + 1", "k=1"),)),
    W("A4", 2, "CausalSelfAttention.forward", "forgets to scale the scores by 1/sqrt(hs)",
      (("1.0 / math.sqrt(self.head_size)", "1.0"),)),
    W("A4", 2, "CausalSelfAttention.forward", "joins the heads without moving them back beside each other",
      (("y.transpose(1, 2).reshape(b, t, c)", "y.reshape(b, t, c)"),)),
    W("A4", 3, "Block.forward", "post-LN around attention (the original Transformer's order, not GPT-2's)",
      (("self.attn(self.ln_1(x), kv_cache)", "self.attn(x, kv_cache)"), ("x = x + h", "x = self.ln_1(x + h)"))),
    W("A4", 3, "Block.forward", "drops the second residual", (("return x + h", "return h"),)),
    W("A4", 3, "Block.forward", "uses ln_1 before the MLP", (("self.mlp(self.ln_2(x))", "self.mlp(self.ln_1(x))"),)),
    W("A4", 4, "KVCache.update", "concatenates along the head axis", (("F.cat([past_k, k], axis=2)",
                                                                       "F.cat([past_k, k], axis=1)"),
                                                                      ("F.cat([past_v, v], axis=2)",
                                                                       "F.cat([past_v, v], axis=1)"))),
    W("A4", 4, "KVCache.update", "returns the longer keys but never stores them",
      (("self.layers[layer] = (k.detach(), v.detach())", "pass"),)),
    W("A4", 4, "KVCache.update", "puts the new positions before the past ones",
      (("[past_k, k]", "[k, past_k]"), ("[past_v, v]", "[v, past_v]"))),
    # ------------------------------------------------------------------ A5 the LoRA layer
    W("A5", 1, "LoRALinear.reset_lora_parameters", "initialises B randomly (the model no longer starts as the base)",
      (("nn.init.zeros_(self.lora_B)", "nn.init.normal_(self.lora_B, 0.0, 0.02)"),)),
    W("A5", 1, "LoRALinear.reset_lora_parameters", "initialises A to zero too (then B never gets a gradient)",
      (("nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))", "nn.init.zeros_(self.lora_A)"),)),
    W("A5", 1, "LoRALinear.reset_lora_parameters", "gaussian A with std 1 instead of 1/r",
      (("1.0 / self.r", "1.0"),)),
    W("A5", 2, "LoRALinear.forward", "ignores `merged`: a merged layer adds ΔW twice",
      (("if self.merged or not self.enabled:", "if not self.enabled:"),)),
    W("A5", 2, "LoRALinear.forward", "ignores mixed-adapter batches (`per_example`)",
      (("if self.per_example is not None:", "if False:"),)),
    W("A5", 2, "LoRALinear.forward", "forms the d×k matrix B @ A (right numbers, d·k extra work and memory)",
      (("z = F.linear(self.lora_dropout(x), self.lora_A)  # (..., r): A x\n"
        "        return h + F.linear(z * self.scaling, self.lora_B)",
        "return h + F.linear(self.lora_dropout(x), (self.lora_B @ self.lora_A) * self.scaling)"),)),
    W("A5", 2, "LoRALinear.forward", "forgets the scaling α/r", (("z * self.scaling", "z"),)),
    W("A5", 2, "LoRALinear.forward", "ignores a disabled adapter", (("if self.merged or not self.enabled:",
                                                                     "if self.merged:"),)),
    W("A5", 3, "LoRALinear.merge", "merge is not idempotent (a second call adds ΔW again)",
      (("        if self.merged:\n            return self\n", ""),)),
    W("A5", 3, "LoRALinear.delta_weight", "forgets the scaling α/r",
      (("(self.lora_B.data @ self.lora_A.data) * self.scaling", "self.lora_B.data @ self.lora_A.data"),)),
    W("A5", 3, "LoRALinear.unmerge", "adds ΔW again instead of subtracting it", (("data -= self", "data += self"),)),
    W("A5", 3, "LoRALinear.unmerge", "leaves the merged flag set", (("            self.merged = False\n", ""),)),
    W("A5", 4, "mark_only_lora_as_trainable", "ignores the `bias` choice", (("train += _bias_params(model, bias)",
                                                                              "pass"),)),
    W("A5", 4, "mark_only_lora_as_trainable", "never freezes what was trainable before",
      (("p.requires_grad_(id(p) in chosen)", "p.requires_grad_(id(p) in chosen or p.requires_grad)"),)),
    W("A5", 5, "_fuse", "puts v's block right after q's (in k's rows)",
      (("row = FUSED.index(target) * C", "row = [t for t, _ in parts].index(target) * C"),)),
    W("A5", 5, "_fuse", "keeps α for the fused rank 2r (so α'/(2r) halves the scaling)",
      (("first.alpha * R / first.r", "first.alpha"),)),
    W("A5", 5, "_fuse", "assumes q and v share one A", (("one_A = all(", "one_A = True or all("),)),
    # ------------------------------------------------------------------ A6 memory
    W("A6", 1, "nf4_code_book", "a symmetric code book: 8 negative quantiles as well as 8 positive",
      (("host.linspace(offset, 0.5, 8)[:-1]", "host.linspace(offset, 0.5, 9)[:-1]"),)),
    W("A6", 1, "nf4_code_book", "forgets to normalise into [-1, 1]", (("return values / values.max()",
                                                                       "return values"),)),
    W("A6", 1, "nf4_code_book", "leaves out the exact zero", (("positive + negative + [0.0]",
                                                               "positive + negative"),)),
    W("A6", 2, "pack_nibbles", "puts the second code of a pair in the high nibble",
      (("(indices[0::2] << 4) | indices[1::2]", "indices[0::2] | (indices[1::2] << 4)"),)),
    W("A6", 2, "pack_nibbles", "does not pad an odd number of codes", (("if indices.size % 2:", "if False:"),)),
    W("A6", 2, "unpack_nibbles", "masks the low nibble with 0xF0", (("packed & 0x0F", "packed & 0xF0"),)),
    W("A6", 3, "quantize_blocks", "one absmax for the whole tensor instead of one per block",
      (("absmax = xp.abs(blocks).max(axis=1)", "absmax = xp.abs(blocks).max(axis=1) * 0 + xp.abs(blocks).max()"),)),
    W("A6", 3, "quantize_blocks", "rounds against the codes instead of the midpoints between them",
      (("xp.asarray(MIDPOINTS)", "xp.asarray(CODE[1:])"),)),
    W("A6", 3, "dequantize_blocks", "tiles the block constants instead of repeating each one",
      (("xp.repeat(absmax.astype(xp.float32), block_size)", "xp.tile(absmax.astype(xp.float32), block_size)"),)),
    W("A6", 4, "freeze_lora_A", "freezes B instead of A", (("layer.lora_A.requires_grad_(False)",
                                                              "layer.lora_B.requires_grad_(False)"),)),
    W("A6", 4, "freeze_lora_A", "clears A's gradient but leaves it trainable (A still keeps x)",
      (("layer.lora_A.requires_grad_(False)", "layer.lora_A.requires_grad_(True)"),)),
)


def apply(body: str, wrong: WrongSolution) -> str:
    """The reference `body` with `wrong`'s edits made; a reference text that is not there once is an error."""
    for old, new in wrong.edits:
        if body.count(old) != 1:
            raise ValueError(f"wrong solution {wrong.why!r}: {old!r} occurs {body.count(old)} times in "
                             f"{wrong.assignment} task {wrong.task} {wrong.function} (must be once)")
        body = body.replace(old, new)
    return body
