"""Builders for the FlashMask mask family (shared/MASKS.md), vectorised, on any device.

Lengths are in tokens. Document masks take ``doc_lens``: one list of document lengths used for
every batch element (with ``batch=``), or one list per batch element; every list sums to the
sequence length. No builder loops over tokens in Python: a 128K mask builds in milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from fm4.masks.flashmask import FlashMask

DocLens = Sequence[int] | Sequence[Sequence[int]]


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def _check_positive(name: str, value: int, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{name}={value!r} must be {want} int")


def _per_batch(
    doc_lens: DocLens, batch: int | None, what: str = "doc_lens", *, lengths: bool = True
) -> list[list[int]]:
    if len(doc_lens) == 0:
        raise ValueError(f"{what} is empty: give at least one document length")
    nested = isinstance(doc_lens[0], Sequence)
    rows = [list(map(int, r)) for r in doc_lens] if nested else [list(map(int, doc_lens))]
    if not nested:
        rows = rows * (1 if batch is None else batch)
    elif batch is not None and batch != len(rows):
        raise ValueError(f"batch={batch} but {what} gives {len(rows)} per-batch lists")
    if not lengths:
        return rows
    total = sum(rows[0])
    for b, r in enumerate(rows):
        if any(x <= 0 for x in r):
            raise ValueError(f"{what}[{b}]={r} has a length <= 0: document lengths must be > 0")
        if sum(r) != total:
            raise ValueError(
                f"{what}[{b}] sums to {sum(r)} but {what}[0] sums to {total}: every batch "
                "element must have the same sequence length"
            )
    return rows


def _doc_start_end(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Per column: start and end of its document, and start of the last document. ``[B, S]``."""
    starts, ends, last = [], [], []
    for r in rows:
        lens = torch.tensor(r, dtype=torch.int64)
        e = lens.cumsum(0)
        s = e - lens
        starts.append(s.repeat_interleave(lens))
        ends.append(e.repeat_interleave(lens))
        last.append(torch.full_like(starts[-1], int(s[-1])))
    out = (torch.stack(starts), torch.stack(ends), torch.stack(last))
    return tuple(t.to(device) for t in out)


def _mask(cols: list[torch.Tensor], causal: bool, seqlen: int) -> FlashMask:
    """Stack per-column bounds ``[B, S]`` (or ``[B, Hm, S]``) into a FlashMask."""
    t = torch.stack(cols, dim=-1)
    if t.dim() == 3:
        t = t.unsqueeze(1)
    sri = t.to(torch.int32).contiguous()
    return FlashMask(sri, causal, seqlen_q=seqlen, seqlen_k=seqlen, check_values=False)


def full(seqlen_q: int, seqlen_k: int | None = None) -> FlashMask:
    """No mask."""
    return FlashMask(
        None, False, seqlen_q=seqlen_q, seqlen_k=seqlen_q if seqlen_k is None else seqlen_k
    )


def causal(seqlen_q: int, seqlen_k: int | None = None) -> FlashMask:
    """The causal mask (bottom-right aligned), without bounds."""
    return FlashMask(
        None, True, seqlen_q=seqlen_q, seqlen_k=seqlen_q if seqlen_k is None else seqlen_k
    )


def sliding_window(
    seqlen: int, window: int, *, batch: int = 1, device: torch.device | str | None = None
) -> FlashMask:
    """Causal sliding window: row i sees column j iff j <= i <= j + window. (causal, n=1)"""
    _check_positive("seqlen", seqlen)
    _check_positive("window", window, allow_zero=True)
    j = torch.arange(seqlen, device=_device(device), dtype=torch.int64)
    lts = (j + window + 1).clamp(max=seqlen).expand(batch, seqlen)
    return _mask([lts], True, seqlen)


def causal_document(
    doc_lens: DocLens, *, batch: int | None = None, device: torch.device | str | None = None
) -> FlashMask:
    """Packed documents, causal inside each: LTS_j = end of j's document. (causal, n=1)"""
    rows = _per_batch(doc_lens, batch)
    _, e, _ = _doc_start_end(rows, _device(device))
    return _mask([e], True, e.shape[1])


