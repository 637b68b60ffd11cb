"""fm4.attention on an sm_90 GPU (the CuTe DSL forward) against the reference.

Tolerance: at most 2x PyTorch's own error in the inputs' precision plus 1e-3 (fm4.testing).
Outputs start as NaN (poisoned allocator), so an element the kernel does not write fails.
"""

from __future__ import annotations

import random

import pytest
import torch

import fm4
from fm4.masks import FlashMask, make_mask, mask_names
from fm4.testing import check_attention, poison_allocator
from tests.helpers import MODES, needs_sm90, random_bounds

pytestmark = [pytest.mark.gpu, needs_sm90]


@pytest.fixture(autouse=True)
def _kernels_not_reference(monkeypatch):
    """These tests check fm4's kernels: a ``FM4_BACKEND=reference`` in the environment would
    make them compare the reference with itself."""
    monkeypatch.delenv("FM4_BACKEND", raising=False)


LENGTHS = [(1, 1), (113, 203), (1023, 1024), (4096, 4096), (8192, 8192)]


def _qkv(B, sq, sk, H, Hkv, D, dtype=torch.bfloat16):
    q = torch.randn(B, sq, H, D, device="cuda", dtype=dtype)
    k = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype)
    v = torch.randn(B, sk, Hkv, D, device="cuda", dtype=dtype)
    return q, k, v


def _run_and_check(q, k, v, mask):
    poison_allocator("cuda")
    out, lse = fm4.attention(q, k, v, mask, return_lse=True)
    return check_attention(q, k, v, mask, False, out, lse)


@pytest.mark.parametrize("sq,sk", LENGTHS)
@pytest.mark.parametrize("name", mask_names())
def test_registry_masks(name, sq, sk):
    B, H, Hkv = (2, 4, 2) if sk <= 1024 else (1, 2, 1)
    mask = make_mask(name, sk, seqlen_q=sq, batch=B, num_heads=H, device="cuda")
    _run_and_check(*_qkv(B, sq, sk, H, Hkv, 128), mask)


@pytest.mark.parametrize("D", [64, 256])
@pytest.mark.parametrize("name", ["causal", "document", "share_question", "global_sliding_window"])
def test_head_dims(name, D):
    mask = make_mask(name, 1024, seqlen_q=1023, batch=2, num_heads=4, device="cuda")
    _run_and_check(*_qkv(2, 1023, 1024, 4, 2, D), mask)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("H,Hkv,hm", [(8, 8, "q"), (8, 2, "kv"), (8, 2, "q"), (8, 1, "one")])
def test_gqa_and_mask_heads(H, Hkv, hm, dtype):
    Hm = {"one": 1, "kv": Hkv, "q": H}[hm]
    gen = torch.Generator().manual_seed(H + Hkv + Hm)
    sri = random_bounds(2, Hm, 700, 900, 4, gen, False).cuda()
    _run_and_check(*_qkv(2, 700, 900, H, Hkv, 128, dtype), FlashMask(sri, False, seqlen_q=700))


@pytest.mark.parametrize("causal,n", MODES)
def test_fuzz_random_bounds(causal, n):
    """200 random-bound masks per (causal, n) mode: random shapes, heads and bounds."""
    rng = random.Random(1000 * n + causal)
    worst = 0.0
    for trial in range(200):
        sq, sk = rng.randint(1, 600), rng.randint(1, 600)
        B = rng.choice([1, 2])
        H, Hkv = rng.choice([(2, 1), (4, 2), (2, 2), (3, 1)])
        Hm = rng.choice([1, Hkv, H])
        gen = torch.Generator().manual_seed(trial * 7919 + n)
        sri = random_bounds(B, Hm, sq, sk, n, gen, causal).cuda()
        e = _run_and_check(*_qkv(B, sq, sk, H, Hkv, 128), FlashMask(sri, causal, seqlen_q=sq))
        worst = max(worst, e.out_err / (e.out_err_torch + 1e-6))
    print(f"mode (causal={causal}, n={n}): worst error ratio to PyTorch's {worst:.2f}")


def test_no_mask_and_causal_unaligned():
    for causal in (False, True):
        q, k, v = _qkv(3, 333, 777, 4, 4, 128)
        poison_allocator("cuda")
        out, lse = fm4.attention(q, k, v, causal=causal, return_lse=True)
        check_attention(q, k, v, None, causal, out, lse)


def test_unsupported_head_dim_is_a_clear_error(monkeypatch):
    q, k, v = _qkv(1, 64, 64, 2, 2, 32)
    with pytest.raises(ValueError, match=r"sm90 kernel cannot run these inputs: head dims"):
        fm4.attention(q, k, v)
    monkeypatch.setenv("FM4_BACKEND", "reference")
    out = fm4.attention(q, k, v)  # the reference, on request
    assert out.shape == q.shape


def test_long_sequence_no_overflow():
    """128K x 128K with a sliding window; the last rows are checked against the reference.

    With bottom-right causal alignment the last R query rows alone are an exact sub-problem
    once the bounds are shifted by the row offset (rows i >= LTS_j becomes i' >= LTS_j - r0).
    """
    B, S, H, D, R = 1, 128 * 1024, 2, 128, 256
    q, k, v = _qkv(B, S, S, H, H, D)
    mask = make_mask("sliding_window", S, device="cuda")
    out, lse = fm4.attention(q, k, v, mask, return_lse=True)
    r0 = S - R
    shifted = (mask.startend_row_indices - r0).clamp(min=0).to(torch.int32)
    sub = FlashMask(shifted, True, seqlen_q=R)
    check_attention(q[:, r0:], k, v, sub, True, out[:, r0:].contiguous(), lse[:, :, r0:])
