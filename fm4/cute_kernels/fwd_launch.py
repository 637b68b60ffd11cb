"""Torch-facing launcher of fm4's Hopper forward kernel (``fwd_sm90.FlashMaskFwdSm90``).

Supported: bf16 / fp16, head dim 64, 128 and 256 (q, k, v the same), GQA / MQA, any lengths,
no mask / causal / FlashMask bounds with n in {1, 2, 4}, CUDA tensors on an sm_90 device.
Not supported: other head dims, head_dim_v != head_dim, varlen, backward.

The compile cache is keyed on the compile-time configuration only (dtype, head dim, causal,
number of bounds, tile shape); batch, lengths and head counts are symbolic, so a new length
never recompiles.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

TORCH_TO_CUTLASS_NAMES = {torch.bfloat16: "BFloat16", torch.float16: "Float16"}
SUPPORTED_HEAD_DIMS = (64, 128, 256)
#: Knob sets (``attention_fwd_sm90(kernel_options=...)``) whose code paths differ from the default
#: kernel's in some mode: one CTA per tile, the persistent kernel (the default kernel at D <= 128,
#: `fwd_knobs` giving both the same compile key), and the experimental ones
#: (`FlashMaskFwdSm90`'s ``o_store``, ``tile_overlap``, ``first_guard``, ``qk_desc``,
#: ``pv_wait_after``, ``bound_codes``, ``bound_prefetch``, ``mask_bias``). The GPU tests compare
#: each with one CTA per tile, and ``python -m bench.fwd_perf --warm-cache`` compiles them.
FWD_TEST_KNOBS: dict[str, dict[str, Any]] = {
    "single_tile": {"persistent": False},
    "persistent": {"persistent": True},
    # the persistent kernel of session 6 (before tile_overlap and the per-warpgroup O store)
    "no_overlap_cta": {"persistent": True, "tile_overlap": False, "o_store": "cta"},
    "no_overlap_wg": {"persistent": True, "tile_overlap": False, "o_store": "wg"},
    "overlap_cta": {"persistent": True, "tile_overlap": True, "o_store": "cta"},
    "first_guard": {"persistent": True, "first_guard": True},
    # the persistent kernel's Q K^T descriptors as before session 10 (descriptor views)
    "qk_desc_view": {"persistent": True, "qk_desc": "view"},
    # the P V wait where ptxas puts it (before session 11)
    "pv_wait_free": {"pv_wait_after": 0},
    # partial blocks' mask bits without the tile lists' bound codes (before session 14)
    "no_codes": {"bound_codes": False, "rest_mask": "bits"},
    # partial blocks' bound words loaded one block ahead (bound codes, n = 1, 2; n = 1's
    # default since session 19, with rest_mask "bits") or not; "prefetch" zeroes O per tile
    # (o_zero "fill"): with "pv", its n = 2 kernel spills 232 bytes
    "prefetch": {"bound_prefetch": True, "rest_mask": "bits", "o_zero": "fill"},
    "no_prefetch": {"bound_prefetch": False, "rest_mask": "bits"},
    # partial blocks' masks as the S accumulator's start value (bound codes, n = 1), with and
    # without the bound words loaded a block ahead
    "bias": {"mask_bias": True, "rest_mask": "bits"},
    "bias_pf": {"mask_bias": True, "bound_prefetch": True, "rest_mask": "bits"},
    # the next tile's Q issued after this tile's loads (before session 18, Note [Q ahead])
    "q_behind": {"q_ahead": False},
    # ... Q ahead, but the next tile's first n_block read and the claim waited for as before
    "k_behind": {"k_ahead": False},
    # ... the next tile's first n_block and bound code read by the consumers from the lists,
    # not handed out through the tile queue (before session 19, Note [First block queued])
    "first_unqueued": {"first_queued": False},
    # a static tile stride, which also issues the next tile's Q early
    "claim_static": {"claim": "static"},
    # partial blocks after a tile's first masked from bit words, as the first (n = 1, 2; before
    # session 23, Note [Byte masks])
    "rest_bits": {"rest_mask": "bits"},
    # O zeroed after each tile's epilogue, not overwritten by the tile's first P V (before
    # session 26)
    "o_zero_fill": {"o_zero": "fill"},
}


def tile_shape(head_dim: int) -> tuple[int, int]:
    """(tile_m, tile_n) the kernel uses for this head dim; tile lists must be built with it."""
    from fm4.cute_kernels.fwd_sm90 import TILE_CONFIG_SM90

    tile_m, tile_n, _ = TILE_CONFIG_SM90[head_dim]
    return tile_m, tile_n


def check_sm90_inputs(
    tensors: dict[str, torch.Tensor],
    head_dims: tuple[int, ...],
    kernel: str,
    startend_row_indices: torch.Tensor | None = None,
    causal: bool = False,
) -> tuple[bool, str]:
    """The input rules the sm90 kernels share; ``tensors`` starts with q, k, v (then any other
    tensor of q's dtype and layout rules, e.g. out and dout). Returns (ok, why not)."""
    q, k, v = tensors["q"], tensors["k"], tensors["v"]
    if q.dtype not in TORCH_TO_CUTLASS_NAMES:
        return False, f"dtype {q.dtype} not supported (bf16, fp16)"
    for name, t in tensors.items():
        if t.dtype != q.dtype:
            return False, f"{name} dtype {t.dtype} differs from q's {q.dtype}"
    if any(t.dim() != 4 for t in tensors.values()):
        return False, f"{', '.join(tensors)} must be 4-D (B, S, H, D)"
    d = q.shape[-1]
    if d not in head_dims or k.shape[-1] != d or v.shape[-1] != d:
        return False, (
            f"head dims (q {d}, k {k.shape[-1]}, v {v.shape[-1]}) not supported: "
            f"the sm90 {kernel} takes equal head dims in {head_dims}"
        )
    if k.shape[2] != v.shape[2]:
        return False, f"k has {k.shape[2]} heads and v {v.shape[2]}: they must be equal"
    if q.shape[2] % k.shape[2] != 0:
        return False, f"num heads {q.shape[2]} must be a multiple of kv heads {k.shape[2]}"
    if not all(t.is_cuda for t in tensors.values()):
        return False, "tensors must be on a CUDA device"
    major, _ = torch.cuda.get_device_capability(q.device)
    if major != 9:
        return False, f"needs an sm_90 GPU, got compute capability {major}.x"
    for name, t in tensors.items():
        if t.stride(-1) != 1:
            return False, f"{name} must have a contiguous last dimension"
        if any(s % 8 for s in t.stride()[:-1]) or t.data_ptr() % 16:
            return False, f"{name} must be 16-byte aligned with strides a multiple of 8"
    if startend_row_indices is not None:
        n = startend_row_indices.shape[-1]
        if n not in (1, 2, 4):
            return False, f"startend_row_indices last dimension must be 1, 2 or 4, got {n}"
        if n == 1 and not causal:
            return False, "n == 1 bounds are causal-only: pass causal=True"
        if n == 4 and causal:
            return False, "n == 4 bounds are never causal: pass causal=False"
    return True, ""


def can_implement(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    startend_row_indices: torch.Tensor | None = None,
    causal: bool = False,
) -> tuple[bool, str]:
    """Whether ``attention_fwd_sm90`` can run these inputs; if not, why (for skips and dispatch)."""
    tensors = {"q": q, "k": k, "v": v}
    return check_sm90_inputs(tensors, SUPPORTED_HEAD_DIMS, "kernel", startend_row_indices, causal)


def _compile_fwd(
    dtype_name: str,
    head_dim: int,
    causal: bool,
    n_bounds: int,
    *,
    arch: str | None = "sm_90a",
    **variant: Any,
) -> Any:
    """Compile one configuration; everything data-dependent stays symbolic.

    The compile-time configuration is exactly the positional arguments (the compile cache key);
    ``variant`` (tile shape, stages, ...: `FlashMaskFwdSm90`'s options) is for tuning scripts
    such as ``bench/fwd_perf.py``, and ``arch`` None targets the visible GPU.
    """
    import cutlass
    import cutlass.cute as cute

    from fm4.cute_kernels.compile_utils import compile_options, fake_env_stream
    from fm4.cute_kernels.compile_utils import fake_tensor as _fake
    from fm4.cute_kernels.fwd_sm90 import FlashMaskFwdSm90

    dtype = getattr(cutlass, dtype_name)
    b, s_q, s_k, h, h_kv = (cute.sym_int() for _ in range(5))
    q = _fake(dtype, (b, s_q, h, head_dim), 8)
    k = _fake(dtype, (b, s_k, h_kv, head_dim), 8)
    v = _fake(dtype, (b, s_k, h_kv, head_dim), 8)
    o = _fake(dtype, (b, s_q, h, head_dim), 8)
    lse = _fake(cutlass.Float32, (b, h, s_q), 1)
    mask_args: list[Any] = [None] * 6
    if n_bounds:
        hm, hm_l, m_blocks, n_blocks = (cute.sym_int() for _ in range(4))
        mask_args = [
            _fake(cutlass.Int32, (b, hm, s_k, n_bounds), 1),
            _fake(cutlass.Int32, (b, hm_l, m_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, m_blocks, n_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, m_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, m_blocks, n_blocks), 1),
            _fake(cutlass.Int32, (b, hm_l, m_blocks, n_blocks), 1),  # bound codes
        ]
    kernel = FlashMaskFwdSm90(dtype, head_dim, causal, n_bounds, **variant)
    return cute.compile(
        kernel,
        q,
        k,
        v,
        o,
        lse,
        cutlass.Float32(1.0),
        *mask_args,
        cutlass.Int32(1),  # max_ctas: a run-time value
        _fake(cutlass.Int32, (1,), 1) if kernel.persistent else None,  # tile counter
        fake_env_stream(),
        options=compile_options(arch),
    )


_compiled: dict[tuple, Any] = {}  # compile_utils.compile_key -> kernel


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def persistent_args(
    head_dim: int,
    causal: bool,
    n_bounds: int,
    device: torch.device,
    persistent: bool | None = None,
) -> tuple[int, torch.Tensor | None]:
    """The kernel's last two arguments: the grid size of a persistent kernel (the SM count)
    and its tile counter (zeroed: make new ones for every launch), or (0, None) for one CTA
    per tile.
    ``persistent`` None: the kernel's default (``fwd_sm90.persistent_default``)."""
    if not is_persistent(head_dim, causal, n_bounds, persistent):
        return 0, None
    return sm_count(device), torch.zeros(1, dtype=torch.int32, device=device)


def is_persistent(head_dim: int, causal: bool, n_bounds: int, persistent: bool | None) -> bool:
    """Whether the forward kernel of this configuration is persistent (``persistent``: the
    ``kernel_options`` knob; None: ``fwd_sm90.persistent_default``, which since session 11
    depends on the head dim alone; the mask mode stays in the signature of the launcher's
    helpers, which describe one kernel configuration)."""
    from fm4.cute_kernels.fwd_sm90 import persistent_default

    if persistent is None:
        return persistent_default(head_dim)
    return bool(persistent)


def fwd_knobs(
    head_dim: int, causal: bool, n_bounds: int, knobs: dict[str, Any] | None
) -> dict[str, Any]:
    """``kernel_options`` as the compile cache keys them: ``persistent`` dropped where it is
    this configuration's default (``{"persistent": True}`` on a causal mask is the default
    kernel, not a second compile)."""
    knobs = dict(knobs or {})
    if "persistent" in knobs and knobs["persistent"] == is_persistent(
        head_dim, causal, n_bounds, None
    ):
        del knobs["persistent"]
    return knobs


def check_max_ctas(
    max_ctas: int, head_dim: int, causal: bool, n_bounds: int, knobs: dict[str, Any]
) -> None:
    """``attention_fwd_sm90``'s ``max_ctas``: a positive grid size, for a persistent kernel."""
    from fm4.cute_kernels.compile_utils import check_max_ctas as check

    check(
        max_ctas,
        is_persistent(head_dim, causal, n_bounds, knobs.get("persistent")),
        f"kernel only; head dim {head_dim}, causal={causal}, {n_bounds} bounds with "
        f"kernel_options {knobs} runs one CTA per tile (head dim 256 does by default): "
        "drop max_ctas, or pass kernel_options={'persistent': True} (head dim <= 128)",
    )


def sm_count(device: torch.device) -> int:
    """Number of SMs of a CUDA device: the persistent kernel's grid size (``max_ctas``)."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def fwd_mask_args(startend_row_indices: torch.Tensor | None, tile_lists: Any) -> list[Any]:
    """The kernel's six mask arguments: bounds, the forward lists and each partial entry's
    bound code (Note [Bound codes] in `fm4.masks.tiles`); lists made without codes (e.g.
    `TileLists.from_flags` alone) get every bound ACTIVE (the full element-wise rule). All
    None without bounds."""
    if startend_row_indices is None:
        return [None] * 6
    from fm4.masks.tiles import ALL_ACTIVE

    codes = tile_lists.fwd_partial_code
    if codes is None:
        codes = torch.full_like(tile_lists.fwd_partial_idx, ALL_ACTIVE)
    return [
        startend_row_indices.contiguous(),
        tile_lists.fwd_partial_cnt.contiguous(),
        tile_lists.fwd_partial_idx.contiguous(),
        tile_lists.fwd_full_cnt.contiguous(),
        tile_lists.fwd_full_idx.contiguous(),
        codes.contiguous(),
    ]


def attention_fwd_sm90(
    q: torch.Tensor,  # (B, Sq, H, D)
    k: torch.Tensor,  # (B, Sk, Hkv, D)
    v: torch.Tensor,  # (B, Sk, Hkv, D)
    startend_row_indices: torch.Tensor | None = None,  # int32 (B, Hm, Sk, n)
    causal: bool = False,
    softmax_scale: float | None = None,
    tile_lists: Any = None,
    kernel_options: dict[str, Any] | None = None,
    max_ctas: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward attention on Hopper. Returns out ``(B, Sq, H, D)`` and lse ``(B, H, Sq)`` fp32.

    ``tile_lists`` (``fm4.masks.tiles.TileLists``) must have been built for this mask with
    ``tile_shape(D)``; it is built here when omitted. Inputs are assumed validated upstream.
    ``kernel_options``: `FlashMaskFwdSm90` knobs (tests and tuning scripts; part of the compile
    key), e.g. ``{"tile_overlap": True}``; None: the tuning table's choices. ``max_ctas``: the
    persistent kernel's grid size (default: the SM count); tests use a small one so that each
    CTA runs many tiles.
    """
    ok, reason = can_implement(q, k, v, startend_row_indices, causal)
    if not ok:
        raise ValueError(f"attention_fwd_sm90 cannot run these inputs: {reason}")
    B, Sq, H, D = q.shape
    n_bounds = 0 if startend_row_indices is None else startend_row_indices.shape[-1]
    knobs = fwd_knobs(D, bool(causal), n_bounds, kernel_options)
    if max_ctas is not None:
        check_max_ctas(max_ctas, D, bool(causal), n_bounds, knobs)
    persistent = is_persistent(D, bool(causal), n_bounds, knobs.get("persistent"))
    Sk = k.shape[1]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else float(softmax_scale)
    out = torch.empty_like(q)
    lse = torch.empty(B, H, Sq, dtype=torch.float32, device=q.device)
    if B == 0 or Sq == 0 or H == 0:
        return out, lse
    if Sk == 0:
        out.zero_()
        lse.fill_(-math.inf)
        return out, lse
    mask_args: list[torch.Tensor | None] = [None] * 6
    if startend_row_indices is not None:
        tile_m, tile_n = tile_shape(D)
        if tile_lists is None:
            from fm4.masks.tiles import build_tile_lists

            tile_lists = build_tile_lists(
                startend_row_indices, causal, Sq, Sk, tile_m, tile_n, backward=False
            )
        if (tile_lists.tile_m, tile_lists.tile_n) != (tile_m, tile_n):
            raise ValueError(
                f"tile lists built for tiles {(tile_lists.tile_m, tile_lists.tile_n)}, "
                f"the kernel uses {(tile_m, tile_n)}: build them with tile_shape({D})"
            )
        mask_args = fwd_mask_args(startend_row_indices, tile_lists)
    from fm4.cute_kernels.compile_utils import compile_key, get_or_compile, launch_on

    key = (TORCH_TO_CUTLASS_NAMES[q.dtype], D, bool(causal), n_bounds)
    compiled = get_or_compile(
        _compiled, compile_key(key, knobs), lambda: _compile_fwd(*key, **knobs), name="fwd_sm90"
    )
    extra = persistent_args(D, bool(causal), n_bounds, q.device, persistent)
    if max_ctas is not None:
        extra = (int(max_ctas), extra[1])
    launch_on(q.device, compiled, q, k, v, out, lse, scale, *mask_args, *extra)
    return out, lse
