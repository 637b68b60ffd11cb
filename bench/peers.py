"""One adapter per implementation, all called on the same inputs in one process.

Each adapter says whether it can run at all (`Impl.available`: imports, device), whether it
applies to a case (`Impl.applies`: e.g. FA4 dense only for the full and causal masks), and
builds the forward call (`Impl.prepare`), which returns the output as ``(B, Sq, H, Dv)``.

Layouts: q ``(B, S, H, D)``, k/v ``(B, S, Hkv, D)`` (FA4's and fm4's); FlexAttention and SDPA get
``transpose(1, 2)`` views.

The peers that need block-sparse metadata (FA4 mask_mod, FlexAttention) share one BlockMask per
case, built by ``torch.compile(create_block_mask)`` at 128x128 with a FlexAttention mask_mod
reading the bounds (`flex_column_mask_mod`); its creation is timed on its own and
reported as the block-mask column, not inside the attention time. fm4's time, by contrast,
includes building its tile lists from ``startend_row_indices`` inside the call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from bench.suite import DENSE_MASKS, Case
from bench.timing import first_call_s, time_cuda

BLOCK = 128


@dataclass
class Inputs:
    """One case's tensors (shared by every implementation) and its mask."""

    case: Case
    q: torch.Tensor  # (B, S, H, D), requires grad
    k: torch.Tensor  # (B, S, Hkv, D)
    v: torch.Tensor
    dout: torch.Tensor  # (B, S, H, D)
    mask: object  # fm4.FlashMask
    shared: dict = field(default_factory=dict)  # per-case state shared by peers (BlockMask)

    def zero_grad(self) -> None:
        for t in (self.q, self.k, self.v):
            t.grad = None


def make_inputs(case: Case, device: torch.device, *, dtype=torch.bfloat16) -> Inputs:
    """Random inputs (not zeros) and the registry's mask for ``case`` (seed = split index)."""
    from fm4.masks.registry import make_mask

    gen = torch.Generator(device=device).manual_seed(1234 + case.seed)
    b, s, h, hk, d = case.batch, case.seqlen, case.heads, case.kv_heads, case.head_dim

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=dtype)

    q = rnd(b, s, h, d).requires_grad_()
    k = rnd(b, s, hk, d).requires_grad_()
    v = rnd(b, s, hk, d).requires_grad_()
    dout = rnd(b, s, h, d)
    mask = make_mask(case.mask, s, batch=b, num_heads=h, device=device, seed=case.seed)
    return Inputs(case, q, k, v, dout, mask)


# --------------------------------------------------------------------------- block masks
@dataclass
class SharedBlockMask:
    """The case's FlexAttention BlockMask and how long it took to build."""

    block_mask: object
    first_s: float  # first call, including torch.compile
    ms: float  # median of later calls


_COMPILED: dict[str, Callable] = {}


def _compiled(name: str, fn: Callable, **kw) -> Callable:
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, **kw)
    return _COMPILED[name]


def _configure_dynamo() -> None:
    """Many masks and lengths in one process: raise dynamo's recompile limits."""
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.cache_size_limit = max(getattr(cfg, "cache_size_limit", 8), 256)
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 4096)


