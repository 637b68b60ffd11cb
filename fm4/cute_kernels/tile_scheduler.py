"""Dynamic persistent tile scheduling for fm4's sm90 kernels (Note [Persistent tiles] in
``fwd_sm90.py``).

A persistent kernel launches one CTA per SM. CTA ``c`` starts with tile ``c``; afterwards its
producer warp claims the next tile from a global counter (one atomic add per tile: the counter
holds the number of tiles claimed beyond the first ``grid`` ones, and is zeroed before each
launch) and hands every tile index to the consumer warpgroups through a small smem queue of
``TILE_QUEUE_STAGES`` slots guarded by an mbarrier pipeline. After the last tile the producer
pushes an index past the end, which ends the consumers' loop too.
"""

from __future__ import annotations

import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass import Int32

TILE_QUEUE_STAGES = 2


def tile_queue(barrier_storage, num_consumer_threads: int) -> pipeline.PipelineAsync:
    """The queue's pipeline: the 32 threads of the producer warp push, every consumer thread
    pops. Creation defers the barrier-init sync to the kernel's own fence + ``sync_threads``."""
    return pipeline.PipelineAsync.create(
        barrier_storage=barrier_storage,
        num_stages=TILE_QUEUE_STAGES,
        producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, cute.arch.WARP_SIZE),
        consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, num_consumer_threads),
        defer_sync=True,
    )


@cute.jit
def claim_tile(mCounter: cute.Tensor, grid_size: Int32) -> Int32:
    """The next tile index for this CTA (whole producer warp; one atomic, broadcast)."""
    claimed = Int32(0)
    if cute.arch.lane_idx() == 0:
        claimed = cute.arch.atomic_add(mCounter.iterator, Int32(1))
    return cute.arch.shuffle_sync(claimed, 0) + grid_size


@cute.jit
def push_tile(
    pipe: pipeline.PipelineAsync, state: pipeline.PipelineState, sTile: cute.Tensor, tile: Int32
) -> None:
    """Producer warp: put ``tile`` in the queue slot of ``state`` once it is free."""
    pipe.producer_acquire(state)
    sTile[state.index] = tile
    pipe.producer_commit(state)


@cute.jit
def pop_tile(
    pipe: pipeline.PipelineAsync, state: pipeline.PipelineState, sTile: cute.Tensor
) -> Int32:
    """Consumer thread: the tile index in the slot of ``state`` (waits for it; frees the slot)."""
    pipe.consumer_wait(state)
    tile = sTile[state.index]
    pipe.consumer_release(state)
    return tile


__all__ = ["TILE_QUEUE_STAGES", "claim_tile", "pop_tile", "push_tile", "tile_queue"]
