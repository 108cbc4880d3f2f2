"""NF4Linear: a frozen Linear whose weight is stored in NF4 and dequantized on the fly (QLoRA's base layer).

    y = x Ŵ^T + b,    Ŵ = dequantize(NF4 codes, constants) ∈ R^{d×k}       x (..., k) -> y (..., d)

Ŵ is frozen: backward computes only ∂L/∂x = ∂L/∂y Ŵ, which needs Ŵ and not x. So the op node keeps a
reference to the stored 4-bit weight (already counted as weights) and dequantizes it again in backward
(bitsandbytes' MatMul4Bit does the same); no dequantized copy outlives one forward or backward call.

Compute dtype (the paper: bfloat16). Inputs and Ŵ are rounded to it, the product is accumulated and
returned in the activations' dtype (float32 here: NumPy has no bfloat16; `ml_dtypes.bfloat16` supplies
one and its matmul rounds the operands to bfloat16 and accumulates in float32, as GPU bf16 kernels do).
"float32" skips the rounding; a float64 input (gradient checks) always computes in float64.
"""

from __future__ import annotations

from tinylora import nn
from tinylora.engine.autograd import Function
from tinylora.errors import MissingExtraError
from tinylora.quant.nf4 import BLOCK_SIZE, DQ_BLOCK_SIZE, NF4Tensor

COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


def resolve_compute_dtype(name: str):
    """The NumPy dtype for a compute dtype name (bfloat16 comes from the small `ml_dtypes` package)."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"NF4Linear: compute_dtype must be one of {COMPUTE_DTYPES}, got {name!r}")
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise MissingExtraError("compute_dtype='bfloat16' needs the ml_dtypes package (pip install ml-dtypes, "
                                    "or pip install 'tinylora[qlora]'); "
                                    "or pass compute_dtype='float32'") from None
        return ml_dtypes.bfloat16
    from tinylora.engine.backend import host

    return host.dtype(name)


class NF4Matmul(Function):
    # forward:  y = x Ŵ^T           x (N.., k), Ŵ (d, k) dequantized from `weight` (an NF4Tensor)
    # backward: dx = dy Ŵ           (Ŵ is frozen: no dW, so x is not saved)
    def forward(self, x, weight, compute_dtype):
        self.weight, self.compute_dtype = weight, compute_dtype  # the stored 4-bit weight: nothing new is saved
        return self._product(x, weight.dequantize(self._dtype(x)), transpose=True)

    def backward(self, grad):
        return self._product(grad, self.weight.dequantize(self._dtype(grad)), transpose=False)

    def _dtype(self, x):
        return x.dtype if x.dtype.itemsize > 4 else self.compute_dtype  # float64 gradient checks stay float64

    @staticmethod
    def _product(a, w, transpose: bool):
        """a @ w.T (or a @ w) in w's dtype, returned in a's dtype."""
        a2 = a.reshape(-1, a.shape[-1]).astype(w.dtype)  # (N, k) in the compute dtype
        out = a2 @ (w.T if transpose else w)  # (N, d) (bfloat16 operands give a float32 product)
        return out.astype(a.dtype, copy=False).reshape(*a.shape[:-1], out.shape[-1])


class NF4Linear(nn.Module):
    """A frozen Linear(k -> d) with W0 in NF4 (optionally double-quantized); the bias stays float, frozen.

    Made by `NF4Linear.from_linear(linear, ...)`. Attributes: in_features k, out_features d, weight_nf4
    (an NF4Tensor), bias (a frozen Parameter or None), compute_dtype (a name), device, lora_dtype (the
    float dtype of the layer it replaced: what LoRA's A and B are made in).
    """

    is_quantized = True  # LoRALinear reads this: A, B in `lora_dtype`, and merging goes through a dequantized copy

    def __init__(self, weight_nf4: NF4Tensor, bias, device, lora_dtype, compute_dtype: str = "bfloat16"):
        super().__init__()
        self.out_features, self.in_features = weight_nf4.shape
        self.weight_nf4 = weight_nf4
        self.bias = bias
        if bias is not None:
            bias.requires_grad_(False)
        self._weight_device, self.lora_dtype = device, lora_dtype
        self.compute_dtype = compute_dtype
        self._np_compute_dtype = resolve_compute_dtype(compute_dtype)

    @property
    def device(self):
        """The device W0's codes live on (Module.device looks at Parameters, and the NF4 weight is not one)."""
        return self._weight_device

    @classmethod
    def from_linear(cls, linear: nn.Linear, block_size: int = BLOCK_SIZE, double_quant: bool = False,
                    compute_dtype: str = "bfloat16", dq_block_size: int = DQ_BLOCK_SIZE) -> "NF4Linear":
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"NF4Linear.from_linear: expected an nn.Linear, got {type(linear).__name__}")
        w = linear.weight
        q = NF4Tensor.quantize(w.data, block_size=block_size, double_quant=double_quant, dq_block_size=dq_block_size)
        return cls(q, linear.bias, w.device, w.dtype, compute_dtype)

    def dequantized_weight(self):
        """Ŵ as a float array (d, k) in the LoRA dtype: what the layer computes with (up to compute rounding)."""
        return self.weight_nf4.dequantize(self.lora_dtype)

    def to_linear(self) -> nn.Linear:
        """A plain nn.Linear holding Ŵ (float), the same bias: a dequantized copy of this layer."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.device, dtype=self.lora_dtype)
        linear.weight.data[...] = self.dequantized_weight()
        if self.bias is not None:
            linear.bias.data[...] = self.bias.data
        linear.weight.requires_grad_(False)
        if linear.bias is not None:
            linear.bias.requires_grad_(self.bias.requires_grad)
        return linear

    def forward(self, x):
        y = NF4Matmul.apply(x, weight=self.weight_nf4, compute_dtype=self._np_compute_dtype)  # (..., d)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        q = self.weight_nf4
        return (f"in_features={self.in_features}, out_features={self.out_features}, block_size={q.block_size}, "
                f"double_quant={q.double_quant}, compute_dtype={self.compute_dtype}, "
                f"bits_per_parameter={q.bits_per_parameter():.3f}")
