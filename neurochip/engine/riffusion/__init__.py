"""Riffusion (Stable Diffusion 1.x fine-tuned on mel spectrograms) as a NeuroChip backend.

- :mod:`.backend`: :class:`RiffusionBackend`, what the engine calls;
- :mod:`.pipeline`: :func:`img2img`, one render's denoising path, top to bottom;
- :mod:`.windows`: where the model's windows sit and how they blend; their cost;
- :mod:`.lanes`: one take in the shared loop, and its noise;
- :mod:`.latents`: the song's picture and its latents, encoded and decoded in tiles.
"""

from neurochip.engine.riffusion.backend import (
    LOOP_CONTEXT_COLUMNS,
    PRIOR_RATES,
    STAGES,
    RiffusionBackend,
)

__all__ = ["LOOP_CONTEXT_COLUMNS", "PRIOR_RATES", "STAGES", "RiffusionBackend"]