def document(
    doc_lens: DocLens, *, batch: int | None = None, device: torch.device | str | None = None
) -> FlashMask:
    """Packed documents, bidirectional inside each: LTS = end, UTE = start. (non-causal, n=2)"""
    rows = _per_batch(doc_lens, batch)
    s, e, _ = _doc_start_end(rows, _device(device))
    return _mask([e, s], False, e.shape[1])


def share_question(
    docs: Sequence[Sequence[int]] | Sequence[Sequence[Sequence[int]]],
    *,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> FlashMask:
    """Shared question: each document is ``[question_len, answer_len, ...]``. (causal, n=1)

    Answers see the question and themselves (causally), not each other: question columns get
    LTS = end of the whole document, answer columns LTS = end of their answer.
    """
    nested = len(docs) > 0 and isinstance(docs[0][0], Sequence)
    per_b = [list(d) for d in docs] if nested else [list(docs)] * (1 if batch is None else batch)
    if nested and batch is not None and batch != len(per_b):
        raise ValueError(f"batch={batch} but docs gives {len(per_b)} per-batch lists")
    cols = []
    for b, doc_list in enumerate(per_b):
        seg_lens, seg_val = [], []
        pos = 0
        for d in doc_list:
            d = [int(x) for x in d]
            if len(d) < 1 or any(x <= 0 for x in d):
                raise ValueError(f"docs[{b}] has a document {d}: segments must be > 0 tokens")
            doc_end = pos + sum(d)
            seg_end = pos
            for k, ln in enumerate(d):
                seg_end += ln
                seg_lens.append(ln)
                seg_val.append(doc_end if k == 0 else seg_end)
            pos = doc_end
        cols.append(torch.tensor(seg_val).repeat_interleave(torch.tensor(seg_lens)))
    if len({c.numel() for c in cols}) != 1:
        raise ValueError("every batch element of share_question must have the same total length")
    lts = torch.stack(cols).to(_device(device))
    return _mask([lts], True, lts.shape[1])


def prefix_lm_causal(
    seqlen: int, prefix: int, *, batch: int = 1, device: torch.device | str | None = None
) -> FlashMask:
    """Prefix LM: the first ``prefix`` columns are seen by every row, the rest causally.

    (non-causal, n=2: LTS = S; UTE = 0 for j < prefix else j)
    """
    _check_positive("seqlen", seqlen)
    _check_positive("prefix", prefix, allow_zero=True)
    j = torch.arange(seqlen, device=_device(device), dtype=torch.int64)
    ute = torch.where(j < prefix, 0, j).expand(batch, seqlen)
    return _mask([torch.full_like(ute, seqlen), ute], False, seqlen)


def prefix_lm_document(
    doc_lens: DocLens,
    prefix_lens: Sequence[int] | Sequence[Sequence[int]],
    *,
    batch: int | None = None,
    device: torch.device | str | None = None,
) -> FlashMask:
    """Packed documents, each a prefix LM with its own prefix length. (non-causal, n=2)

    LTS_j = end of j's document; UTE_j = document start if j is in the prefix, else j.
    """
    rows = _per_batch(doc_lens, batch)
    prows = _per_batch(prefix_lens, len(rows), "prefix_lens", lengths=False)
    for b, (p, r) in enumerate(zip(prows, rows, strict=True)):
        if len(p) != len(r) or any(not 0 <= x <= d for x, d in zip(p, r, strict=True)):
            raise ValueError(
                f"prefix_lens[{b}]={p} must give one prefix length per document of {r}, each "
                "in [0, document length]"
            )
    dev = _device(device)
    s, e, _ = _doc_start_end(rows, dev)
    plen = torch.stack(
        [
            torch.tensor(p, dtype=torch.int64).repeat_interleave(torch.tensor(r))
            for p, r in zip(prows, rows, strict=True)
        ]
    ).to(dev)
    j = torch.arange(s.shape[1], device=dev, dtype=torch.int64)
    ute = torch.where(j < s + plen, s, j)
    return _mask([e, ute], False, e.shape[1])


def causal_blockwise(
    doc_lens: DocLens, *, batch: int | None = None, device: torch.device | str | None = None
) -> FlashMask:
    """Causal blocks where the last document sees every earlier one. (causal, n=2)

    All but the last document: LTS = its end, LTE = start of the last document; the last one:
    LTS = LTE = S (nothing masked beyond causal).
    """
    rows = _per_batch(doc_lens, batch)
    s, e, last = _doc_start_end(rows, _device(device))
    S = e.shape[1]
    in_last = s == last
    lts = torch.where(in_last, S, e)
    lte = torch.where(in_last, S, last)
    return _mask([lts, lte], True, S)


def global_sliding_window(
    seqlen: int,
    global_tokens: int,
    window: int,
    *,
    batch: int = 1,
    device: torch.device | str | None = None,
) -> FlashMask:
    """Bidirectional sliding window (|i - j| <= window) plus G global tokens. (non-causal, n=4)

    Global columns j < G are seen by every row, global rows i < G see every column.
    """
    _check_positive("seqlen", seqlen)
    _check_positive("global_tokens", global_tokens, allow_zero=True)
    _check_positive("window", window, allow_zero=True)
    G, w, S = global_tokens, window, seqlen
    j = torch.arange(S, device=_device(device), dtype=torch.int64)
    glob = j < G
    lts = torch.where(glob, S, (j + w + 1).clamp(max=S))
    lte = torch.full_like(j, S)
    far = j >= G + w + 1
    uts = torch.where(far, G, 0)
    ute = torch.where(far, j - w, 0)
    cols = [c.expand(batch, S) for c in (lts, lte, uts, ute)]
    return _mask(cols, False, S)


def qk_sparse(
    seqlen: int,
    spans: Sequence[tuple[int, int]],
    *,
    batch: int = 1,
    device: torch.device | str | None = None,
) -> FlashMask:
    """Causal attention where, inside each span [o, o + L) of columns, rows of the span lose the
    span's columns from the column on: LTS_j = j, LTE_j = o + L. (causal, n=2)

    Spans are (offset, length) pairs; they must not overlap.
    """
    _check_positive("seqlen", seqlen)
    S = seqlen
    j = torch.arange(S, device=_device(device), dtype=torch.int64)
    lts = torch.full_like(j, S)
    lte = torch.full_like(j, S)
    taken = torch.zeros_like(j, dtype=torch.bool)
    for o, L in spans:
        if o < 0 or L <= 0 or o + L > S:
            raise ValueError(f"qk_sparse span (offset={o}, length={L}) must lie inside [0, {S})")
        inside = (j >= o) & (j < o + L)
        if bool((inside & taken).any()):
            raise ValueError(f"qk_sparse span (offset={o}, length={L}) overlaps an earlier span")
        taken |= inside
        lts = torch.where(inside, j, lts)
        lte = torch.where(inside, o + L, lte)
    return _mask([lts.expand(batch, S), lte.expand(batch, S)], True, S)


def random_eviction(
    seqlen: int,
    num_heads: int,
    *,
    evict_fraction: float = 0.5,
    min_row: int | None = None,
    batch: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FlashMask:
    """Causal attention with per-head random eviction of key columns. (causal, n=1, Hm = H)

    Each head evicts ``evict_fraction`` of the columns, column j from a random row in
    [max(j, min_row), S) on (default ``min_row = S // 2``): LTS_j = that row; kept columns
    LTS_j = S.
    """
    _check_positive("seqlen", seqlen)
    _check_positive("num_heads", num_heads)
    if not 0.0 <= evict_fraction <= 1.0:
        raise ValueError(f"evict_fraction={evict_fraction} must be in [0, 1]")
    S = seqlen
    r0 = S // 2 if min_row is None else min_row
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, num_heads, S)
    evict = torch.rand(shape, generator=gen) < evict_fraction
    lo = torch.arange(S, dtype=torch.float32).clamp(min=r0).clamp(max=S - 1)  # [lo, S) non-empty
    row = torch.rand(shape, generator=gen).mul_(S - lo).add_(lo).to(torch.int32).clamp_(max=S - 1)
    lts = torch.where(evict, row, S).to(_device(device))
    return _mask([lts], True, S)


def random_doc_lens(seqlen: int, num_docs: int, *, seed: int = 0) -> list[int]:
    """Split ``seqlen`` tokens into ``num_docs`` random documents (uniform cut points, seeded)."""
    _check_positive("seqlen", seqlen)
    k = max(1, min(num_docs, seqlen))
    gen = torch.Generator().manual_seed(seed)
    cuts = (torch.randperm(seqlen - 1, generator=gen)[: k - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, seqlen]
    return [b - a for a, b in itertools.pairwise(bounds)]
