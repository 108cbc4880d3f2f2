"""The buffer-reusing GELU node equals the plain formulas it replaces (ops/gelu.py)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import tinylora
import tinylora.functional as F
from tinylora.engine.ops.gelu import gelu_reference_backward, gelu_reference_forward


@given(n=st.integers(1, 200), seed=st.integers(0, 10**6), dtype=st.sampled_from(["float32", "float64"]))
def test_fast_gelu_equals_the_reference(n, seed, dtype):
    rng = np.random.default_rng(seed)
    x_np = (rng.standard_normal(n) * 3).astype(dtype)
    g_np = rng.standard_normal(n).astype(dtype)
    x = tinylora.tensor(x_np, requires_grad=True)
    y = F.gelu(x)
    y.backward(tinylora.tensor(g_np))
    # float32: the two evaluate the same formula in a different order, a few ulps apart
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (2e-6, 2e-6)
    np.testing.assert_allclose(y.detach().numpy(), gelu_reference_forward(np, x_np), rtol=rtol, atol=atol)
    np.testing.assert_allclose(x.grad.numpy(), gelu_reference_backward(np, x_np, g_np), rtol=rtol, atol=atol)
    assert y.dtype == x.dtype == x.grad.dtype
