"""Shared compile/launch helpers of fm4's small CuTe DSL kernels (tile min/max, tile lists).

* `fake_compact_tensor`: a fake row-major tensor with symbolic int32 sizes and 32-bit strides,
  for ``cute.compile`` without a GPU (every offset is then an int32 product: the wrappers check
  that their tensors stay below 2**31 elements);
* `compile_options`: the DSL options string (TVM FFI on, ``--gpu-arch`` when an arch is given);
* `fake_tensor`: a fake tensor with symbolic 64-bit strides (the attention kernels' operands);
* `fake_env_stream`: the fake stream argument that makes TVM FFI launch on the current torch
  stream;
* `device_arch`: the ``--gpu-arch`` name of a CUDA device (``sm_90a``, ``sm_100a``, ...);
* `launch_on`: call a compiled kernel with its tensors' device current;
* `get_or_compile`: a compile cache lookup keyed on the compile-time configuration plus arch,
  in memory and, opt-in, on disk.

Note [Disk cache]: with ``FM4_CACHE_DIR`` set, a compiled kernel is exported as an object file
(``export_to_c``) under ``$FM4_CACHE_DIR/<fingerprint>/<name>-<key hash>.o`` and a later process
loads it (``cute.runtime.load_module``, ~0.1 s) instead of compiling (seconds for the attention
kernels). The fingerprint hashes fm4's kernel sources and the Python, CuTe DSL and TVM FFI
versions, so an edit or an upgrade never loads a stale kernel. A file that fails to load is
recompiled and replaced. Writes go through a temporary file and ``os.replace``: concurrent
processes may both compile a key, never read a half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import warnings
from collections.abc import Callable, Hashable
from pathlib import Path
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


def fake_tensor(dtype: Any, shape: tuple[Any, ...], divisibility: int) -> Any:
    """A fake tensor for TMA-loaded operands: last stride 1, the others symbolic 64-bit
    multiples of ``divisibility`` elements (16-byte aligned when that makes 16 bytes)."""
    stride = tuple(
        1 if i == len(shape) - 1 else cute.sym_int64(divisibility=divisibility)
        for i in range(len(shape))
    )
    align = 16 if divisibility * dtype.width // 8 >= 16 else 4
    return cute.runtime.make_fake_tensor(dtype, shape, stride=stride, assumed_align=align)


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


def compile_key(key: tuple, knobs: dict[str, Any] | None = None) -> tuple:
    """A compile cache key: the configuration tuple ``key``, plus the tuning ``knobs`` sorted by
    name when there are any (so the default kernel's key does not change with new knobs)."""
    return (*key, tuple(sorted(knobs.items()))) if knobs else key


def check_max_ctas(max_ctas: int | None, persistent: bool, which: str) -> None:
    """A launcher's ``max_ctas`` (the persistent grid size, tests only): positive, and only for
    a persistent kernel; ``which`` ends the error message for one that is not ("kernel only;
    ... drop max_ctas")."""
    if max_ctas is None:
        return
    if not persistent:
        raise ValueError(f"max_ctas={max_ctas} applies to the persistent {which}")
    if max_ctas < 1:
        raise ValueError(f"max_ctas must be >= 1, got {max_ctas}")


def launch_on(device: torch.device, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` with ``device`` current (TVM FFI then takes that device's current stream).

    Skips the device switch, a few microseconds of host time, when ``device`` already is current.
    """
    if device.index is None or device.index == torch.cuda.current_device():
        fn(*args)
    else:
        with torch.cuda.device(device):
            fn(*args)


#: Compiles done in this process (tests check that a warm disk cache compiles nothing).
compile_count = 0


@functools.cache
def _fingerprint() -> str:
    import cutlass

    h = hashlib.sha256()
    h.update(f"py{sys.version_info.major}.{sys.version_info.minor}".encode())
    h.update(f"cutlass={cutlass.__version__}".encode())
    try:
        import tvm_ffi

        h.update(f"tvm_ffi={tvm_ffi.__version__}".encode())
    except ImportError:
        pass
    root = Path(__file__).resolve().parent
    for src in sorted(root.glob("*.py")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()[:16]


def _disk_path(name: str, key: Hashable) -> Path | None:
    root = os.environ.get("FM4_CACHE_DIR")
    if not root:
        return None
    digest = hashlib.sha256(repr((name, key)).encode()).hexdigest()[:24]
    folder = Path(root) / _fingerprint()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{digest}.o"


def _compile(build: Callable[[], Any]) -> Any:
    global compile_count
    compile_count += 1
    return build()


def get_or_compile(
    cache: dict[Any, Any], key: Hashable, build: Callable[[], Any], *, name: str
) -> Any:
    """``cache[key]``, else loaded from the disk cache (Note [Disk cache]), else ``build()``.

    ``name`` names the kernel in the disk cache; ``key`` must hold every compile-time choice.
    """
    fn = cache.get(key)
    if fn is not None:
        return fn
    path = _disk_path(name, key)
    if path is not None and path.exists():
        try:
            fn = cute.runtime.load_module(str(path), enable_tvm_ffi=True)["func"]
        except Exception as e:  # a corrupt or foreign file: recompile and replace it
            warnings.warn(
                f"fm4: cached kernel {path} failed to load ({e}); recompiling", stacklevel=2
            )
    if fn is None:
        fn = _compile(build)
        if path is not None:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            try:
                fn.export_to_c(object_file_path=str(tmp), function_name="func")
                os.replace(tmp, path)
            except Exception as e:
                warnings.warn(f"fm4: could not write {path} ({e})", stacklevel=2)
                tmp.unlink(missing_ok=True)
    cache[key] = fn
    return fn
