"""Shared-memory structs of fm4's kernels, built from an ordered field list.

A kernel lists its fields (name -> ``cute.struct`` member type) in layout order; ``make_struct``
turns the list into the ``cute.struct`` class the kernel allocates. ``aligned_buf`` /
``tile_buf`` are the usual members: an aligned array of ``num`` elements, or one sized for a
(possibly staged) smem layout.
"""

from __future__ import annotations

import cutlass.cute as cute


def aligned_buf(dtype, num: int, align: int):
    """A ``num``-element array of ``dtype`` starting at an ``align``-byte boundary."""
    return cute.struct.Align[cute.struct.MemRange[dtype, num], align]


def tile_buf(dtype, layout, align: int):
    """An ``align``-byte aligned array holding every element of smem ``layout``."""
    return aligned_buf(dtype, cute.cosize(layout), align)


def make_struct(name: str, fields: dict):
    """The ``cute.struct`` with ``fields`` (name -> member type) in their insertion order."""
    return cute.struct(type(name, (), {"__annotations__": dict(fields)}))


__all__ = ["aligned_buf", "make_struct", "tile_buf"]
