"""Small spectrogram pictures of takes, for lists."""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from neurochip.errors import NeuroChipError


def spectrogram_thumbnail(
    image: torch.Tensor, max_width: int = 400, height: int = 96
) -> Image.Image:
    """A small RGB preview of a float spectrogram picture, for lists.

    ``image`` is the engine's picture: ``(3, 512, W)`` (or ``(1, H, W)``, ``(H, W)``) in
    ``[0, 1]``, 1 being white (silence), low notes at the bottom. Each thumbnail pixel is the
    mean of the area it covers, so short notes in a long song still show. The result is
    ``height`` pixels high and ``min(W, max_width)`` wide.
    """
    if max_width < 1 or height < 1:
        raise ValueError(f"A thumbnail needs a positive size, not {max_width}x{height}.")
    pixels = image.detach()
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or min(pixels.shape[1:]) == 0:
        raise NeuroChipError(
            f"A spectrogram picture is shaped (3, height, width); got {tuple(image.shape)}."
        )
    if pixels.shape[0] == 3 and not bool(pixels[0].any()) and bool(pixels[1:].any()):
        # A stereo picture keeps R at 0 (Riffusion's layout); grey reads better than cyan.
        pixels = pixels[1:].float().mean(0, keepdim=True)
    # Pool first, on the device it is on: the full picture of a long song is hundreds of MB.
    width = min(int(pixels.shape[-1]), max_width)
    small = F.adaptive_avg_pool2d(pixels[None].float(), (height, width))[0].cpu()
    small = torch.nan_to_num(small, nan=1.0).clamp(0, 1)
    if small.shape[0] == 1:
        small = small.expand(3, -1, -1)
    rgb = (small * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(rgb, mode="RGB")


def write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    with path.open("wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def read_png(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError):
        return None
