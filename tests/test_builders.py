"""Each builder against an independent dense construction written from the mask's definition
(who sees whom), not from the bounds."""

from __future__ import annotations

import time

import pytest
import torch

from fm4.masks import builders as mb
from fm4.masks import make_mask, mask_names
from fm4.masks.registry import MASKS


def ij(S):
    return torch.arange(S)[:, None], torch.arange(S)[None, :]


def doc_ids(doc_lens):
    return torch.repeat_interleave(torch.arange(len(doc_lens)), torch.tensor(doc_lens))


DOCS = [[37], [10, 27], [5, 1, 13, 18], [1, 1, 1, 34]]
SEQ = [1, 37, 128, 203]


def check(mask, expected):
    got = mask.to_dense()[0, 0]
    assert got.shape == expected.shape
    bad = (got != expected).nonzero()
    assert bad.numel() == 0, f"first mismatch at (row, col) {bad[0].tolist()}"


@pytest.mark.parametrize("S", SEQ)
def test_full_and_causal(S):
    i, j = ij(S)
    check(mb.full(S), torch.ones(S, S, dtype=torch.bool))
    check(mb.causal(S), j <= i)


@pytest.mark.parametrize("S", SEQ)
@pytest.mark.parametrize("w", [0, 1, 16, 500])
def test_sliding_window(S, w):
    i, j = ij(S)
    check(mb.sliding_window(S, w), (j <= i) & (i <= j + w))


@pytest.mark.parametrize("docs", DOCS)
def test_causal_document(docs):
    S, d = sum(docs), doc_ids(docs)
    i, j = ij(S)
    check(mb.causal_document(docs), (d[:, None] == d[None, :]) & (j <= i))


@pytest.mark.parametrize("docs", DOCS)
def test_document(docs):
    d = doc_ids(docs)
    check(mb.document(docs), d[:, None] == d[None, :])


@pytest.mark.parametrize(
    "docs", [[[10, 3, 4, 5]], [[3, 2], [6, 1, 1, 1]], [[1], [4, 4, 4]], [[5, 5, 5, 5], [2]]]
)
def test_share_question(docs):
    # Segment ids: each (document, segment); a row sees a column iff same document, causal,
    # and the column is in the question or in the row's own segment.
    doc, seg, is_q = [], [], []
    for di, d in enumerate(docs):
        for si, ln in enumerate(d):
            doc += [di] * ln
            seg += [si] * ln
            is_q += [si == 0] * ln
    doc, seg, is_q = torch.tensor(doc), torch.tensor(seg), torch.tensor(is_q)
    S = len(doc)
    i, j = ij(S)
    same_doc = doc[:, None] == doc[None, :]
    sees = is_q[None, :] | (seg[:, None] == seg[None, :])
    check(mb.share_question(docs), same_doc & sees & (j <= i))


@pytest.mark.parametrize("S", SEQ)
@pytest.mark.parametrize("frac", [0, 0.5, 1])
def test_prefix_lm_causal(S, frac):
    P = int(S * frac)
    i, j = ij(S)
    check(mb.prefix_lm_causal(S, P), (j < P) | (j <= i))


@pytest.mark.parametrize("docs", DOCS)
def test_prefix_lm_document(docs):
    prefixes = [d // 3 for d in docs]
    S, d = sum(docs), doc_ids(docs)
    starts = torch.tensor([sum(docs[:k]) for k in range(len(docs))])[d]
    plen = torch.tensor(prefixes)[d]
    i, j = ij(S)
    in_prefix = j < (starts + plen)[None, :]
    check(
        mb.prefix_lm_document(docs, prefixes), (d[:, None] == d[None, :]) & (in_prefix | (j <= i))
    )


@pytest.mark.parametrize("docs", DOCS)
def test_causal_blockwise(docs):
    S, d = sum(docs), doc_ids(docs)
    last = len(docs) - 1
    i, j = ij(S)
    same = d[:, None] == d[None, :]
    row_in_last = (d == last)[:, None]
    check(mb.causal_blockwise(docs), (same | row_in_last) & (j <= i))


@pytest.mark.parametrize("S,G,w", [(1, 1, 0), (40, 4, 3), (203, 16, 12), (64, 0, 5), (50, 60, 2)])
def test_global_sliding_window(S, G, w):
    i, j = ij(S)
    expected = ((i - j).abs() <= w) | (j < G) | (i < G)
    check(mb.global_sliding_window(S, G, w), expected)


@pytest.mark.parametrize("S,spans", [(64, [(8, 4), (32, 4)]), (203, [(0, 10), (100, 50)])])
def test_qk_sparse(S, spans):
    i, j = ij(S)
    expected = j <= i
    for o, L in spans:
        in_i = (i >= o) & (i < o + L)
        in_j = (j >= o) & (j < o + L)
        expected = expected & ~(in_i & in_j & (i >= j))
    check(mb.qk_sparse(S, spans), expected)


@pytest.mark.parametrize("S", [1, 64, 203])
def test_random_eviction(S):
    m = mb.random_eviction(S, 3, seed=5)
    lts = m.startend_row_indices[0, :, :, 0]
    i, j = ij(S)
    for h in range(3):
        evicted = lts[h] < S
        # Evicted columns leave at a row in [max(j, S/2), S).
        js = torch.arange(S)[evicted]
        assert bool((lts[h][evicted] >= torch.clamp(js, min=S // 2)).all())
        expected = (j <= i) & (i < lts[h][None, :])
        assert torch.equal(m.to_dense()[0, h], expected)
    if S >= 64:
        assert 0.3 < float((lts < S).float().mean()) < 0.7


def test_batch_and_per_batch_docs():
    m = mb.document([[3, 5], [8]], device="cpu")
    assert m.startend_row_indices.shape == (2, 1, 8, 2)
    m2 = mb.causal_document([4, 4], batch=3)
    assert m2.startend_row_indices.shape == (3, 1, 8, 1)
    with pytest.raises(ValueError, match="same sequence length"):
        mb.document([[3, 5], [9]])
    with pytest.raises(ValueError, match="must be > 0"):
        mb.document([3, 0, 5])


def test_random_doc_lens():
    lens = mb.random_doc_lens(8192, 5, seed=0)
    assert len(lens) == 5 and sum(lens) == 8192 and min(lens) > 0
    assert lens == mb.random_doc_lens(8192, 5, seed=0)
    assert lens != mb.random_doc_lens(8192, 5, seed=1)


@pytest.mark.parametrize("name", mask_names())
def test_registry_builds_with_declared_mode(name):
    spec = MASKS[name]
    m = make_mask(name, 203, batch=2, num_heads=4)
    assert m.causal == spec.causal and m.n == spec.n
    if spec.n:
        assert m.num_heads == (4 if spec.per_head else 1) and m.batch == 2


def test_registry_128k_builds_fast():
    # Vectorised builders: every registry mask at 128K in well under a second each.
    t0 = time.perf_counter()
    for name in mask_names():
        make_mask(name, 128 * 1024, num_heads=2)
    assert time.perf_counter() - t0 < 10.0
