"""Online softmax for fm4's Hopper attention kernels (fp32, exp2 with the scale folded in).

Supported: the wgmma accumulator layout of sm_90a (``((2, 2, V), MMA_M, MMA_N)`` per thread, four
threads sharing a row); rows that see no key at all (see Note [Masked rows]).
Not supported: score modifiers, learnable sinks, fp8 (no exponent offset).

Note [Masked rows]
    A row whose scores are all -inf so far has row_max == -inf. The exponent is then taken
    against 0 instead of -inf, so exp2(-inf - 0) == 0 and no NaN appears; the rescale factor
    of an earlier all -inf state is exp2(-inf) == 0, which is harmless because its row_sum and
    O are 0. At the end a row_sum of 0 gives O = 0 and lse = -inf.
"""

import math

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T, dsl_user_op

LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Views of the sm_90 wgmma accumulator
# --------------------------------------------------------------------------------------------
def acc_layout_to_mn(acc_layout: cute.Layout) -> cute.Layout:
    """``((2, 2, V), MMA_M, MMA_N)`` -> ``((2, MMA_M), (2, V, MMA_N))``: rows by columns."""
    lay = cute.make_layout(acc_layout.shape)  # column-major coordinates of the fragment
    shape = (
        (lay.shape[0][1], lay.shape[1]),
        (lay.shape[0][0], *lay.shape[0][2:], lay.shape[2]),
    )
    stride = (
        (lay.stride[0][1], lay.stride[1]),
        (lay.stride[0][0], *lay.stride[0][2:], lay.stride[2]),
    )
    return cute.composition(acc_layout, cute.make_layout(shape, stride=stride))


def acc_to_mn(acc: cute.Tensor) -> cute.Tensor:
    """Row/column view of an accumulator fragment (rows: 2 per 64-row atom, see module doc)."""
    return cute.make_tensor(acc.iterator, acc_layout_to_mn(acc.layout))


def acc_layout_to_frg_a(acc_layout: cute.Layout) -> cute.Layout:
    """``((2, 2, N / 8), MMA_M, MMA_N)`` -> ``((2, 2, 2), MMA_M, (N / 16, MMA_N))``.

    The accumulator of S = Q K^T, reread as the register A operand of O += P V (16-bit P).
    """
    div = 2 if cutlass.const_expr(acc_layout.shape[0][2] % 2 == 0) else 1
    lay = cute.logical_divide(acc_layout, ((None, None, div), None, None))
    return cute.make_layout(
        (
            (lay.shape[0][0], lay.shape[0][1], lay.shape[0][2][0]),
            lay.shape[1],
            (lay.shape[0][2][1], lay.shape[2]),
        ),
        stride=(
            (lay.stride[0][0], lay.stride[0][1], lay.stride[0][2][0]),
            lay.stride[1],
            (lay.stride[0][2][1], lay.stride[2]),
        ),
    )


def acc_to_frg_a(acc: cute.Tensor) -> cute.Tensor:
    """Accumulator viewed as a wgmma register A operand (same registers, no copy)."""
    return cute.make_tensor(acc.iterator, acc_layout_to_frg_a(acc.layout))


@dsl_user_op
def _cvt_pack_16(a: Float32, b: Float32, bf16: bool, *, loc=None, ip=None) -> Int32:
    """Two fp32 -> one packed bf16x2 / f16x2 register (``cvt.rn``; ``a`` in the low half)."""
    ty = "bf16x2" if bf16 else "f16x2"
    return Int32(
        llvm.inline_asm(
            T.i32(),
            [Float32(a).ir_value(loc=loc, ip=ip), Float32(b).ir_value(loc=loc, ip=ip)],
            f"cvt.rn.{ty}.f32 $0, $2, $1;",
            "=r,f,f",
            has_side_effects=False,
            is_align_stack=False,
            asm_dialect=llvm.AsmDialect.AD_ATT,
        )
    )


@cute.jit
def convert_to_16bit(src: cute.Tensor, dst: cute.Tensor) -> None:
    """fp32 fragment -> bf16 / fp16 fragment of the same layout, two elements per instruction.

    Note [Packed conversion]: written as inline asm, the conversion stays where the kernel
    puts it. With ``TensorSSA.to`` LLVM sank the identical conversions at the end of the first
    block and of the loop body into the loop header, which kept the fp32 P alive across the
    loop's back edge and let ptxas move the P V wait ahead of every exp2 of the softmax.
    """
    bf16 = cutlass.const_expr(dst.element_type is cutlass.BFloat16)
    dst_i32 = cute.recast_tensor(dst, Int32)
    for i in cutlass.range_constexpr(cute.size(dst_i32)):
        dst_i32[i] = _cvt_pack_16(src[2 * i], src[2 * i + 1], bf16)


@cute.jit
def _row_max(acc_mn: cute.Tensor, r: cutlass.Constexpr[int]) -> Float32:
    """Max over one row of this thread's fragment, as a 4-way tree (short dependency chains)."""
    n = cute.size(acc_mn, mode=[1])
    assert n % 4 == 0
    m = [acc_mn[r, 0], acc_mn[r, 1], acc_mn[r, 2], acc_mn[r, 3]]
    for c in cutlass.range_constexpr(4, n, 4):
        for j in cutlass.range_constexpr(4):
            m[j] = cute.arch.fmax(m[j], acc_mn[r, c + j])
    return cute.arch.fmax(cute.arch.fmax(m[0], m[1]), cute.arch.fmax(m[2], m[3]))


