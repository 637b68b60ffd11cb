"""Gradients of fm4.attention on an sm_90 GPU (CuTe DSL forward + backward, through autograd)
against the fp32 reference (``fm4.testing.check_attention_grads``: at most 2x PyTorch's own
error in the inputs' precision plus a small atol; rows that see nothing get zero dq; no NaN).
"""

from __future__ import annotations

import random

import pytest
import torch

import fm4
from fm4.masks import FlashMask, make_mask, mask_names
from fm4.testing import check_attention_grads, poison_allocator
from tests.helpers import MODES, needs_sm90, random_bounds

pytestmark = [pytest.mark.gpu, needs_sm90]


@pytest.fixture(autouse=True)
def _kernels_not_reference(monkeypatch):
    """These tests check fm4's kernels: a ``FM4_BACKEND=reference`` in the environment would
    make them compare the reference with itself."""
    monkeypatch.delenv("FM4_BACKEND", raising=False)


LENGTHS = [(1, 1), (113, 203), (1023, 1024), (4096, 4096), (8192, 8192)]


def _leaf(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape, device="cuda", dtype=dtype).requires_grad_()


def _grads(q, k, v, mask, dout, causal=False, deterministic=False):
    for t in (q, k, v):
        t.grad = None
    poison_allocator("cuda")
    out = fm4.attention(q, k, v, mask, causal=causal, deterministic=deterministic)
    out.backward(dout)
    return q.grad, k.grad, v.grad


def _check(B, sq, sk, H, Hkv, D, mask, causal=False, dtype=torch.bfloat16):
    q = _leaf(B, sq, H, D, dtype=dtype)
    k, v = _leaf(B, sk, Hkv, D, dtype=dtype), _leaf(B, sk, Hkv, D, dtype=dtype)
    dout = torch.randn(B, sq, H, D, device="cuda", dtype=dtype)
    grads = _grads(q, k, v, mask, dout, causal)
    sri = mask.startend_row_indices if isinstance(mask, FlashMask) else mask
    eff_causal = mask.causal if isinstance(mask, FlashMask) else causal
    return check_attention_grads(dout, q.detach(), k.detach(), v.detach(), sri, eff_causal, grads)


@pytest.mark.parametrize("sq,sk", LENGTHS)
@pytest.mark.parametrize("name", mask_names())
def test_registry_masks_grads(name, sq, sk):
    B, H, Hkv = (2, 4, 2) if sk <= 1024 else (1, 2, 1)
    mask = make_mask(name, sk, seqlen_q=sq, batch=B, num_heads=H, device="cuda")
    _check(B, sq, sk, H, Hkv, 128, mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["causal", "document", "share_question", "global_sliding_window"])
def test_head_dim_64_grads(name, dtype):
    mask = make_mask(name, 1024, seqlen_q=1023, batch=2, num_heads=4, device="cuda")
    _check(2, 1023, 1024, 4, 2, 64, mask, dtype=dtype)


@pytest.mark.parametrize("H,Hkv,hm", [(8, 8, "q"), (8, 2, "kv"), (8, 2, "q"), (8, 1, "one")])
def test_gqa_and_mask_heads_grads(H, Hkv, hm):
    Hm = {"one": 1, "kv": Hkv, "q": H}[hm]
    gen = torch.Generator().manual_seed(H + Hkv + Hm)
    sri = random_bounds(2, Hm, 700, 900, 4, gen, False).cuda()
    _check(2, 700, 900, H, Hkv, 128, FlashMask(sri, False, seqlen_q=700))


@pytest.mark.parametrize("causal,n", MODES)
def test_fuzz_random_bounds_grads(causal, n):
    """50 random-bound masks per (causal, n) mode: random shapes, heads and bounds."""
    rng = random.Random(2000 * n + causal)
    for trial in range(50):
        sq, sk = rng.randint(1, 500), rng.randint(1, 500)
        B = rng.choice([1, 2])
        H, Hkv = rng.choice([(2, 1), (4, 2), (2, 2), (3, 1)])
        Hm = rng.choice([1, Hkv, H])
        gen = torch.Generator().manual_seed(trial * 7907 + n)
        sri = random_bounds(B, Hm, sq, sk, n, gen, causal).cuda()
        _check(B, sq, sk, H, Hkv, 128, FlashMask(sri, causal, seqlen_q=sq))


