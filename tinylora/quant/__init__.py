"""Quantized storage of frozen weights (QLoRA's base model).

    nf4.py      the NF4 code book (derived from normal quantiles), block-wise absmax quantization, packing
                two 4-bit codes per byte, double quantization of the constants; NF4Tensor
    linear.py   NF4Linear: a frozen Linear that dequantizes its NF4 weight in forward and backward

`tinylora.methods.qlora` puts them together with LoRA (quantize_model, merge_qlora).
"""

from tinylora.quant.linear import NF4Linear
from tinylora.quant.nf4 import NF4Tensor, nf4_code_book

__all__ = ["NF4Linear", "NF4Tensor", "nf4_code_book"]
