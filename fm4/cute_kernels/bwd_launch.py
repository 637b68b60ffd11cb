"""Torch-facing launcher of fm4's Hopper backward (preprocess, main kernel, postprocess).

Supported: bf16 / fp16, head dims 64, 128 and 256 (q, k, v the same; 256 with tile 64 x 64,
Note [dK dV split] in ``bwd_sm90.py``), GQA / MQA, any lengths, no mask / causal / FlashMask
bounds with n in {1, 2, 4}, dlse (gradient of the lse output), CUDA tensors on an sm_90 device.
Not supported: head_dim_v != head_dim, varlen (``can_implement`` says why).
``deterministic=True``: dQ added in a fixed order (Note [Deterministic dQ] in ``bwd_sm90.py``).

Three launches: the preprocess (Delta, lse in log2, zeroed dQ tickets; in deterministic mode
zeroed semaphores and a zeroed fp32 dQ accumulator), the main kernel (dK, dV written in the
input dtype; dQ added into the accumulator, zeroed one m_block ahead, Note [dQ lazy zero]
in ``bwd_sm90.py``), the postprocess (dQ * scale in the input dtype). The compile cache is keyed
on the compile-time configuration only (dtype, head dim, causal, number of bounds,
deterministic, tile shape; dlse and the zero fill for the preprocess, the tickets for the
postprocess); batch, lengths and head counts are symbolic.

"""

from __future__ import annotations

import math
from typing import Any

import torch

from fm4.cute_kernels.fwd_launch import TORCH_TO_CUTLASS_NAMES, check_sm90_inputs

SUPPORTED_HEAD_DIMS_BWD = (64, 128, 256)


def tile_shape_bwd(head_dim: int) -> tuple[int, int]:
    """(tile_m, tile_n) of the backward for this head dim; its tile lists must use it."""
    from fm4.cute_kernels.bwd_sm90 import TILE_CONFIG_BWD_SM90

    tile_m, tile_n, _ = TILE_CONFIG_BWD_SM90[head_dim]
    return tile_m, tile_n


def can_implement(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    startend_row_indices: torch.Tensor | None = None,
    causal: bool = False,
    deterministic: bool = False,
) -> tuple[bool, str]:
    """Whether ``attention_bwd_sm90`` can run these inputs; if not, why."""
    del deterministic  # both modes take the same inputs
    if out.shape != q.shape or dout.shape != q.shape:
        return False, f"out {tuple(out.shape)} and dout {tuple(dout.shape)} must match q"
    tensors = {"q": q, "k": k, "v": v, "out": out, "dout": dout}
    return check_sm90_inputs(
        tensors, SUPPORTED_HEAD_DIMS_BWD, "backward", startend_row_indices, causal
    )


def bwd_persistent(kernel_options: dict[str, Any], max_ctas: int | None = None) -> bool:
    """Whether the backward kernel with these options is persistent (Note [Persistent
    backward] in ``bwd_sm90.py``); ``max_ctas`` (its grid size) must be positive and is an
    error for a kernel with one CTA per work item."""
    from fm4.cute_kernels.bwd_sm90 import PERSISTENT_BWD
    from fm4.cute_kernels.compile_utils import check_max_ctas

    persistent = bool(kernel_options.get("persistent", PERSISTENT_BWD))
    check_max_ctas(
        max_ctas,
        persistent,
        f"backward only (kernel_options {kernel_options}): drop max_ctas or pass "
        "kernel_options={'persistent': True}",
    )
    return persistent


