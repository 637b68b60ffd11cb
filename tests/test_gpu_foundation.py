"""GPU checks of the foundation: tile lists on CUDA, the op on CUDA, compile with inductor."""

from __future__ import annotations

import pytest
import torch

import fm4
from fm4.masks import build_tile_lists, make_mask, mask_names
from fm4.masks.tiles import classify_tiles
from fm4.reference import attention_ref
from tests.helpers import MODES, random_bounds

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("name", mask_names())
def test_tile_lists_cuda_equal_cpu(name):
    m = make_mask(name, 8192 + 5, batch=2, num_heads=4)
    sri = m.startend_row_indices
    cpu = build_tile_lists(sri, m.causal, 8192 + 5, 8192 + 5, 128, 128, impl="torch")
    gpu = build_tile_lists(
        None if sri is None else sri.cuda(),
        m.causal,
        8192 + 5,
        8192 + 5,
        128,
        128,
        impl="torch",
    )
    for f in ("flags", "fwd_partial_cnt", "fwd_partial_idx", "fwd_full_cnt", "bwd_full_idx"):
        a, b = getattr(cpu, f), getattr(gpu, f).cpu()
        if f.endswith("_idx"):  # only the first cnt entries are defined
            cnt = getattr(cpu, f.replace("_idx", "_cnt"))
            valid = torch.arange(a.shape[-1]) < cnt[..., None]
            a, b = a[valid], b[valid]
        assert torch.equal(a, b), f


@pytest.mark.parametrize("causal,n", MODES)
def test_classify_cuda_equal_cpu_random(causal, n):
    gen = torch.Generator().manual_seed(n)
    sri = random_bounds(3, 2, 1000, 1023, n, gen, causal)
    a = classify_tiles(sri, causal, 1000, 1023, 128, 64, impl="torch")
    b = classify_tiles(sri.cuda(), causal, 1000, 1023, 128, 64, impl="torch").cpu()
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["causal", "document", "random_eviction"])
def test_op_cuda_matches_cpu_reference(name):
    B, S, H, Hkv, D = 2, 300, 4, 2, 64
    m = make_mask(name, S, batch=B, num_heads=H)
    q = torch.randn(B, S, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, S, Hkv, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out, lse = fm4.attention(q, k, v, m.to("cuda"), return_lse=True)
    ref, ref_lse = attention_ref(
        q.detach().cpu().float(), k.detach().cpu().float(), v.detach().cpu().float(), m
    )
    assert (out.float().cpu() - ref).abs().max() < 2e-2
    finite = torch.isfinite(ref_lse)
    assert torch.equal(finite, torch.isfinite(lse.cpu()))
    assert (lse.cpu()[finite] - ref_lse[finite]).abs().max() < 1e-3
    out.float().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and not t.grad.isnan().any()


def test_cuda_rejects_fp32():
    q = torch.randn(1, 16, 2, 64, device="cuda")
    with pytest.raises(TypeError, match=r"on CUDA fm4 takes torch\.float16 or torch\.bfloat16"):
        fm4.attention(q, q, q)


def test_compiled_training_step_cuda():
    torch._dynamo.reset()

    def step(q, k, v, sri):
        return fm4.flashmask_attention(q, k, v, sri, causal=True).float().square().mean()

    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    for S in (256, 300):
        m = make_mask("share_question", S, batch=2).to("cuda")
        q, k, v = (
            torch.randn(2, S, 4, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(3)
        )
        loss = compiled(q, k, v, m.startend_row_indices)
        loss.backward()
        assert torch.isfinite(loss) and not q.grad.isnan().any()
