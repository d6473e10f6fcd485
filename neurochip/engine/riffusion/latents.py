"""A song as Riffusion's VAE sees it: its picture, and latents encoded tile by tile.

The VAE takes pictures 512 columns wide; a song's picture is encoded and decoded in tiles along
time that share their edges, blended with the windows' tapered weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from neurochip.engine.riffusion.windows import window_weight
from neurochip.errors import NeuroChipError

#: Image columns the VAE encodes or decodes at once, and how many neighbouring tiles share.
VAE_TILE = 512
VAE_TILE_OVERLAP = 64


def tile_starts(width: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of :func:`tiled_along_time` start along ``width`` columns.

    Every ``tile - overlap`` columns, the last one flush with the end; one tile (at 0) when
    ``width`` fits in one.
    """
    if width <= tile:
        return [0]
    return list(range(0, width - tile, tile - overlap)) + [width - tile]


def tiled_along_time(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    ratio: float,
    tiles_at_once: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` along its last (time) axis and blend them.

    The VAE sees the spectrogram's full height in every tile: square tiles would cut the
    picture into a top part and a thin strip of the lowest bands (bass and kick) with little
    context. ``fn`` maps (n, C, H, tile) to (n, C', H', tile * ratio); tiles overlap by
    ``overlap`` columns, crossfaded with the same tapered weight as the UNet windows.
    ``tiles_at_once`` tiles go through ``fn`` in one batch (a GPU's memory allowing).
    """
    width = x.shape[-1]
    if width <= tile:
        return fn(x).float()
    starts = tile_starts(width, tile, overlap)
    out_tile = round(tile * ratio)
    weight = window_weight(out_tile, overlap / tile, x.device)
    out = norm = None
    for start, y in zip(starts, _tiles(fn, x, starts, tile, tiles_at_once), strict=True):
        if out is None:
            out = torch.zeros(*y.shape[:-1], round(width * ratio), device=y.device)
            norm = torch.zeros(round(width * ratio), device=y.device)
        a = round(start * ratio)
        out[..., a : a + out_tile] += y * weight.to(y.device)
        norm[a : a + out_tile] += weight.to(y.device)
    return out / norm


def _tiles(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    starts: list[int],
    tile: int,
    at_once: int,
):
    """``fn`` of each tile of ``x`` (from ``starts``), ``at_once`` tiles per call, in order."""
    for first in range(0, len(starts), max(1, at_once)):
        group = starts[first : first + max(1, at_once)]
        if len(group) == 1:
            yield fn(x[..., group[0] : group[0] + tile]).float()
            continue
        batch = torch.cat([x[..., s : s + tile] for s in group])
        yield from fn(batch).float().split(x.shape[0])


# --- preview regions -----------------------------------------------------------------------------


class SongLatents:
    """A song's VAE latents, encoded tile by tile as regions ask for them.

    A preview needs the latents under its region and a window of context, not the whole
    song's: the first preview of a 3-minute song encodes 3 or 4 tiles instead of 40. The tiles
    are :func:`tiled_along_time`'s over the whole song, blended with the same weights, so
    every column handed out equals the whole-song encoding's (up to float summation order).
    """

    def __init__(
        self,
        encode: Callable[[torch.Tensor], torch.Tensor],
        image: torch.Tensor,
        width: int,
        scale: int,
        channels: int,
        scaling: float,
    ) -> None:
        # The song's picture (3, H, W), shared with the cache entry; ``width`` is W padded to
        # what the UNet needs, the padding repeating the last column (as the whole-song
        # encoding pads), made only for the tile that reaches it.
        self.encode, self.image, self.scale, self.scaling = encode, image, scale, scaling
        self.tile = min(width, VAE_TILE)
        self.starts = tile_starts(width, VAE_TILE, VAE_TILE_OVERLAP)
        self.shape = torch.Size((1, channels, image.shape[-2] // scale, width // scale))
        self.done = [False] * len(self.starts)
        device = image.device
        self.out = torch.zeros(self.shape, device=device)
        self.norm = torch.zeros(self.shape[-1], device=device)
        out_tile = self.tile // scale
        self.weight = (
            torch.ones(out_tile, device=device)
            if len(self.starts) == 1
            else window_weight(out_tile, VAE_TILE_OVERLAP / VAE_TILE, device)
        )

    def _tiles(self, a: int, b: int) -> list[int]:
        """Tiles that reach latent columns a..b (all of them must be in for exactness)."""
        scale = self.scale
        return [
            i
            for i, start in enumerate(self.starts)
            if start // scale < b and (start + self.tile) // scale > a
        ]

    def missing(self, a: int, b: int) -> int:
        """Picture columns still to encode before latent columns a..b can be handed out."""
        return sum(self.tile for i in self._tiles(a, b) if not self.done[i])

    def columns(self, a: int, b: int) -> torch.Tensor:
        """Latent columns a..b, encoding the tiles they need first."""
        out_tile = self.tile // self.scale
        for i in self._tiles(a, b):
            if self.done[i]:
                continue
            start = self.starts[i]
            pixels = self.image[None, ..., start : start + self.tile]
            short = self.tile - pixels.shape[-1]
            if short:
                pixels = torch.nn.functional.pad(pixels, (0, short, 0, 0), mode="replicate")
            y = self.encode(pixels).float()
            at = start // self.scale
            self.out[..., at : at + out_tile] += y * self.weight
            self.norm[at : at + out_tile] += self.weight
            self.done[i] = True
        return self.out[..., a:b] / self.norm[a:b] * self.scaling

    def full(self) -> torch.Tensor:
        """Every column (encodes what is missing)."""
        return self.columns(0, self.shape[-1])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.out, self.norm))


def region_columns(
    total: int, first: int, frames: int, scale: int, multiple: int, context: int
) -> tuple[int, int]:
    """The latent columns (a, b) denoised for picture columns ``first`` + ``frames``.

    ``context`` picture columns on each side where the song has it, so the region is denoised
    in the company it has in a full render; the width a multiple of what the UNet needs.
    """
    context = -(-context // scale)
    a = max(0, first // scale - context)
    b = min(total, -(-(first + frames) // scale) + context)
    width = -(-(b - a) // multiple) * multiple
    return (a, a + width) if a + width <= total else (max(0, total - width), total)


@dataclass
class SongPicture:
    """What the engine keeps of a song for this backend: its float picture, the level it was
    scaled by, and its latents once a take needs them."""

    image: torch.Tensor  # (3, 512, W)
    max_value: torch.Tensor  # a 0-d tensor: the amplitude the picture's white stands for
    latents: SongLatents | None = None

    @property
    def nbytes(self) -> int:
        tensors = (self.image, self.max_value)
        size = sum(t.numel() * t.element_size() for t in tensors)
        return size + (self.latents.nbytes if self.latents is not None else 0)


def lazy_latents(model: Any, image: torch.Tensor) -> SongLatents:
    """Float picture (3, 512, W) -> latents (1, 4, 64, W') with W' * 8 >= W, padded.

    Encoded lazily, tile by tile, as regions ask for them (see :class:`SongLatents`).
    """
    width = image.shape[-1] + (-image.shape[-1]) % (model.vae_scale * model.unet_multiple)

    @torch.no_grad()
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        pixels = (pixels * 2 - 1).to(model.device, model.dtype)
        return model.vae.encode(pixels).latent_dist.mode()

    channels = int(getattr(model.vae.config, "latent_channels", 4))
    return SongLatents(encode, image, width, model.vae_scale, channels, model.latent_scaling)


@torch.no_grad()
def decode(model: Any, latents: torch.Tensor, vae: Any, tiles_at_once: int = 1) -> torch.Tensor:
    """Latents (n, 4, 64, W') -> float pictures (n, 3, 512, W' * 8), in tiles along time
    (``tiles_at_once`` per call), by ``vae`` (the model's own, or a tiny preview VAE with a
    scaling of its own, 1)."""
    scale = model.vae_scale
    scaling = float(vae.config.scaling_factor)

    def decode_tile(tile: torch.Tensor) -> torch.Tensor:
        return vae.decode((tile / scaling).to(model.dtype)).sample

    pixels = tiled_along_time(
        decode_tile, latents, VAE_TILE // scale, VAE_TILE_OVERLAP // scale, scale, tiles_at_once
    )
    if not torch.isfinite(pixels).all():
        raise NeuroChipError(
            "The model produced invalid numbers (NaN), which fp16 can do on some GPUs. "
            "Render again with --dtype fp32 (or bf16), or choose fp32 on the Model page."
        )
    return (pixels / 2 + 0.5).clamp(0, 1)
