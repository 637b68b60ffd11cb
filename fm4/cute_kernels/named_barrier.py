"""Named hardware barriers (bar.sync / bar.arrive ids) used by fm4's Hopper kernels.

Barrier 0 is reserved for ``__syncthreads``; every id here is at least 1.
"""

import enum


class NamedBarrierFwd(enum.IntEnum):
    """Barrier ids of the forward kernel (``fwd_sm90.py``)."""

    # All consumer threads (plus nothing else): O staged in smem, ready for the TMA store.
    Epilogue = 1
    # Ping-pong between the two consumer warpgroups: WG k waits on WarpSchedulerWG{k} before
    # issuing its GEMMs and, after issuing them, arrives on the other warpgroup's barrier.
    WarpSchedulerWG1 = 2
    WarpSchedulerWG2 = 3
    # o_store="wg": one warpgroup's O staged in its half of sO (128 threads each).
    EpilogueWG1 = 4
    EpilogueWG2 = 5
    # rest_mask="bytes": a tile's first byte-mask bytes stored, ready to read (128 threads
    # each; Note [Byte masks]).
    MaskWG1 = 6
    MaskWG2 = 7