def _compile_bwd(
    dtype_name: str,
    head_dim: int,
    causal: bool,
    n_bounds: int,
    deterministic: bool = False,
    tile_m: int | None = None,
    tile_n: int | None = None,
    *,
    arch: str | None = "sm_90a",
    **variant: Any,
) -> Any:
    """Compile the main backward kernel for ``arch`` (None: the visible GPU); the arguments
    are the cache key. ``variant``: more ``FlashMaskBwdSm90`` knobs (tuning scripts)."""
    import cutlass
    import cutlass.cute as cute

    from fm4.cute_kernels.bwd_sm90 import FlashMaskBwdSm90
    from fm4.cute_kernels.compile_utils import compile_options, fake_env_stream
    from fm4.cute_kernels.compile_utils import fake_tensor as _fake

    dtype = getattr(cutlass, dtype_name)
    b, s_q, s_qp, s_k, h, h_kv = (cute.sym_int() for _ in range(6))
    q, do = (_fake(dtype, (b, s_q, h, head_dim), 8) for _ in range(2))
    k, v, dk, dv = (_fake(dtype, (b, s_k, h_kv, head_dim), 8) for _ in range(4))
    lse2, delta = (_fake(cutlass.Float32, (b, h, s_qp), 1) for _ in range(2))
    dq_accum = _fake(cutlass.Float32, (b, h, s_qp, head_dim), 4)
    mask_args: list[Any] = [None] * 5
    if n_bounds:
        hm, hm_l, m_blocks, n_blocks = (cute.sym_int() for _ in range(4))
        mask_args = [
            _fake(cutlass.Int32, (b, hm, s_k, n_bounds), 1),
            _fake(cutlass.Int32, (b, hm_l, n_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, n_blocks, m_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, n_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, n_blocks, m_blocks), 1),
        ]
    kernel = FlashMaskBwdSm90(
        dtype, head_dim, causal, n_bounds, deterministic, tile_m, tile_n, **variant
    )
    sem = None  # deterministic: the semaphores; dq_lazy_zero: the tickets
    if deterministic or kernel.dq_lazy_zero:
        sem = _fake(cutlass.Int32, (b, h, cute.sym_int()), 1)
    fwd_lists = (None, None, None, None)
    if deterministic and n_bounds:
        hm, m_blocks, n_blocks = mask_args[1].shape[1], cute.sym_int(), cute.sym_int()
        fwd_lists = (
            _fake(cutlass.Int32, (b, hm, m_blocks), 1),
            _fake(cutlass.Int32, (b, hm, m_blocks, n_blocks), 1),
            _fake(cutlass.Int32, (b, hm, m_blocks), 1),
            _fake(cutlass.Int32, (b, hm, m_blocks, n_blocks), 1),
        )
    counter = _fake(cutlass.Int32, (1,), 1) if kernel.persistent else None
    return cute.compile(
        kernel,
        q,
        k,
        v,
        do,
        lse2,
        delta,
        dq_accum,
        dk,
        dv,
        cutlass.Float32(1.0),
        *mask_args,
        sem,
        *fwd_lists,
        counter,
        cutlass.Int32(1),  # max_ctas: a run-time value
        fake_env_stream(),
        options=compile_options(arch),
    )


def _compile_pre(
    dtype_name: str, head_dim: int, has_dlse: bool, tile_m: int, zero_dq_accum: bool = True
) -> Any:
    """Compile the preprocess for sm_90a; the arguments are the cache key."""
    import cutlass
    import cutlass.cute as cute

    from fm4.cute_kernels.bwd_prepost import FlashMaskBwdPreprocess
    from fm4.cute_kernels.compile_utils import compile_options, fake_env_stream
    from fm4.cute_kernels.compile_utils import fake_tensor as _fake

    dtype = getattr(cutlass, dtype_name)
    b, s_q, s_qp, h = (cute.sym_int() for _ in range(4))
    o, do = (_fake(dtype, (b, s_q, h, head_dim), 8) for _ in range(2))
    lse = _fake(cutlass.Float32, (b, h, s_q), 1)
    dlse = _fake(cutlass.Float32, (b, h, s_q), 1) if has_dlse else None
    lse2, delta = (_fake(cutlass.Float32, (b, h, s_qp), 1) for _ in range(2))
    dq_accum = _fake(cutlass.Float32, (b, h, s_qp, head_dim), 4)
    sem = _fake(cutlass.Int32, (b, h, cute.sym_int()), 1)
    kernel = FlashMaskBwdPreprocess(dtype, head_dim, has_dlse, tile_m, zero_dq_accum)
    return cute.compile(
        kernel,
        o,
        do,
        lse,
        dlse,
        lse2,
        delta,
        dq_accum,
        sem,
        fake_env_stream(),
        options=compile_options("sm_90a"),
    )


