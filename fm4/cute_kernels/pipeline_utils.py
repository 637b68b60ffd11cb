"""The TMA-fed mbarrier pipelines of fm4's sm90 kernels (forward and backward alike).

One producer thread issues the TMA loads; the consumer warps wait on the stage's mbarrier and
release it when their GEMMs are done. Creation defers the barrier-init sync to the kernel's own
``mbarrier_init_fence`` + ``sync_threads``.
"""

from __future__ import annotations

import cutlass.cute as cute
import cutlass.pipeline as pipeline


def tma_pipeline(
    barrier_storage,
    num_stages: int,
    tx_count: int,
    num_consumer_threads: int,
    extra_arrivals: int = 0,
) -> pipeline.PipelineTmaAsync:
    """A ``num_stages``-deep pipeline whose stages each receive ``tx_count`` bytes by TMA.

    ``extra_arrivals``: more arrivals each stage's full barrier waits for besides the TMA
    thread's (threads that write some of the stage's smem with ordinary stores).
    """
    return pipeline.PipelineTmaAsync.create(
        barrier_storage=barrier_storage,
        num_stages=num_stages,
        producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, 1 + extra_arrivals),
        consumer_group=pipeline.CooperativeGroup(
            pipeline.Agent.Thread, num_consumer_threads // cute.arch.WARP_SIZE
        ),
        tx_count=tx_count,
        defer_sync=True,
    )


def tma_load(
    pipe: pipeline.PipelineAsync,
    state: pipeline.PipelineState,
    atom: cute.CopyAtom,
    gsrc: cute.Tensor,
    sdst: cute.Tensor,
    block=None,
    staged: bool = True,
) -> None:
    """Wait until stage ``state`` is free, then TMA ``gsrc[None, block]`` (``gsrc`` if ``block``
    is None) into ``sdst[None, state.index]`` (``sdst`` if not ``staged``), completing on the
    stage's mbarrier. Producer thread only; the views are taken after the wait."""
    pipe.producer_acquire(state)
    src = gsrc if block is None else gsrc[None, block]
    dst = sdst[None, state.index] if staged else sdst
    cute.copy(atom, src, dst, tma_bar_ptr=pipe.producer_get_barrier(state))


@cute.jit
def sync_point_after(pipe: pipeline.PipelineAsync, state: pipeline.PipelineState, dep) -> None:
    """An mbarrier arrive on ``pipe``'s empty barrier of ``state`` that never runs (``dep`` is 0
    at run time, unknown to ptxas) but depends on ``dep``'s inputs: ptxas keeps the wgmma waits
    that follow it in the program after those inputs are computed (Note [P V wait] in
    fwd_sm90.py)."""
    if dep != 0:
        cute.arch.mbarrier_arrive(pipe.consumer_get_barrier(state))
