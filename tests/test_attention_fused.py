"""The fused causal softmax (ops/attention.py) equals the readable composition it replaces."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinylora
import tinylora.functional as F
from gradcheck import gradcheck, random_array


def _mask(t, s):
    return np.triu(np.ones((t, s), dtype=bool), k=s - t + 1)  # query i sits at position s - t + i


@given(b=st.integers(1, 3), h=st.integers(1, 3), t=st.integers(1, 6), extra=st.integers(0, 3),
       scale=st.floats(0.1, 2.0), seed=st.integers(0, 10**6))
def test_fused_equals_reference_forward_and_backward(b, h, t, extra, scale, seed):
    s = t + extra  # with a KV cache there are more keys than queries
    data = random_array((b, h, t, s), seed=seed)
    upstream = random_array((b, h, t, s), seed=seed + 1)
    results = []
    for fn in (F.causal_softmax, F.causal_softmax_reference):
        x = tinylora.tensor(data, dtype="float64", requires_grad=True)
        y = fn(x, scale, _mask(t, s))
        y.backward(tinylora.tensor(upstream, dtype="float64"))
        results.append((y.detach().numpy(), x.grad.numpy()))
    (y_fused, g_fused), (y_ref, g_ref) = results
    # the same float64 arithmetic in a different order: agreement to rounding
    np.testing.assert_allclose(y_fused, y_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g_fused, g_ref, rtol=1e-10, atol=1e-13)
    assert np.all(y_fused[..., _mask(t, s)] == 0)


def test_fused_gradcheck():
    data = random_array((2, 2, 4, 5), seed=3)
    x = tinylora.tensor(data, dtype="float64", requires_grad=True)
    gradcheck(lambda a: F.causal_softmax(a, 0.7, _mask(4, 5)), [x])


def test_fused_keeps_one_array_and_float32():
    x = tinylora.tensor(np.ones((2, 3, 4, 4), dtype=np.float32), requires_grad=True)
    y = F.causal_softmax(x, 0.5, _mask(4, 4))
    assert y.dtype == np.float32
    assert len([a for a in y._ctx.saved if a is not None]) == 1 and y._ctx.saved[0] is y.data


def test_mask_shape_is_checked():
    x = tinylora.tensor(np.ones((1, 1, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="mask shape"):
        F.causal_softmax(x, 1.0, np.zeros((3, 4), dtype=bool))