def flex_bounds(inp: Inputs) -> torch.Tensor | None:
    """The bounds as FlexAttention reads them: mask heads 1 or H (repeated when 1 < Hm < H)."""
    sri = inp.mask.startend_row_indices
    h = inp.case.heads
    if sri is not None and sri.shape[1] not in (1, h):
        sri = sri.repeat_interleave(h // sri.shape[1], dim=1)
    return sri


def flex_column_mask_mod(sri: torch.Tensor | None, causal: bool, seqlen_q: int, seqlen_k: int):
    """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` (True = attend) reading column bounds.

    Each bound is its own contiguous tensor, ``[B, Sk]`` (one mask head) or ``[B, H, Sk]``, and
    indexed with tensor indices only, so that both the Triton and the FLASH (CuTe DSL) backends
    can lower it. Bounds above Sq need no clamping: rows are below Sq.
    """
    off = seqlen_k - seqlen_q
    n = 0 if sri is None else sri.shape[-1]
    if n == 0:
        if not causal:
            raise ValueError("no bounds and not causal: use no BlockMask")

        def causal_only(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx + off

        return causal_only
    per_head = sri.shape[1] != 1
    cols = [sri[..., c] if per_head else sri[:, 0, :, c] for c in range(n)]
    a0, a1, a2, a3 = [c.contiguous() for c in cols] + [None] * (4 - n)

    def bound(t, b, h, kv_idx):
        return t[b, h, kv_idx] if per_head else t[b, kv_idx]

    def mask_mod(b, h, q_idx, kv_idx):
        lts = bound(a0, b, h, kv_idx)
        if n == 1:
            vis = q_idx < lts
        elif n == 2 and causal:
            vis = (q_idx < lts) | (q_idx >= bound(a1, b, h, kv_idx))
        elif n == 2:
            vis = (q_idx < lts) & (q_idx >= bound(a1, b, h, kv_idx))
        else:
            lower = (q_idx < lts) | (q_idx >= bound(a1, b, h, kv_idx))
            upper = (q_idx < bound(a2, b, h, kv_idx)) | (q_idx >= bound(a3, b, h, kv_idx))
            vis = lower & upper
        return vis & (kv_idx <= q_idx + off) if causal else vis

    return mask_mod


def shared_block_mask(inp: Inputs, *, source: str = "create_block_mask") -> SharedBlockMask:
    """Build (once per case) the BlockMask at 128x128 that FA4 mask_mod and FlexAttention use."""
    if "block_mask" in inp.shared:
        return inp.shared["block_mask"]
    from torch.nn.attention.flex_attention import create_block_mask

    c = inp.case
    sri = flex_bounds(inp)
    if source == "fm4":

        def build():
            return inp.mask.to_block_mask(num_heads=c.heads, block_size=BLOCK)

    else:
        _configure_dynamo()
        cbm = _compiled("create_block_mask", create_block_mask)
        mm = flex_column_mask_mod(sri, inp.mask.causal, c.seqlen, c.seqlen)
        hm = None if sri is None or sri.shape[1] == 1 else sri.shape[1]
        bm_b = None if sri is None else sri.shape[0]

        def build():
            return cbm(mm, bm_b, hm, c.seqlen, c.seqlen, device=inp.q.device, BLOCK_SIZE=BLOCK)

    holder = {}
    first = first_call_s(lambda: holder.setdefault("bm", build()))
    t = time_cuda(build, warmup=0, min_reps=3, max_reps=5, target_ms=50.0)
    res = SharedBlockMask(holder["bm"], first, t.median_ms)
    inp.shared["block_mask"] = res
    return res


def fa4_block_sparse(bm) -> tuple[object, object]:
    """FA4's forward and backward ``BlockSparseTensorsTorch`` from a FlexAttention BlockMask.

    Forward: per m_block the n_blocks (``kv_*``); backward: per n_block the m_blocks (``q_*``).
    """
    from flash_attn.cute.block_sparsity import BlockSparseTensorsTorch

    size = (BLOCK, BLOCK)
    fwd = BlockSparseTensorsTorch(
        mask_block_cnt=bm.kv_num_blocks,
        mask_block_idx=bm.kv_indices,
        full_block_cnt=bm.full_kv_num_blocks,
        full_block_idx=bm.full_kv_indices,
        block_size=size,
    )
    bwd = BlockSparseTensorsTorch(
        mask_block_cnt=bm.q_num_blocks,
        mask_block_idx=bm.q_indices,
        full_block_cnt=bm.full_q_num_blocks,
        full_block_idx=bm.full_q_indices,
        block_size=size,
    )
    return fwd, bwd


# --------------------------------------------------------------------------- adapters
class Impl:
    """An implementation under test."""

    name = "impl"
    label = "impl"
    uses_block_mask = False
    note = ""

    def __init__(self, device: torch.device, *, block_mask_source: str = "create_block_mask"):
        self.device = device
        self.block_mask_source = block_mask_source
        self._avail: tuple[bool, str] | None = None

    def available(self) -> tuple[bool, str]:
        """(ok, reason): can it run in this process at all (cached)."""
        if self._avail is None:
            try:
                self._avail = self._available()
            except Exception as e:  # an import that fails in an unexpected way
                self._avail = (False, f"{type(e).__name__}: {first_line(e)}")
        return self._avail

    def _available(self) -> tuple[bool, str]:
        return True, ""

    def applies(self, case: Case) -> tuple[bool, str]:
        """(ok, reason): does it run this case."""
        return True, ""

    def supports_direction(self, direction: str) -> tuple[bool, str]:
        """(ok, reason): does it have its own kernel for ``direction`` ('fwd', 'bwd', 'fwd+bwd')."""
        return True, ""

    def prepare(self, inp: Inputs) -> Callable[[], torch.Tensor]:
        """The forward call for ``inp``, returning the output ``(B, S, H, Dv)``."""
        raise NotImplementedError


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, shortened."""
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _has_module(name: str) -> tuple[bool, str]:
    try:
        importlib.import_module(name)
    except Exception as e:
        return False, f"cannot import {name} ({type(e).__name__}: {first_line(e)})"
    return True, ""


def _sm90(device: torch.device) -> tuple[bool, str]:
    if device.type != "cuda":
        return False, "needs a CUDA GPU"
    cap = torch.cuda.get_device_capability(device)
    if cap[0] < 9:
        return False, f"needs sm_90 or newer, this GPU is sm_{cap[0]}{cap[1]}"
    return True, ""


class Fm4(Impl):
    """fm4.attention(q, k, v, mask): tile lists built from the bounds inside the call (timed)."""

    name = "fm4"
    label = "fm4"
    note = "time includes building the tile lists from startend_row_indices"

    def _available(self):
        from fm4.backends import kernel_status

        return kernel_status(self.device)

    def supports_direction(self, direction):
        from fm4.backends import kernel_status

        if direction == "fwd":
            return True, ""
        return kernel_status(self.device, "bwd")

    def prepare(self, inp):
        import fm4

        return lambda: fm4.attention(inp.q, inp.k, inp.v, inp.mask)


class Fa4MaskMod(Impl):
    """FA4 with a CuTe column-bound mask_mod (bounds in aux_tensors) and block-sparse tensors."""

    name = "fa4_mask_mod"
    label = "FA4 mask_mod"
    uses_block_mask = True

    def _available(self):
        ok, why = _sm90(self.device)
        if not ok:
            return ok, why
        return _has_module("flash_attn.cute")

    def applies(self, case):
        if case.mask == "full":
            return False, "no mask: FA4 dense is the baseline for full"
        return True, ""

    def prepare(self, inp):
        from flash_attn.cute import flash_attn_func

        from bench.fa4_masks import column_bound_mask_mod

        m = inp.mask
        sri = m.startend_row_indices
        n = 0 if sri is None else sri.shape[-1]
        per_head = sri is not None and sri.shape[1] != 1
        if sri is not None and per_head and sri.shape[1] != inp.case.heads:
            sri = sri.repeat_interleave(inp.case.heads // sri.shape[1], dim=1)
        mask_mod = column_bound_mask_mod(m.causal, n, per_head, m.seqlen_k - m.seqlen_q)
        bm = shared_block_mask(inp, source=self.block_mask_source).block_mask
        fwd, bwd = fa4_block_sparse(bm)
        aux = None if sri is None else [sri.contiguous()]

        def run():
            res = flash_attn_func(
                inp.q,
                inp.k,
                inp.v,
                mask_mod=mask_mod,
                aux_tensors=aux,
                block_sparse_tensors=fwd,
                block_sparse_tensors_bwd=bwd,
            )
            return res[0] if isinstance(res, tuple) else res

        return run


class Fa4Dense(Impl):
    """FA4's dense kernel, ``flash_attn_func(q, k, v, causal=...)`` (full and causal only)."""

    name = "fa4_dense"
    label = "FA4 dense"

    def _available(self):
        ok, why = _sm90(self.device)
        if not ok:
            return ok, why
        return _has_module("flash_attn.cute")

    def applies(self, case):
        if case.mask not in DENSE_MASKS:
            return False, "dense kernel: full and causal only"
        return True, ""

    def prepare(self, inp):
        from flash_attn.cute import flash_attn_func

        causal = inp.mask.causal

        def run():
            res = flash_attn_func(inp.q, inp.k, inp.v, causal=causal)
            return res[0] if isinstance(res, tuple) else res

        return run


class Sdpa(Impl):
    """torch's scaled_dot_product_attention (its own backend choice; full and causal only)."""

    name = "sdpa"
    label = "SDPA"

    def _available(self):
        return (True, "") if self.device.type == "cuda" else (False, "needs a CUDA GPU")

    def applies(self, case):
        if case.mask not in DENSE_MASKS:
            return False, "dense kernel: full and causal only"
        return True, ""

    def prepare(self, inp):
        import torch.nn.functional as F

        causal = inp.mask.causal
        gqa = inp.case.kv_heads != inp.case.heads
        qt, kt, vt = (t.transpose(1, 2) for t in (inp.q, inp.k, inp.v))

        def run():
            kw = {"enable_gqa": True} if gqa else {}
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, **kw).transpose(
                1, 2
            )

        return run


class Flex(Impl):
    """``torch.compile(flex_attention)`` with the case's BlockMask (Triton backend)."""

    name = "flex"
    label = "FlexAttention"
    uses_block_mask = True
    kernel_options: dict | None = None
    compile_kw: dict = {}  # noqa: RUF012

    def _available(self):
        if self.device.type != "cuda":
            return False, "needs a CUDA GPU"
        return _has_module("torch.nn.attention.flex_attention")

    def applies(self, case):
        if case.mask == "full":
            return False, "no mask: the dense peers time full"
        return True, ""

    def prepare(self, inp):
        from torch.nn.attention.flex_attention import flex_attention

        _configure_dynamo()
        fa = _compiled(self.name, flex_attention, **self.compile_kw)
        bm = shared_block_mask(inp, source=self.block_mask_source).block_mask
        gqa = inp.case.kv_heads != inp.case.heads
        qt, kt, vt = (t.transpose(1, 2) for t in (inp.q, inp.k, inp.v))
        kw = {"enable_gqa": True} if gqa else {}
        if self.kernel_options:
            kw["kernel_options"] = dict(self.kernel_options)

        def run():
            return fa(qt, kt, vt, block_mask=bm, **kw).transpose(1, 2)

        return run


class FlexFlash(Flex):
    """FlexAttention, ``kernel_options={"BACKEND": "FLASH"}`` (FA4 CuTe kernels via inductor)."""

    name = "flex_flash"
    label = "Flex (FLASH)"
    kernel_options = {"BACKEND": "FLASH"}  # noqa: RUF012
    # The FLASH backend cannot inline symbolic sizes into its CuTe template: no dynamic shapes.
    compile_kw = {"dynamic": False}  # noqa: RUF012

    def _available(self):
        ok, why = super()._available()
        if not ok:
            return ok, why
        import typing

        from torch.nn.attention import flex_attention as fx

        backends = typing.get_args(getattr(fx, "_Backend", None)) if hasattr(fx, "_Backend") else ()
        if "FLASH" not in backends:
            return False, f"torch {torch.__version__} has no FlexAttention BACKEND='FLASH'"
        return _has_module("flash_attn.cute")


IMPLS: dict[str, type[Impl]] = {
    cls.name: cls for cls in (Fm4, Fa4MaskMod, Flex, FlexFlash, Fa4Dense, Sdpa)
}
#: The baseline every speedup is measured against, and the one used when it does not apply.
BASELINE, DENSE_BASELINE = "fa4_mask_mod", "fa4_dense"


def make_impls(names: list[str], device: torch.device, **kw) -> list[Impl]:
    """Adapters for ``names`` (raises ValueError naming an unknown one)."""
    out = []
    for n in names:
        if n not in IMPLS:
            raise ValueError(f"unknown implementation {n!r}; choose from {', '.join(IMPLS)}")
        out.append(IMPLS[n](device, **kw))
    return out