# --------------------------------------------------------------------------------------------
# Online softmax
# --------------------------------------------------------------------------------------------
class OnlineSoftmax:
    """Running row max and row sum of one thread's rows of S.

    ``row_max`` holds the unscaled maximum of the raw scores; ``row_sum`` holds this thread's
    partial sum of ``exp2(s * scale_log2 - row_max * scale_log2)`` (the four threads of a row
    are added up once, in :meth:`finalize`).
    """

    def __init__(
        self,
        scale_log2: Float32,
        num_rows: int,
        row_max: cute.Tensor | None = None,
        row_sum: cute.Tensor | None = None,
    ):
        self.scale_log2 = scale_log2
        self.num_rows = num_rows
        self.row_max = cute.make_rmem_tensor(num_rows, Float32) if row_max is None else row_max
        self.row_sum = cute.make_rmem_tensor(num_rows, Float32) if row_sum is None else row_sum

    # The DSL carries the object through dynamic control flow as its three run-time values.
    def __extract_mlir_values__(self) -> list:
        self._n_values = []
        values = []
        for obj in (self.scale_log2, self.row_max, self.row_sum):
            obj_values = cutlass.extract_mlir_values(obj)
            self._n_values.append(len(obj_values))
            values += obj_values
        return values

    def __new_from_mlir_values__(self, values: list) -> "OnlineSoftmax":
        objs = []
        pos = 0
        for obj, n in zip(
            (self.scale_log2, self.row_max, self.row_sum), self._n_values, strict=True
        ):
            objs.append(cutlass.new_from_mlir_values(obj, values[pos : pos + n]))
            pos += n
        return OnlineSoftmax(objs[0], self.num_rows, objs[1], objs[2])

    @cute.jit
    def reset(self) -> None:
        self.row_max.fill(-Float32.inf)
        self.row_sum.fill(0.0)

    @cute.jit
    def step(self, acc_S: cute.Tensor, is_first: cutlass.Constexpr[bool]) -> cute.Tensor:
        """Turn the scores of one n_block into probabilities (in place).

        acc_S: the wgmma accumulator of S for this thread. Returns the factor (one per row)
        by which the running O must be multiplied before P V of this block is added.
        """
        acc_mn = acc_to_mn(acc_S)
        row_scale = cute.make_rmem_tensor(self.num_rows, Float32)
        for r in cutlass.range_constexpr(self.num_rows):
            row = acc_mn[r, None].load()
            mx = _row_max(acc_mn, r)
            if cutlass.const_expr(not is_first):
                mx = cute.arch.fmax(mx, self.row_max[r])
            mx = cute.arch.warp_reduction_max(mx, threads_in_group=4)
            prev = self.row_max[r]
            self.row_max[r] = mx
            mx_safe = Float32(0.0) if mx == -Float32.inf else mx  # Note [Masked rows]
            mx_scaled = mx_safe * self.scale_log2
            p = cute.math.exp2(row * self.scale_log2 - mx_scaled, fastmath=True)
            if cutlass.const_expr(is_first):
                row_scale[r] = 1.0
                self.row_sum[r] = p.reduce(cute.ReductionOp.ADD, Float32(0.0), 0)
            else:
                scale = cute.math.exp2((prev - mx_safe) * self.scale_log2, fastmath=True)
                row_scale[r] = scale
                self.row_sum[r] = p.reduce(cute.ReductionOp.ADD, self.row_sum[r] * scale, 0)
            acc_mn[r, None].store(p)
        return row_scale

    @cute.jit
    def finalize(self) -> cute.Tensor:
        """Return 1 / row_sum per row and leave the natural-log LSE in ``row_sum``.

        Rows with no visible key get factor 1 (O is 0 there anyway) and LSE -inf.
        """
        row_scale = cute.make_rmem_tensor(self.num_rows, Float32)
        for r in cutlass.range_constexpr(self.num_rows):
            s = self.row_sum[r]
            s = s + cute.arch.shuffle_sync_bfly(s, offset=1)
            s = s + cute.arch.shuffle_sync_bfly(s, offset=2)
            empty = s == 0.0 or s != s
            row_scale[r] = cute.arch.rcp_approx(Float32(1.0) if empty else s)
            lse = (self.row_max[r] * self.scale_log2 + cute.math.log2(s, fastmath=True)) * LN_2
            self.row_sum[r] = -Float32.inf if empty else lse
        return row_scale

    @cute.jit
    def rescale_o(self, acc_O: cute.Tensor, row_scale: cute.Tensor) -> None:
        """Multiply each row of the O accumulator by ``row_scale``."""
        acc_mn = acc_to_mn(acc_O)
        for r in cutlass.range_constexpr(self.num_rows):
            acc_mn[r, None].store(acc_mn[r, None].load() * row_scale[r])
