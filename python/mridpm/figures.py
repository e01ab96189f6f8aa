"""PNG figures without a plotting library: image grids written with zlib, atomically."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import torch

from mridpm.data._atomic import atomic_path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: str | os.PathLike, image: torch.Tensor) -> Path:
    """Writes an 8-bit grayscale PNG of a (H, W) tensor scaled from its [min, max] range."""
    if image.dim() != 2 or image.is_complex():
        raise ValueError(f"write_png takes a real (H, W) image, got {tuple(image.shape)} {image.dtype}")
    img = image.detach().float().cpu()
    lo, hi = float(img.min()), float(img.max())
    u8 = ((img - lo) / (hi - lo if hi > lo else 1.0) * 255).round().clamp(0, 255).to(torch.uint8)
    h, w = u8.shape
    raw = b"".join(b"\x00" + bytes(u8[r].tolist()) for r in range(h))
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))
    with atomic_path(path, ".png") as tmp:
        tmp.write_bytes(png)
    return Path(path)


def grid(images: torch.Tensor, columns: int = 8, pad: int = 2, value: float | None = None) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) images tiled into one (rows * (H + pad), columns * (W + pad)) image."""
    imgs = images.detach().float().cpu()
    if imgs.dim() == 4:
        imgs = imgs[:, 0]
    n, h, w = imgs.shape
    rows = -(-n // columns)
    fill = float(imgs.min()) if value is None else value
    out = torch.full((rows * (h + pad) - pad, columns * (w + pad) - pad), fill)
    for i in range(n):
        r, c = divmod(i, columns)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = imgs[i]
    return out


def write_panels(path: str | os.PathLike, panels: list[tuple[str, torch.Tensor]], scale: int = 3) -> Path:
    """A row of (title, real (H, W) image) panels, each scaled from its own [min, max] range and
    enlarged scale times, titled above; titles are drawn with Pillow's built-in font."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as err:
        raise ImportError("titled figures need Pillow: pip install 'mridpm[data]'") from err
    tiles = []
    for _, img in panels:
        if img.dim() != 2 or img.is_complex():
            raise ValueError(f"panels take real (H, W) images, got {tuple(img.shape)} {img.dtype}")
        t = img.detach().float().cpu()
        lo, hi = float(t.min()), float(t.max())
        t = ((t - lo) / (hi - lo if hi > lo else 1.0) * 255).round().clamp(0, 255).to(torch.uint8)
        tiles.append(t.repeat_interleave(scale, 0).repeat_interleave(scale, 1))
    h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)
    font = ImageFont.load_default()
    lines = max(len(title.split("\n")) for title, _ in panels)
    top, pad = 14 * lines + 6, 6
    canvas = Image.new("L", (len(tiles) * (w + pad) + pad, h + top + pad), 255)
    draw = ImageDraw.Draw(canvas)
    for i, ((title, _), tile) in enumerate(zip(panels, tiles, strict=True)):
        x = pad + i * (w + pad)
        canvas.paste(Image.fromarray(tile.numpy(), mode="L"), (x, top))
        draw.multiline_text((x, 3), title, fill=0, font=font, spacing=2)
    with atomic_path(path, ".png") as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