def _compile_post(dtype_name: str, head_dim: int, has_tickets: bool = False) -> Any:
    """Compile the postprocess for sm_90a; the arguments are the cache key."""
    import cutlass
    import cutlass.cute as cute

    from fm4.cute_kernels.bwd_prepost import FlashMaskBwdPostprocess
    from fm4.cute_kernels.compile_utils import compile_options, fake_env_stream
    from fm4.cute_kernels.compile_utils import fake_tensor as _fake

    dtype = getattr(cutlass, dtype_name)
    b, s_q, s_qp, h = (cute.sym_int() for _ in range(4))
    dq_accum = _fake(cutlass.Float32, (b, h, s_qp, head_dim), 4)
    dq = _fake(dtype, (b, s_q, h, head_dim), 8)
    tickets = _fake(cutlass.Int32, (b, h, cute.sym_int()), 1) if has_tickets else None
    kernel = FlashMaskBwdPostprocess(dtype, head_dim, has_tickets)
    return cute.compile(
        kernel,
        dq_accum,
        dq,
        tickets,
        cutlass.Float32(1.0),
        fake_env_stream(),
        options=compile_options("sm_90a"),
    )


_compiled_main: dict[tuple, Any] = {}
_compiled_pre: dict[tuple, Any] = {}
_compiled_post: dict[tuple, Any] = {}


