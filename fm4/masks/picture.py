"""Pictures of a mask: a text grid and a PNG (no plotting library needed)."""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

import torch

from fm4.masks.tiles import PARTIAL, SKIP, classify_tiles_exact

if TYPE_CHECKING:
    from fm4.masks.flashmask import FlashMask


def _one(mask: FlashMask, batch: int, head: int) -> torch.Tensor | None:
    sri = mask.startend_row_indices
    if sri is None:
        return None
    if not (0 <= batch < sri.shape[0] and 0 <= head < sri.shape[1]):
        raise IndexError(
            f"(batch={batch}, head={head}) is outside the mask's {tuple(sri.shape[:2])}"
        )
    return sri[batch : batch + 1, head : head + 1]


def text_picture(
    mask: FlashMask, sq: int, sk: int, *, batch: int = 0, head: int = 0, max_size: int = 48
) -> str:
    """Rows of characters, one per block of rows: '█' all visible, '░' partly, ' ' all masked.

    The block size is chosen so the picture is at most ``max_size`` characters each way.
    """
    if sq == 0 or sk == 0:
        return f"(empty mask: {sq} x {sk})"
    bm = max(1, -(-sq // max_size))
    bn = max(1, -(-sk // max_size))
    flags = classify_tiles_exact(_one(mask, batch, head), mask.causal, sq, sk, bm, bn)[0, 0]
    chars = {SKIP: " ", PARTIAL: "░"}
    lines = ["".join(chars.get(int(f), "█") for f in row) for row in flags.cpu()]
    head_line = f"{sq} x {sk}, one character = {bm} x {bn} (rows x cols), causal={mask.causal}"
    border = "+" + "-" * flags.shape[1] + "+"
    return "\n".join([head_line, border, *("|" + ln + "|" for ln in lines), border])


def save_png(
    mask: FlashMask,
    path: str,
    sq: int,
    sk: int,
    *,
    batch: int = 0,
    head: int = 0,
    max_size: int = 1024,
) -> None:
    """Write a grey-scale PNG: each pixel is the visible share of its block (white = visible)."""
    from fm4.masks.bounds import visible_rows_per_block

    if sq == 0 or sk == 0:
        raise ValueError(f"cannot draw an empty mask ({sq} x {sk})")
    bm = max(1, -(-sq // max_size))
    bn = max(1, -(-sk // max_size))
    sri = _one(mask, batch, head)
    dev = mask.device
    starts = torch.arange(0, sq, bm, device=dev, dtype=torch.int64)
    ends = (starts + bm).clamp(max=sq)
    vis = visible_rows_per_block(sri, mask.causal, sq, sk, starts, ends)[0, 0].float()
    nt = -(-sk // bn)
    vis = torch.nn.functional.pad(vis, (0, nt * bn - sk)).view(len(starts), nt, bn).sum(-1)
    cols = torch.full((nt,), float(bn))
    cols[-1] = sk - (nt - 1) * bn
    share = vis.cpu() / ((ends - starts).cpu()[:, None].float() * cols[None, :])
    img = (share.clamp(0, 1) * 255).round().to(torch.uint8)
    _write_png_gray(path, img)


def _write_png_gray(path: str, img: torch.Tensor) -> None:
    h, w = img.shape
    raw = b"".join(b"\x00" + bytes(row.tolist()) for row in img)

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)
