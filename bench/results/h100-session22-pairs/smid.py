# ruff: noqa
"""Session 22: which SM each CTA of a (2,1,1) / (1,1,1) cluster launch of 132 CTAs lands on."""

import torch, cutlass, cutlass.cute as cute
from cutlass import Int32
from cutlass.cute.runtime import from_dlpack
import cuda.bindings.driver as cuda


@cute.kernel
def k(m: cute.Tensor):
    bidx, _, _ = cute.arch.block_idx()
    tidx, _, _ = cute.arch.thread_idx()
    if tidx == 0:
        m[bidx] = cute.arch.smid()


@cute.jit
def launch(m: cute.Tensor, cl: cutlass.Constexpr[int], stream: cuda.CUstream):
    k(m).launch(grid=[132, 1, 1], block=[128, 1, 1], cluster=[cl, 1, 1], stream=stream, smem=200000)


for cl in (1, 2):
    t = torch.full((132,), -1, dtype=torch.int32, device="cuda")
    s = cuda.CUstream(torch.cuda.current_stream().cuda_stream)
    launch(from_dlpack(t), cl, s)
    torch.cuda.synchronize()
    ids = t.tolist()
    print(f"cluster {cl}: smid by CTA:", ids)
    if cl == 2:
        pairs = [(ids[2 * i], ids[2 * i + 1]) for i in range(66)]
        same_tpc = sum(a // 2 == b // 2 for a, b in pairs)
        print("pairs", pairs)
        print("pairs on the same TPC (smid // 2):", same_tpc, "of 66")
