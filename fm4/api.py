"""The public functions: `attention` (fm4's own) and `flashmask_attention` (FlashMask's)."""

from __future__ import annotations

import torch

from fm4.masks.flashmask import FlashMask
from fm4.ops import attention_op


def _resolve_mask(mask, causal: bool) -> tuple[torch.Tensor | None, bool]:
    if mask is None:
        return None, bool(causal)
    if isinstance(mask, FlashMask):
        if causal and not mask.causal:
            raise ValueError(
                "causal=True was passed with a FlashMask whose causal is False: the mask carries "
                "its own causal flag; build the mask with causal=True or drop causal=True"
            )
        return mask.startend_row_indices, mask.causal
    if isinstance(mask, torch.Tensor):
        return mask, bool(causal)
    raise TypeError(
        f"mask must be an fm4.FlashMask, an int32 startend_row_indices tensor or None, "
        f"got {type(mask).__name__}"
    )


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: FlashMask | torch.Tensor | None = None,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    return_lse: bool = False,
    deterministic: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention with a FlashMask column-bound mask.

    Args:
        q: ``(B, Sq, H, D)``; k: ``(B, Sk, Hkv, D)``; v: ``(B, Sk, Hkv, Dv)``, H % Hkv == 0.
            fp16/bf16 (fp32/fp64 too on the CPU).
        mask: a `fm4.FlashMask` (carries its own ``causal``), an int32 ``startend_row_indices``
            ``[B, Hm, Sk, n]`` read with ``causal``, or None.
        causal: bottom-right aligned causal masking (with a FlashMask: must agree with it).
        softmax_scale: default ``1 / sqrt(D)``.
        return_lse: also return the log-sum-exp, fp32 ``(B, H, Sq)`` (natural log).
        deterministic: bitwise-identical gradients from run to run (the backward orders its dQ
            accumulation instead of using atomics; slower, see the README).
    Returns:
        out ``(B, Sq, H, Dv)``, or (out, lse). Rows that see no key give out 0 and lse -inf.

    Example::

        mask = fm4.masks.causal_document([3000, 5192], device="cuda")
        out = fm4.attention(q, k, v, mask)
    """
    sri, causal_eff = _resolve_mask(mask, causal)
    out, lse = attention_op(q, k, v, sri, causal_eff, softmax_scale, bool(deterministic))
    return (out, lse) if return_lse else out


def flashmask_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    startend_row_indices: torch.Tensor | None = None,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    return_softmax_lse: bool = False,
    deterministic: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """FlashMask's ``flashmask_attention`` for PyTorch tensors (switch with one import).

    Args:
        query: ``(B, Sq, H, D)``; key/value: ``(B, Sk, Hkv, D)``.
        startend_row_indices: int32 ``[B, Hm, Sk, n]``, n in {1, 2, 4}, or None
            (see `fm4.masks.bounds` for the meaning of each mode).
        causal: whether the causal triangle is masked too (required for n=1; not allowed for
            n=4).
        return_softmax_lse: also return the lse, fp32 ``(B, H, Sq)``.
        deterministic: bitwise-identical gradients from run to run.
    Returns:
        out ``(B, Sq, H, D)``, or (out, lse).
    """
    out, lse = attention_op(
        query, key, value, startend_row_indices, bool(causal), softmax_scale, bool(deterministic)
    )
    return (out, lse) if return_softmax_lse else out
