"""torch.ops.fm4: opcheck, torch.compile, autograd, the public API and its validation."""

from __future__ import annotations

import math

import pytest
import torch

import fm4
from fm4.masks import make_mask
from fm4.reference import attention_ref


def qkv(B=2, Sq=37, Sk=37, H=4, Hkv=2, D=16, dtype=torch.float32, grad=False, contiguous=True):
    def make(S, h):
        if contiguous:
            t = torch.randn(B, S, h, D, dtype=dtype)
        else:  # (B, H, S, D) storage seen as (B, S, H, D)
            t = torch.randn(B, h, S, D, dtype=dtype).transpose(1, 2)
        return t.requires_grad_(grad)

    return make(Sq, H), make(Sk, Hkv), make(Sk, Hkv)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("name", ["full", "causal", "document", "random_eviction"])
def test_opcheck_forward(grad, contiguous, name):
    q, k, v = qkv(grad=grad, contiguous=contiguous)
    m = make_mask(name, 37, batch=2, num_heads=4)
    args = (q, k, v, m.startend_row_indices, m.causal, None)
    torch.library.opcheck(torch.ops.fm4.attention.default, args)


def test_opcheck_backward():
    q, k, v = qkv()
    m = make_mask("sliding_window", 37, batch=2)
    out, lse = torch.ops.fm4.attention(q, k, v, m.startend_row_indices, True, 0.25)
    dout = torch.randn_like(out)
    for dlse in (None, torch.randn_like(lse)):
        args = (dout, dlse, q, k, v, out, lse, m.startend_row_indices, True, 0.25)
        torch.library.opcheck(torch.ops.fm4.attention_bwd.default, args)


def test_compile_dynamic_no_recompiles():
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    cnt = CompileCounterWithBackend("aot_eager")

    def step(q, k, v, sri):
        out = fm4.flashmask_attention(q, k, v, sri, causal=True)
        return out.float().square().mean()

    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend=cnt)
    for S in (40, 57, 128, 203):
        q, k, v = qkv(Sq=S, Sk=S, grad=True)
        sri = make_mask("causal_document", S, batch=2).startend_row_indices
        loss = compiled(q, k, v, sri)
        loss.backward()
        ref = step(q.detach(), k.detach(), v.detach(), sri)
        torch.testing.assert_close(loss, ref)
        assert q.grad is not None and not q.grad.isnan().any()
    assert cnt.frame_count == 1, f"recompiled: {cnt.frame_count} frames for 4 lengths"


@pytest.mark.parametrize("name", ["causal", "share_question", "global_sliding_window"])
def test_gradcheck_float64(name):
    m = make_mask(name, 11, batch=1, num_heads=2)
    q, k, v = qkv(B=1, Sq=11, Sk=11, H=2, Hkv=1, D=8, dtype=torch.float64, grad=True)

    def f(q, k, v):
        return fm4.attention(q, k, v, m)

    torch.autograd.gradcheck(f, (q, k, v))


