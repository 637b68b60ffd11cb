"""One registry of masks by name, in FlashMask V4's benchmark configuration.

Tests and the benchmark both draw masks from here, so they test and time the same thing.
Parameters scale with the sequence length S (as FlashMask V4's benchmark does): sliding window
w = S/16, prefix P = S/2, random eviction from row S/2 on, G = 16 global tokens with w = S/16,
documents = S split into 5 random documents (seeded), shared question = 40% question and three
answers of 20%, prefix_lm_document prefix = 1/4 of each document, qk_sparse = three spans of S/16
columns at S/8, S/2 and 3S/4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fm4.masks import builders as mb
from fm4.masks.flashmask import FlashMask

NUM_DOCS = 5


@dataclass(frozen=True)
class MaskSpec:
    """A named mask: its (causal, n) mode and how to build it at a length."""

    name: str
    causal: bool
    n: int  # bounds per column (0: no bounds)
    per_head: bool  # Hm = H (else Hm = 1)
    build: Callable[[int, int, int, torch.device, int], FlashMask]  # (S, B, H, device, seed)
    description: str


def _docs(S: int, seed: int) -> list[int]:
    return mb.random_doc_lens(S, NUM_DOCS, seed=seed)


def _share_question_docs(S: int, seed: int) -> list[list[int]]:
    out = []
    for d in _docs(S, seed):
        if d < 4:
            out.append([d])
            continue
        a = max(1, d // 5)
        q = d - 3 * a
        out.append([q, a, a, a])
    return out


def _prefixes(doc_lens: list[int]) -> list[int]:
    return [d // 4 for d in doc_lens]


def _qk_spans(S: int) -> list[tuple[int, int]]:
    L = max(1, S // 16)
    spans, end = [], 0
    for o in (S // 8, S // 2, 3 * S // 4):
        o = max(o, end)
        if o + L <= S:
            spans.append((o, L))
            end = o + L
    return spans


def _w(S: int) -> int:
    return max(1, S // 16)


_SPECS = [
    MaskSpec("full", False, 0, False, lambda S, B, H, d, s: mb.full(S), "no mask"),
    MaskSpec("causal", True, 0, False, lambda S, B, H, d, s: mb.causal(S), "causal"),
    MaskSpec(
        "sliding_window",
        True,
        1,
        False,
        lambda S, B, H, d, s: mb.sliding_window(S, _w(S), batch=B, device=d),
        "causal sliding window, w = S/16",
    ),
    MaskSpec(
        "causal_document",
        True,
        1,
        False,
        lambda S, B, H, d, s: mb.causal_document(_docs(S, s), batch=B, device=d),
        "5 random documents, causal inside each",
    ),
    MaskSpec(
        "document",
        False,
        2,
        False,
        lambda S, B, H, d, s: mb.document(_docs(S, s), batch=B, device=d),
        "5 random documents, bidirectional inside each",
    ),
    MaskSpec(
        "share_question",
        True,
        1,
        False,
        lambda S, B, H, d, s: mb.share_question(_share_question_docs(S, s), batch=B, device=d),
        "5 random documents, each a question (40%) and three answers",
    ),
    MaskSpec(
        "prefix_lm_causal",
        False,
        2,
        False,
        lambda S, B, H, d, s: mb.prefix_lm_causal(S, S // 2, batch=B, device=d),
        "prefix LM, P = S/2",
    ),
    MaskSpec(
        "prefix_lm_document",
        False,
        2,
        False,
        lambda S, B, H, d, s: mb.prefix_lm_document(
            _docs(S, s), _prefixes(_docs(S, s)), batch=B, device=d
        ),
        "5 random documents, each a prefix LM with prefix = 1/4 of the document",
    ),
    MaskSpec(
        "causal_blockwise",
        True,
        2,
        False,
        lambda S, B, H, d, s: mb.causal_blockwise(_docs(S, s), batch=B, device=d),
        "5 random documents; the last sees all earlier ones",
    ),
    MaskSpec(
        "global_sliding_window",
        False,
        4,
        False,
        lambda S, B, H, d, s: mb.global_sliding_window(S, min(16, S), _w(S), batch=B, device=d),
        "bidirectional window w = S/16 plus G = 16 global tokens",
    ),
    MaskSpec(
        "qk_sparse",
        True,
        2,
        False,
        lambda S, B, H, d, s: mb.qk_sparse(S, _qk_spans(S), batch=B, device=d),
        "causal; three spans of S/16 columns at S/8, S/2, 3S/4",
    ),
    MaskSpec(
        "random_eviction",
        True,
        1,
        True,
        lambda S, B, H, d, s: mb.random_eviction(S, H, batch=B, seed=s, device=d),
        "causal; per head, half the columns evicted from a random row in [max(j, S/2), S)",
    ),
]

MASKS: dict[str, MaskSpec] = {spec.name: spec for spec in _SPECS}


def mask_names() -> list[str]:
    """All registered mask names, in the benchmark's order."""
    return list(MASKS)


def make_mask(
    name: str,
    seqlen: int,
    *,
    batch: int = 1,
    num_heads: int = 1,
    device: torch.device | str | None = None,
    seed: int = 0,
    seqlen_q: int | None = None,
) -> FlashMask:
    """Build the registered mask ``name`` for keys of length ``seqlen``.

    Args:
        num_heads: query heads; used by per-head masks (random_eviction gets Hm = num_heads).
        seqlen_q: query length when it differs from ``seqlen`` (the bounds are built for
            ``seqlen`` rows and read against ``seqlen_q``, values above it clamping).
    """
    if name not in MASKS:
        raise KeyError(f"unknown mask {name!r}; registered masks: {', '.join(MASKS)}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    m = MASKS[name].build(seqlen, batch, num_heads, dev, seed)
    sq = seqlen if seqlen_q is None else seqlen_q
    return FlashMask(
        m.startend_row_indices, m.causal, seqlen_q=sq, seqlen_k=seqlen, check_values=False
    )
