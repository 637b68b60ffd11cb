"""Shared compile/launch helpers of fm4's small CuTe DSL kernels (tile min/max, tile lists).

* `fake_compact_tensor`: a fake row-major tensor with symbolic int32 sizes and 32-bit strides,
  for ``cute.compile`` without a GPU (every offset is then an int32 product: the wrappers check
  that their tensors stay below 2**31 elements);
* `compile_options`: the DSL options string (TVM FFI on, ``--gpu-arch`` when an arch is given);
* `fake_env_stream`: the fake stream argument that makes TVM FFI launch on the current torch
  stream;
* `device_arch`: the ``--gpu-arch`` name of a CUDA device (``sm_90a``, ``sm_100a``, ...);
* `launch_on`: call a compiled kernel with its tensors' device current;
* `get_or_compile`: a compile cache lookup keyed on the compile-time configuration plus arch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any

import cutlass.cute as cute
import torch


def fake_compact_tensor(dtype: Any, shape: tuple[Any, ...], align: int = 4) -> Any:
    """A fake compact (row-major) tensor: ``shape`` mixes ints and ``cute.sym_int32()`` values.

    ``align``: the byte alignment the kernel may assume of the base pointer (vector loads).
    """
    rank = len(shape)
    return cute.runtime.make_fake_compact_tensor(
        dtype,
        shape,
        stride_order=tuple(range(rank - 1, -1, -1)),
        assumed_align=align,
        use_32bit_stride=True,
    )


def fake_env_stream() -> Any:
    """The stream argument of a compiled kernel: TVM FFI passes the current torch stream."""
    return cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)


def compile_options(arch: str | None = None, options: str = "") -> str:
    """DSL options: ``--enable-tvm-ffi``, the extra ``options``, and ``--gpu-arch`` if given.

    ``arch`` None leaves the target to the DSL: ``CUTE_DSL_ARCH`` as it was when cutlass was
    imported, else the visible GPU, else sm_100a.
    """
    opts = f"--enable-tvm-ffi {options}".strip()
    if arch is not None:
        opts += f" --gpu-arch {arch}"
    return opts


@functools.cache
def device_arch(device: torch.device) -> str:
    """``--gpu-arch`` name of a CUDA device (cached): ``sm_90a``, ``sm_100a``, else ``sm_XY``."""
    major, minor = torch.cuda.get_device_capability(device)
    suffix = "a" if major in (9, 10) else ""
    return f"sm_{major}{minor}{suffix}"


def launch_on(device: torch.device, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` with ``device`` current (TVM FFI then takes that device's current stream).

    Skips the device switch, a few microseconds of host time, when ``device`` already is current.
    """
    if device.index is None or device.index == torch.cuda.current_device():
        fn(*args)
    else:
        with torch.cuda.device(device):
            fn(*args)


def get_or_compile(cache: dict[Any, Any], key: Hashable, build: Callable[[], Any]) -> Any:
    """``cache[key]``, compiling it with ``build()`` on first use."""
    fn = cache.get(key)
    if fn is None:
        fn = cache[key] = build()
    return fn
