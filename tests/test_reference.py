"""The reference attention against a naive dense float64 implementation."""

from __future__ import annotations

import math

import pytest
import torch

from fm4.masks import FlashMask, make_mask
from fm4.reference import attention_bwd_ref, attention_ref
from tests.helpers import MODES, random_bounds


def naive(q, k, v, dense_visible, scale):
    """float64 dense attention; dense_visible [B|1, Hm|1, Sq, Sk] with Hm dividing H."""
    H = q.shape[2]
    Hkv = k.shape[2]
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k, v))
    kd = kd.repeat_interleave(H // Hkv, 1)
    vd = vd.repeat_interleave(H // Hkv, 1)
    s = qd @ kd.transpose(-1, -2) * scale
    vis = dense_visible.repeat_interleave(H // dense_visible.shape[1], 1)
    s = s.masked_fill(~vis, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return (p @ vd).transpose(1, 2), lse


CASES = [
    # (B, Sq, Sk, H, Hkv, D, Dv)
    (2, 37, 37, 4, 4, 16, 16),
    (1, 13, 29, 6, 2, 8, 24),
    (2, 29, 13, 4, 1, 32, 32),
]


@pytest.mark.parametrize("B,Sq,Sk,H,Hkv,D,Dv", CASES)
@pytest.mark.parametrize("causal,n", MODES)
@pytest.mark.parametrize("hm", ["one", "kv", "q"])
def test_matches_naive(B, Sq, Sk, H, Hkv, D, Dv, causal, n, hm):
    Hm = {"one": 1, "kv": Hkv, "q": H}[hm]
    gen = torch.Generator().manual_seed(B + Sq + Sk + H + n)
    sri = random_bounds(B, Hm, Sq, Sk, n, gen, causal)
    q = torch.randn(B, Sq, H, D, dtype=torch.float64)
    k = torch.randn(B, Sk, Hkv, D, dtype=torch.float64)
    v = torch.randn(B, Sk, Hkv, Dv, dtype=torch.float64)
    mask = FlashMask(sri, causal, seqlen_q=Sq)
    out, lse = attention_ref(q, k, v, mask, softmax_scale=0.3, chunk_rows=5)
    out_n, lse_n = naive(q, k, v, mask.to_dense(), 0.3)
    assert out.shape == (B, Sq, H, Dv) and lse.shape == (B, H, Sq)
    assert lse.dtype == torch.float32
    torch.testing.assert_close(out, out_n, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(lse.double(), lse_n, atol=1e-5, rtol=1e-5)
    assert not out.isnan().any() and not lse.isnan().any()


def test_fully_masked_rows():
    S = 16
    lts = torch.full((1, 1, S, 1), S, dtype=torch.int32)
    lts[..., :8, 0] = 0  # rows 0-7 lose every column they could see (columns 0-7)
    mask = FlashMask(lts, True)
    q, k, v = (torch.randn(1, S, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    out, lse = attention_ref(q, k, v, mask)
    assert bool((out[:, :8] == 0).all()) and bool(torch.isinf(lse[:, :, :8]).all())
    assert bool((lse[:, :, :8] < 0).all())
    assert not out.isnan().any() and not lse[:, :, 8:].isinf().any()
    (out.sum() + lse[:, :, 8:].sum()).backward()
    assert bool((q.grad[:, :8] == 0).all())
    for t in (q, k, v):
        assert not t.grad.isnan().any()


def test_chunking_does_not_change_result():
    m = make_mask("share_question", 100)
    q, k, v = (torch.randn(1, 100, 2, 16) for _ in range(3))
    a = attention_ref(q, k, v, m)
    b = attention_ref(q, k, v, m, chunk_rows=3)
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a[1], b[1], atol=1e-6, rtol=1e-6)


def test_bwd_ref_matches_naive_autograd():
    m = make_mask("prefix_lm_document", 40, batch=2)
    q, k, v = (torch.randn(2, 40, 2, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 40, 2, 8, dtype=torch.float64)
    dlse = torch.randn(2, 2, 40, dtype=torch.float32)
    dq, dk, dv = attention_bwd_ref(dout, q, k, v, m, dlse=dlse)
    out_n, lse_n = naive(q, k, v, m.to_dense(), 1 / math.sqrt(8))
    gq, gk, gv = torch.autograd.grad((out_n, lse_n), (q, k, v), (dout, dlse.double()))
    for a, b in ((dq, gq), (dk, gk), (dv, gv)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_low_precision_path_runs_in_input_dtype():
    q, k, v = (torch.randn(1, 32, 2, 16, dtype=torch.bfloat16) for _ in range(3))
    o32, _ = attention_ref(q, k, v, causal=True)
    o16, _ = attention_ref(q, k, v, causal=True, upcast=False)
    assert o16.dtype == torch.bfloat16
    assert (o16.float() - o32.float()).abs().max() < 0.1
