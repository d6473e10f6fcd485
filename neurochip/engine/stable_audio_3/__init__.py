"""Stable Audio 3 (diffusers' ``StableAudio3AudioToAudioPipeline`` and the inpainting
pathway of its DiT) as a NeuroChip backend.

- :mod:`.backend`: :class:`StableAudio3Backend`, what the engine calls: variations, inpainting;
- :mod:`.pipeline`: :func:`generate`, one call's conditions, start, schedule, loop, decode.
"""

from neurochip.engine.stable_audio_3.backend import PRIOR_RATES, StableAudio3Backend

__all__ = ["PRIOR_RATES", "StableAudio3Backend"]