def attention_bwd_sm90(
    dout: torch.Tensor,  # (B, Sq, H, D)
    q: torch.Tensor,  # (B, Sq, H, D)
    k: torch.Tensor,  # (B, Sk, Hkv, D)
    v: torch.Tensor,  # (B, Sk, Hkv, D)
    out: torch.Tensor,  # (B, Sq, H, D)
    lse: torch.Tensor,  # (B, H, Sq) fp32, natural log (-inf for rows that see nothing)
    startend_row_indices: torch.Tensor | None = None,  # int32 (B, Hm, Sk, n)
    causal: bool = False,
    softmax_scale: float | None = None,
    dlse: torch.Tensor | None = None,  # (B, H, Sq) fp32
    tile_lists: Any = None,
    deterministic: bool = False,
    kernel_options: dict[str, Any] | None = None,
    max_ctas: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward attention on Hopper: ``(dq, dk, dv)`` shaped like ``(q, k, v)``.

    ``tile_lists`` (``fm4.masks.tiles.TileLists`` with the backward lists) must have been
    built for this mask with ``tile_shape_bwd(D)`` (or the ``tile_m`` / ``tile_n`` of
    ``kernel_options``); it is built here when omitted. Inputs are assumed validated upstream
    (``can_implement`` checks what the kernels need).
    ``kernel_options``: extra ``FlashMaskBwdSm90`` knobs (tuning; part of the compile key).
    ``max_ctas``: the persistent kernel's grid size (default: the SM count; an error for a
    kernel with one CTA per work item); tests use a small one so that each CTA runs many items.
    """
    ok, reason = can_implement(dout, q, k, v, out, startend_row_indices, causal, deterministic)
    if not ok:
        raise ValueError(f"attention_bwd_sm90 cannot run these inputs: {reason}")
    B, Sq, H, D = q.shape
    Sk = k.shape[1]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else float(softmax_scale)
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if B == 0 or H == 0 or Sq == 0 or Sk == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    opts = dict(kernel_options or {})
    persistent = bwd_persistent(opts, max_ctas)
    tile_m, tile_n = tile_shape_bwd(D)
    tile_m, tile_n = opts.pop("tile_m", None) or tile_m, opts.pop("tile_n", None) or tile_n
    sq_pad = (Sq + tile_m - 1) // tile_m * tile_m
    dev = q.device
    lse2 = torch.empty(B, H, sq_pad, dtype=torch.float32, device=dev)
    delta = torch.empty(B, H, sq_pad, dtype=torch.float32, device=dev)
    dq_accum = torch.empty(B, H, sq_pad, D, dtype=torch.float32, device=dev)
    n_bounds = 0
    mask_args: list[torch.Tensor | None] = [None] * 5
    fwd_lists: tuple = (None, None, None, None)
    # One int32 per (b, h, m_block), zeroed by the preprocess: deterministic, the semaphores
    # counting the dQ additions done; otherwise (default dq_lazy_zero) the tickets of Note
    # [dQ lazy zero]: the main kernel, not the preprocess, then zeroes the accumulator.
    from fm4.cute_kernels.bwd_sm90 import dq_lazy_zero_on

    lazy_zero = dq_lazy_zero_on(deterministic, opts.get("dq_lazy_zero"))
    sem = torch.empty(B, H, sq_pad // tile_m, dtype=torch.int32, device=dev)
    if startend_row_indices is not None:
        n_bounds = startend_row_indices.shape[-1]
        if tile_lists is None:
            from fm4.masks.tiles import build_tile_lists

            tile_lists = build_tile_lists(
                startend_row_indices, causal, Sq, Sk, tile_m, tile_n, backward=True
            )
        if (tile_lists.tile_m, tile_lists.tile_n) != (tile_m, tile_n):
            raise ValueError(
                f"tile lists built for tiles {(tile_lists.tile_m, tile_lists.tile_n)}, "
                f"the backward uses {(tile_m, tile_n)}: build them with that tile shape "
                f"(tile_shape_bwd({D}) unless kernel_options set tile_m / tile_n)"
            )
        tile_lists.add_backward()
        if deterministic:
            fwd_lists = (
                tile_lists.fwd_partial_cnt.contiguous(),
                tile_lists.fwd_partial_idx.contiguous(),
                tile_lists.fwd_full_cnt.contiguous(),
                tile_lists.fwd_full_idx.contiguous(),
            )
        mask_args = [
            startend_row_indices.contiguous(),
            tile_lists.bwd_partial_cnt.contiguous(),
            tile_lists.bwd_partial_idx.contiguous(),
            tile_lists.bwd_full_cnt.contiguous(),
            tile_lists.bwd_full_idx.contiguous(),
        ]
    from fm4.cute_kernels.compile_utils import compile_key, get_or_compile, launch_on

    dtype_name = TORCH_TO_CUTLASS_NAMES[q.dtype]
    key_pre = (dtype_name, D, dlse is not None, tile_m, not lazy_zero)
    pre = get_or_compile(
        _compiled_pre, key_pre, lambda: _compile_pre(*key_pre), name="bwd_pre_sm90"
    )
    key = (dtype_name, D, bool(causal), n_bounds, bool(deterministic), tile_m, tile_n)
    main = get_or_compile(
        _compiled_main,
        compile_key(key, opts),
        lambda: _compile_bwd(*key, **opts),
        name="bwd_sm90",
    )
    key_post = (dtype_name, D, lazy_zero)
    post = get_or_compile(
        _compiled_post, key_post, lambda: _compile_post(*key_post), name="bwd_post_sm90"
    )
    lse_c = lse.contiguous()
    dlse_c = None if dlse is None else dlse.to(torch.float32).contiguous()
    launch_on(dev, pre, out, dout, lse_c, dlse_c, lse2, delta, dq_accum, sem)
    counter, grid = None, 0
    if persistent:  # Note [Persistent backward]: one CTA per SM, a zeroed item counter
        from fm4.cute_kernels.fwd_launch import sm_count

        counter = torch.zeros(1, dtype=torch.int32, device=dev)
        # At most one CTA per SM: every CTA runs from the start (deterministic mode relies on
        # it, Note [Persistent backward]).
        grid = sm_count(dev) if max_ctas is None else min(int(max_ctas), sm_count(dev))
    launch_on(
        dev,
        main,
        q,
        k,
        v,
        dout,
        lse2,
        delta,
        dq_accum,
        dk,
        dv,
        scale,
        *mask_args,
        sem if deterministic or lazy_zero else None,
        *fwd_lists,
        counter,
        grid,
    )
    launch_on(dev, post, dq_accum, dq, sem if lazy_zero else None, scale)
    return dq, dk, dv
