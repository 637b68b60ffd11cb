"""Dynamic persistent tile scheduling for fm4's sm90 kernels (Note [Persistent tiles] in
``fwd_sm90.py``).

A persistent kernel launches one CTA per SM. CTA ``c`` starts with tile ``c``; afterwards its
producer warp claims the next tile from a global counter (one atomic add per tile: the counter
holds the number of tiles claimed beyond the first ``grid`` ones, and is zeroed before each
launch) and hands every tile index, with the words the kernel derives from it (``TILE_INFO_WORDS
- 1`` of them, or more where a kernel widens its slots: the forward's ``first_queued`` adds two),
to the consumer warpgroups through a small smem queue of ``TILE_QUEUE_STAGES`` slots guarded by
an mbarrier pipeline. After the last tile the producer pushes an index past the end,
which ends the consumers' loop too.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
from cutlass import Int32

TILE_QUEUE_STAGES = 2
#: Int32 words per queue slot: the tile index and what the kernel derives from it once, in the
#: producer (for the forward: m_block, head, batch, mask head, n_partial, n_total). A kernel may
#: use wider slots (``FlashMaskFwdSm90.tile_words``).
TILE_INFO_WORDS = 7


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
    return claim_result(claim_issue(mCounter), grid_size)


@cute.jit
def claim_issue(mCounter: cute.Tensor) -> Int32:
    """The counter's atomic increment, issued by lane 0 (other lanes: 0); its result is waited
    for where :func:`claim_result` uses it."""
    claimed = Int32(0)
    if cute.arch.lane_idx() == 0:
        claimed = cute.arch.atomic_add(mCounter.iterator, Int32(1))
    return claimed


@cute.jit
def claim_result(claimed: Int32, grid_size: Int32) -> Int32:
    """The tile claimed by :func:`claim_issue` (whole producer warp; broadcast from lane 0)."""
    return cute.arch.shuffle_sync(claimed, 0) + grid_size


@cute.jit
def push_tile(
    pipe: pipeline.PipelineAsync, state: pipeline.PipelineState, sTile: cute.Tensor, words: tuple
) -> None:
    """Producer warp: put ``words`` (the tile index first, then what the kernel hands out with
    it; ``sTile`` is ``(words per slot, TILE_QUEUE_STAGES)``) in the queue slot of ``state``
    once it is free."""
    pipe.producer_acquire(state)
    for k in cutlass.range_constexpr(len(words)):
        sTile[k, state.index] = words[k]
    pipe.producer_commit(state)


@cute.jit
def pop_tile(
    pipe: pipeline.PipelineAsync,
    state: pipeline.PipelineState,
    sTile: cute.Tensor,
    num_words: cutlass.Constexpr[int],
) -> list:
    """Consumer thread: the ``num_words`` words in the slot of ``state`` (waits for them; frees
    the slot); word 0 is the tile index."""
    pipe.consumer_wait(state)
    words = [sTile[k, state.index] for k in range(num_words)]
    pipe.consumer_release(state)
    return words


__all__ = [
    "TILE_INFO_WORDS",
    "TILE_QUEUE_STAGES",
    "claim_issue",
    "claim_result",
    "claim_tile",
    "pop_tile",
    "push_tile",
    "tile_queue",
]