def test_fully_masked_rows_and_columns_get_zero_grads():
    sq = sk = 640
    sri = torch.zeros(1, 1, sk, 4, dtype=torch.int32)
    sri[..., 1] = 300  # rows [0, 300) masked in every column
    sri[..., 2], sri[..., 3] = 500, 520
    sri[:, :, 500:, 0], sri[:, :, 500:, 1] = 0, sq  # columns [500, 640) fully masked
    mask = FlashMask(sri.cuda(), False, seqlen_q=sq)
    q, k, v = _leaf(1, sq, 2, 128), _leaf(1, sk, 2, 128), _leaf(1, sk, 2, 128)
    dq, dk, dv = _grads(q, k, v, mask, torch.randn_like(q))
    assert (dq[:, :300] == 0).all()
    assert (dk[:, 500:] == 0).all() and (dv[:, 500:] == 0).all()


def test_deterministic_is_bitwise_reproducible():
    """deterministic=True: identical gradients over repeated runs (dq's accumulation order is
    fixed); also checked against the reference."""
    mask = make_mask("causal_document", 2048, batch=2, num_heads=4, device="cuda")
    q, k, v = _leaf(2, 2048, 4, 128), _leaf(2, 2048, 2, 128), _leaf(2, 2048, 2, 128)
    dout = torch.randn_like(q)
    first = [g.clone() for g in _grads(q, k, v, mask, dout, deterministic=True)]
    for _ in range(5):
        again = _grads(q, k, v, mask, dout, deterministic=True)
        for a, b in zip(first, again, strict=True):
            assert torch.equal(a, b)
    check_attention_grads(
        dout, q.detach(), k.detach(), v.detach(), mask.startend_row_indices, True, first
    )


def test_compiled_training_step():
    """A training step whose forward + loss is torch.compile(fullgraph=True)'d (AOTAutograd
    compiles the matching backward graph, with fm4::attention_bwd in it): loss and gradients
    match eager, the update moves the weights."""
    torch.manual_seed(0)
    B, S, H, D = 2, 1000, 4, 64
    proj = torch.nn.Linear(H * D, 3 * H * D, device="cuda", dtype=torch.bfloat16)
    mask = make_mask("document", S, batch=B, device="cuda")
    opt = torch.optim.SGD(proj.parameters(), lr=1e-2)

    def forward_loss(x, sri):
        qkv = proj(x).view(B, S, 3, H, D)
        out = fm4.attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], sri)
        return out.float().square().mean()

    compiled = torch.compile(forward_loss, fullgraph=True)
    x = torch.randn(B, S, H * D, device="cuda", dtype=torch.bfloat16)
    eager_w = proj.weight.detach().clone()
    loss_c = compiled(x, mask.startend_row_indices)
    loss_c.backward()
    grad_c = proj.weight.grad.clone()
    proj.weight.grad = None
    loss_e = forward_loss(x, mask.startend_row_indices)
    loss_e.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(grad_c, proj.weight.grad, rtol=2e-2, atol=2e-3)
    opt.step()
    assert not torch.equal(proj.weight.detach(), eager_w)
    assert torch.isfinite(proj.weight).all()


@pytest.mark.parametrize("sq,sk", [(113, 203), (1023, 1024)])
@pytest.mark.parametrize("name", ["causal", "document", "share_question", "global_sliding_window"])
def test_head_dim_256_grads(name, sq, sk):
    """Head dim 256: forward one CTA per tile, backward tile 64 x 64 with dK / dV split over d
    (Note [dK dV split] in ``bwd_sm90.py``)."""
    mask = make_mask(name, sk, seqlen_q=sq, batch=2, num_heads=4, device="cuda")
    _check(2, sq, sk, 4, 2, 256, mask)
