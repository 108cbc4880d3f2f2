"""NF4: 4-bit NormalFloat block-wise quantization, and double quantization of its constants (QLoRA, §3).

Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", arXiv 2305.14314.

The code book. Pretrained weights are close to normal, so NF4 puts its 16 values at quantiles of N(0, 1)
(each value covers an equal share of the probability mass), scaled into [-1, 1], with an exact 0:

    positive half   q⁺_j = Φ⁻¹(p_j),  p = 8 points evenly spaced from δ down to ½ (excluded)
    negative half   q⁻_j = -Φ⁻¹(p_j), p = 7 points evenly spaced from δ down to ½ (excluded)
    code book       sort(q⁻ ∪ {0} ∪ q⁺) / Φ⁻¹(δ)          16 values, code[0] = -1, code[7] = 0, code[15] = 1

    δ = ½ ((1 - 1/32) + (1 - 1/30)) ≈ 0.9677083   (bitsandbytes' `create_normal_map` offset, 7 digits)

Φ⁻¹ is `statistics.NormalDist().inv_cdf` (standard library). The result matches the table bitsandbytes
publishes (float32 values, computed in float32) to 1.1e-7, but 10 of its 16 entries differ from the float32
rounding of the exact values (by 1 to 6 float32 spacings), and a weight near a midpoint then gets another code.
The table is canonical (every NF4 checkpoint was written with it), so quantization uses it (`CODE`);
`nf4_code_book` is the math it comes from.

Block-wise absmax quantization of a weight W with n values, flattened row-major, in blocks of 64:

    c_b = max_{i ∈ b} |W_i|                          one float32 constant per block (the last block may be short)
    q_i = argmin_j |W_i / c_b - code[j]|             a 4-bit index; ties at a midpoint go to the lower j
    Ŵ_i = code[q_i] · c_b                            dequantization
    |W_i - Ŵ_i| <= ½ · max gap · c_b = 0.1519 c_b    the largest gap: from -1 to -0.6962 (0.3038)

Two 4-bit indices share a byte, the first in the high nibble: byte = q_{2m} << 4 | q_{2m+1} (an odd n is
padded with one index 0).

Double quantization (DQ) quantizes the float32 constants c (one per 64 weights) again, in blocks of 256,
after subtracting their mean μ (they are all positive; centring makes them symmetric around 0):

    c'_j = round(127 · (c_j - μ) / s_g) ∈ int8,   s_g = max_{j ∈ g} |c_j - μ|    256 constants per group g
    ĉ_j = c'_j / 127 · s_g + μ                      |c_j - ĉ_j| <= s_g / 254

(The paper uses 8-bit floats and bitsandbytes its 8-bit "dynamic" code; tinylora uses symmetric linear
int8, which costs the same 8 bits per constant; see `DQ_NOTE`.)

Storage per weight value: 4 bits + 32/64 = 4.5 bits without DQ; with DQ 4 + 8/64 + 32/(64·256) = 4.127 bits
(plus 32 bits for μ per tensor). `bits_per_parameter` computes it from the arrays actually stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from tinylora.engine.backend import device_of, host, memory

OFFSET = 0.9677083  # δ = ½((1 - 1/32) + (1 - 1/30)) = 0.96770833..., written to 7 digits as bitsandbytes does
BLOCK_SIZE = 64  # QLoRA's first-level block
DQ_BLOCK_SIZE = 256  # QLoRA's second-level block (constants per group)
DQ_NOTE = ("double quantization uses symmetric linear int8 for the centred constants (the paper: 8-bit floats; "
           "bitsandbytes: its 8-bit dynamic code); the storage, 8 bits per constant, is the paper's")

# the table bitsandbytes hard-codes (functional.get_4bit_type("nf4")): float32 values, checked in the tests
PUBLISHED_NF4 = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)


def nf4_code_book(offset: float = OFFSET):
    """The 16 NF4 values (float64, ascending), derived from normal quantiles as the paper does."""
    inverse_cdf = NormalDist().inv_cdf
    positive = [inverse_cdf(p) for p in host.linspace(offset, 0.5, 9)[:-1]]  # 8 values > 0
    negative = [-inverse_cdf(p) for p in host.linspace(offset, 0.5, 8)[:-1]]  # 7 values < 0
    values = host.sort(host.array(positive + negative + [0.0]))
    return values / values.max()  # into [-1, 1]: code[0] = -1, code[7] = 0, code[15] = 1


CODE = host.array(PUBLISHED_NF4, dtype=host.float32)  # (16,), what quantization uses: the published table
MIDPOINTS = (CODE[:-1] + CODE[1:]) / 2  # (15,): x below midpoint j gets code j or lower


def check_block_size(block_size, name: str = "block_size") -> int:
    """Block sizes are powers of two from 32 to 4096 (bitsandbytes' rule): every block then holds whole bytes."""
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 32 or block_size > 4096 \
            or block_size & (block_size - 1):
        raise ValueError(f"NF4: {name}={block_size!r} must be a power of two from 32 to 4096 "
                         f"(so blocks hold whole bytes of two 4-bit codes; QLoRA uses 64, and 256 for constants)")
    return block_size


# ---------------------------------------------------------------- packing
def pack_nibbles(indices):
    """(n,) uint8 values in 0..15 -> (ceil(n/2),) uint8, the first of each pair in the high nibble."""
    xp = _xp(indices)
    if indices.size % 2:
        indices = xp.concatenate([indices, xp.zeros(1, dtype=xp.uint8)])  # pad an odd n with code 0
    return (indices[0::2] << 4) | indices[1::2]


def unpack_nibbles(packed, n: int):
    """Inverse of `pack_nibbles`: (ceil(n/2),) uint8 -> (n,) uint8."""
    xp = _xp(packed)
    out = xp.empty(packed.size * 2, dtype=xp.uint8)
    out[0::2] = packed >> 4
    out[1::2] = packed & 0x0F
    return out[:n]


# ---------------------------------------------------------------- first level: NF4 codes + absmax
def quantize_blocks(values, block_size: int = BLOCK_SIZE):
    """Flat float array (n,) -> (packed (ceil(n/2),) uint8, absmax (ceil(n/block),) float32)."""
    xp = _xp(values)
    check_block_size(block_size)
    n = values.size
    n_blocks = -(-n // block_size)
    padded = xp.zeros(n_blocks * block_size, dtype=xp.float32)
    padded[:n] = values.reshape(-1)
    blocks = padded.reshape(n_blocks, block_size)  # (n_blocks, block); zero padding never raises an absmax
    absmax = xp.abs(blocks).max(axis=1)  # (n_blocks,)
    scale = xp.maximum(absmax, xp.float32(1e-38))  # an all-zero block divides by a tiny number, not 0
    normalised = xp.clip(blocks / scale[:, None], -1.0, 1.0)
    midpoints = xp.asarray(MIDPOINTS)
    # index j = number of midpoints strictly below x: a value exactly at a midpoint goes to the lower code
    indices = xp.searchsorted(midpoints, normalised.reshape(-1), side="left").astype(xp.uint8)
    return pack_nibbles(indices[:n]), absmax.astype(xp.float32)


def dequantize_blocks(packed, absmax, n: int, block_size: int = BLOCK_SIZE, dtype="float32"):
    """(packed, absmax) -> flat (n,) array: code[q_i] · c_b, computed in float32, then cast to `dtype`."""
    xp = _xp(packed)
    indices = unpack_nibbles(packed, n)
    values = xp.asarray(CODE)[indices]  # (n,) in [-1, 1]
    scale = xp.repeat(absmax.astype(xp.float32), block_size)[:n]
    return (values * scale).astype(dtype)


# ---------------------------------------------------------------- second level: the constants in int8
def double_quantize(absmax, block_size: int = DQ_BLOCK_SIZE):
    """float32 constants (m,) -> (int8 codes (m,), group scales (ceil(m/256),) float32, mean μ float32)."""
    xp = _xp(absmax)
    check_block_size(block_size, "dq_block_size")
    m = absmax.size
    mean = absmax.astype(xp.float64).mean().astype(xp.float32)
    centred = xp.zeros(-(-m // block_size) * block_size, dtype=xp.float32)
    centred[:m] = absmax - mean
    groups = centred.reshape(-1, block_size)  # (groups, 256)
    scale = xp.abs(groups).max(axis=1)  # (groups,)
    safe = xp.where(scale > 0, scale, xp.float32(1.0))
    codes = xp.rint(groups / safe[:, None] * 127).astype(xp.int8).reshape(-1)[:m]
    return codes, scale.astype(xp.float32), mean


def double_dequantize(codes, scale, mean, block_size: int = DQ_BLOCK_SIZE):
    """Inverse of `double_quantize`: ĉ_j = c'_j / 127 · s_g + μ, float32 (m,)."""
    xp = _xp(codes)
    per_constant = xp.repeat(scale, block_size)[:codes.size]
    return (codes.astype(xp.float32) / xp.float32(127) * per_constant + mean).astype(xp.float32)


# ---------------------------------------------------------------- one quantized tensor
@dataclass
class NF4Tensor:
    """A weight stored in NF4: packed codes plus its constants (raw or double-quantized).

    shape          the original shape, e.g. (d, k) for a Linear weight W0 ∈ R^{d×k}
    packed         (ceil(n/2),) uint8, two codes per byte
    absmax         (ceil(n/64),) float32, or None under double quantization
    dq_codes       (ceil(n/64),) int8 under double quantization, else None
    dq_scale       (ceil(n/64/256),) float32 under double quantization, else None
    dq_mean        float32 scalar under double quantization, else None
    """

    shape: tuple
    block_size: int
    packed: object
    absmax: object = None
    dq_codes: object = None
    dq_scale: object = None
    dq_mean: object = None
    dq_block_size: int = DQ_BLOCK_SIZE

    @classmethod
    def quantize(cls, weight, block_size: int = BLOCK_SIZE, double_quant: bool = False,
                 dq_block_size: int = DQ_BLOCK_SIZE) -> "NF4Tensor":
        """Quantize a float32 array (float64 is refused: NF4 is for weights trained in 32 bits or fewer)."""
        if getattr(weight, "dtype", None) is None or weight.dtype.kind != "f":
            raise TypeError(f"NF4: expected a floating-point weight array, got {type(weight).__name__}")
        if weight.dtype.itemsize > 4:
            raise TypeError(f"NF4: quantizing {weight.dtype} weights is refused (a float64 model is for gradient "
                            "checks; 4-bit storage would throw its precision away): convert the model to float32")
        packed, absmax = quantize_blocks(weight, block_size)
        q = cls(tuple(weight.shape), block_size, packed)
        if double_quant:
            q.dq_codes, q.dq_scale, q.dq_mean = double_quantize(absmax, check_block_size(dq_block_size, "dq_block_size"))
            q.dq_block_size = dq_block_size
        else:
            q.absmax = absmax
        for array in q.arrays():
            memory.track(array, "parameters")  # the stored weight (tinylora's accounting: weights)
        return q

    @property
    def double_quant(self) -> bool:
        return self.dq_codes is not None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def constants(self):
        """The float32 absmax per block: stored, or rebuilt from the int8 codes under DQ."""
        if self.double_quant:
            return double_dequantize(self.dq_codes, self.dq_scale, self.dq_mean, self.dq_block_size)
        return self.absmax

    def dequantize(self, dtype="float32"):
        """Ŵ with the original shape, in `dtype` (computed in float32 first, as bitsandbytes does)."""
        flat = dequantize_blocks(self.packed, self.constants(), self.numel, self.block_size, dtype)
        return flat.reshape(self.shape)

    def arrays(self) -> list:
        """Every array stored for this weight."""
        return [a for a in (self.packed, self.absmax, self.dq_codes, self.dq_scale, self.dq_mean) if a is not None]

    def code_bytes(self) -> int:
        """Bytes of the packed 4-bit codes: ceil(n/2)."""
        return int(self.packed.nbytes)

    def constant_bytes(self) -> int:
        """Bytes of the quantization constants (absmax, or int8 codes + group scales + mean under DQ)."""
        return sum(int(a.nbytes) for a in self.arrays()) - self.code_bytes()

    def bits_per_parameter(self) -> float:
        """Stored bits per weight value, measured from the arrays: 4.5 without DQ, about 4.127 with it."""
        return 8.0 * (self.code_bytes() + self.constant_bytes()) / self.numel


def expected_bits_per_parameter(n: int, block_size: int = BLOCK_SIZE, double_quant: bool = False,
                                dq_block_size: int = DQ_BLOCK_SIZE) -> float:
    """The formula: 8·ceil(n/2) code bits + per-block constants, per value (the paper's 4 + 0.127 as n grows)."""
    blocks = -(-n // block_size)
    bits = 8 * -(-n // 2)
    if double_quant:
        bits += 8 * blocks + 32 * -(-blocks // dq_block_size) + 32  # int8 codes, group scales, the mean μ
    else:
        bits += 32 * blocks
    return bits / n


def _xp(array):
    """numpy or cupy, whichever holds `array`."""
    return device_of(array).xp
