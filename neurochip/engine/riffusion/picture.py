"""A spectrogram picture rendered as itself, as Riffusion's server renders a seed image.

Riffusion's protocol names a seed image and, optionally, a mask image: img2img runs on the
seed's own pixels (no audio made of it first), the mask's white is rendered anew and its
black kept, and the sound comes from Griffin-Lim from random phase. The kept part is held
the way a re-roll holds its parent take: its latents, noised to each step's level
(:meth:`~neurochip.engine.riffusion.lanes.Lane.keep`).
"""

from __future__ import annotations

from typing import Any

import torch

from neurochip.engine.backend import PictureJob, Render
from neurochip.engine.progress import StagedProgress
from neurochip.engine.riffusion.latents import lazy_latents
from neurochip.engine.riffusion.pipeline import img2img
from neurochip.io.audio import Audio, limit_peak
from neurochip.phase import PhaseSettings


def render_picture(backend: Any, job: PictureJob, report: StagedProgress) -> Render:
    """``job``'s picture denoised as one song, its mask's black kept; its sound.
    ``backend`` is the :class:`~neurochip.engine.riffusion.RiffusionBackend` with the model."""
    model, params = backend.model, backend.params

    # 1. Encode: the picture's own latents (the seed itself where no step denoises).
    image = job.image.to(backend.device)
    frames = image.shape[-1]
    picture = image
    if job.settings.denoise_steps > 0:
        latents = lazy_latents(model, image)

        # 2. Mask: where it is black, the picture's latents are held at every step.
        keep = None
        if job.mask is not None:
            repaint = latent_mask(job.mask, latents.shape, model.vae_scale).to(backend.device)

            def keep(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
                return latents.columns(a, b), repaint[..., a:b]

        # 3. Denoise and decode, as any render of a whole song.
        [picture] = img2img(backend, [latents], 0, frames, [job.settings], report, keep=keep)

    # 4. Phase: Griffin-Lim from random phase (a picture has no audio to take it from).
    length = params.num_samples(frames)
    silence = torch.zeros(1, length)
    phase = PhaseSettings(mode="random", seed=job.settings.seed)
    [wave] = backend.waveforms([picture], [job.max_value], [silence], [phase], length, report)
    return Render(
        audio=Audio(limit_peak(wave).cpu().numpy(), params.sample_rate),
        source=Audio(silence.numpy(), params.sample_rate),  # no audio went in
        settings=job.settings,
        input_image=image.cpu(),
        output_image=picture.cpu(),
        info={**backend.info(), "picture": {"masked": job.mask is not None}},
    )


def latent_mask(mask: torch.Tensor, shape: torch.Size, scale: int) -> torch.Tensor:
    """A picture's mask (H, W), 1 to render anew, as (1, 1, h, w) for latents of ``shape``:
    each latent cell takes the mask's pixel at its centre (Riffusion's nearest resize); cells
    past the picture's right edge (padding) render anew."""
    height, width = shape[-2], shape[-1]
    rows = (torch.arange(height) * scale + scale // 2).clamp(max=mask.shape[-2] - 1)
    cols = torch.arange(width) * scale + scale // 2
    inside = cols < mask.shape[-1]
    out = torch.ones(height, width, dtype=torch.float32)
    out[:, inside] = mask.float()[rows][:, cols[inside]]
    return out.view(1, 1, height, width)