def test_gradients_match_reference_float64():
    m = make_mask("causal_blockwise", 50, batch=2)
    q, k, v = qkv(Sq=50, Sk=50, dtype=torch.float64, grad=True)
    out, lse = fm4.attention(q, k, v, m, return_lse=True)
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    g = torch.autograd.grad((out, lse), (q, k, v), (dout, dlse))
    qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    out_r, lse_r = attention_ref(qr, kr, vr, m)
    g_r = torch.autograd.grad((out_r, lse_r), (qr, kr, vr), (dout, dlse))
    for a, b in zip(g, g_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_public_api_forms_agree():
    q, k, v = qkv()
    m = make_mask("document", 37, batch=2)
    a = fm4.attention(q, k, v, m)
    b = fm4.attention(q, k, v, m.startend_row_indices, causal=False)
    c, lse = fm4.flashmask_attention(q, k, v, m.startend_row_indices, return_softmax_lse=True)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    assert lse.shape == (2, 4, 37) and lse.dtype == torch.float32
    out = fm4.attention(q, k, v, causal=True)
    torch.testing.assert_close(out, attention_ref(q, k, v, causal=True)[0])
    scaled = fm4.attention(q, k, v, softmax_scale=0.5)
    torch.testing.assert_close(scaled, attention_ref(q, k, v, softmax_scale=0.5)[0])


@pytest.mark.parametrize("B,Sq,Sk", [(0, 5, 5), (2, 0, 5), (2, 5, 0)])
def test_empty_inputs(B, Sq, Sk):
    q = torch.randn(B, Sq, 2, 8)
    k = torch.randn(B, Sk, 2, 8)
    out, lse = fm4.attention(q, k, k.clone(), causal=True, return_lse=True)
    assert out.shape == (B, Sq, 2, 8) and lse.shape == (B, 2, Sq)
    assert bool((out == 0).all()) and bool(torch.isinf(lse).all())


# ------------------------------------------------------------------- validation, one per rule
def _raises(match, *args, **kwargs):
    with pytest.raises((TypeError, ValueError), match=match):
        fm4.attention(*args, **kwargs)


def test_error_dtype_mismatch():
    q, k, v = qkv()
    _raises(r"q, k, v have dtypes torch.float32, torch.float16", q, k.half(), v)


def test_error_dtype_unsupported():
    q, k, v = (t.to(torch.int32) for t in qkv())
    _raises(r"q has dtype torch.int32", q, k, v)


def test_error_device_mismatch():
    q, k, v = qkv()
    _raises(r"k is on meta but q is on cpu", q, k.to("meta"), v)


def test_error_mask_device_mismatch():
    q, k, v = qkv()
    sri = make_mask("document", 37, batch=2).startend_row_indices.to("meta")
    _raises(r"startend_row_indices is on meta but q is on cpu", q, k, v, sri)


def test_error_rank():
    q, k, v = qkv()
    _raises(r"q has shape \(37, 4, 16\) \(rank 3\)", q[0], k, v)


def test_error_head_dim_mismatch():
    q, k, v = qkv()
    _raises(r"q has head_dim 16 but k has 8", q, k[..., :8], v)


def test_error_head_dim_unsupported():
    q, k, v = qkv(D=12)
    _raises(r"q has head_dim 12: fm4 supports head dims that are multiples of 8", q, k, v)


def test_error_gqa_ratio():
    q, k, v = qkv(H=6, Hkv=4)
    _raises(r"q has 6 heads and k/v have 4: the query heads must be a multiple", q, k, v)


def test_error_batch_mismatch():
    q, k, v = qkv()
    _raises(r"batch sizes differ: q 2, k 1", q, k[:1], v[:1])


def test_error_kv_length_mismatch():
    q, k, v = qkv()
    _raises(r"k has 37 keys but v has 36 values", q, k, v[:, :36])


def test_error_mask_length_vs_keys():
    q, k, v = qkv()
    sri = make_mask("document", 36, batch=2).startend_row_indices
    _raises(r"dimension 2 must be the key length 37 of k", q, k, v, sri)


def test_error_mask_batch():
    q, k, v = qkv()
    sri = make_mask("document", 37, batch=1).startend_row_indices
    _raises(r"startend_row_indices has batch 1 .* but q has batch 2", q, k, v, sri)


def test_error_mask_heads():
    q, k, v = qkv(H=4, Hkv=2)
    sri = make_mask("random_eviction", 37, batch=2, num_heads=3).startend_row_indices
    _raises(
        r"has 3 mask heads .*: it must be 1, the number of key/value heads 2",
        q,
        k,
        v,
        sri,
        causal=True,
    )


def test_error_mask_mode():
    q, k, v = qkv()
    sri = make_mask("sliding_window", 37, batch=2).startend_row_indices
    _raises(r"n=1 bound per column \(LTS\), which is only defined with causal=True", q, k, v, sri)


def test_error_mask_negative():
    q, k, v = qkv()
    sri = make_mask("sliding_window", 37, batch=2).startend_row_indices.clone()
    sri[1, 0, 5, 0] = -3
    _raises(r"negative value -3 at index \(1, 0, 5, 0\)", q, k, v, sri, causal=True)


def test_error_causal_conflict():
    q, k, v = qkv()
    _raises(
        r"causal=True was passed with a FlashMask whose causal is False",
        q,
        k,
        v,
        make_mask("document", 37, batch=2),
        causal=True,
    )


def test_error_bad_scale():
    q, k, v = qkv()
    _raises(r"softmax_scale=nan", q, k, v, softmax_scale=math.nan)


def test_error_mask_type():
    q, k, v = qkv()
    _raises(r"mask must be an fm4.FlashMask", q, k, v, [1, 2, 3])
