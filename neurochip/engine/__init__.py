"""The audio-to-audio engine: a sketch in, takes out, with any model behind one protocol.

- :mod:`.core`: :class:`Engine`, what front ends render with: spans, previews, loops,
  re-rolls, the cache of songs' encodings, the device's lock, progress, cancel, estimates;
- :mod:`.backend`: the :class:`Backend` protocol a model implements, and :class:`Render`;
- :mod:`.regions`: spans, preview regions, loops and re-roll regions, in samples;
- :mod:`.progress`: progress as the share of expected time, from measured rates;
- :mod:`.device`: the device's render lock and memory probes;
- :mod:`.riffusion`: the Riffusion backend (the default, and the reference).

The Riffusion backend renders a whole song as one latent image, in five steps:

1. **encode**: the song's mel spectrogram as a float picture (no 8-bit rounding) -> VAE latents;
2. **noise**: one noise tensor for the whole song from one seed, added once (img2img);
3. **denoise**: at every step the UNet sees overlapping 512-column windows (batched, with the
   classifier-free-guidance pair), and their noise predictions are blended into one prediction
   for the whole song (MultiDiffusion); several takes share the loop, each as it would be alone;
4. **decode**: latents -> picture -> mel amplitudes at the input's level;
5. **phase**: audio rebuilt with the input's own phase (see :mod:`neurochip.phase`).

The output has exactly the input span's length, sample-aligned with it.
"""

from neurochip.engine.backend import (
    FAITHFUL_PREVIEW,
    QUICK_PREVIEW,
    WINDOW_COLUMNS,
    Backend,
    Capabilities,
    PictureJob,
    PreviewQuality,
    Render,
    RenderJob,
)
from neurochip.engine.core import DEFAULT_CACHE_BYTES, Engine
from neurochip.engine.device import (
    MAX_AUTO_BATCH,
    MEMORY_SHARE,
    DeviceLock,
    batch_for_memory,
    device_lock,
    device_lock_file,
)
from neurochip.engine.progress import ProgressCallback
from neurochip.engine.regions import (
    LOOP_CROSSFADE_S,
    MIN_LOOP_S,
    PREVIEW_SECONDS,
    REROLL_MARGIN_S,
    RerollBounds,
    preview_region,
    region_picture,
    reroll_bounds,
    wrap_loop,
)
from neurochip.engine.riffusion import STAGES, RiffusionBackend
from neurochip.engine.riffusion.lanes import slerp
from neurochip.engine.riffusion.latents import tiled_along_time
from neurochip.engine.riffusion.windows import (
    count_unet_work,
    plan_windows,
    shifted_windows,
    window_columns,
    window_weight,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "FAITHFUL_PREVIEW",
    "LOOP_CROSSFADE_S",
    "MAX_AUTO_BATCH",
    "MEMORY_SHARE",
    "MIN_LOOP_S",
    "PREVIEW_SECONDS",
    "QUICK_PREVIEW",
    "REROLL_MARGIN_S",
    "STAGES",
    "WINDOW_COLUMNS",
    "Backend",
    "Capabilities",
    "DeviceLock",
    "Engine",
    "PictureJob",
    "PreviewQuality",
    "ProgressCallback",
    "Render",
    "RenderJob",
    "RerollBounds",
    "RiffusionBackend",
    "batch_for_memory",
    "count_unet_work",
    "device_lock",
    "device_lock_file",
    "plan_windows",
    "preview_region",
    "region_picture",
    "reroll_bounds",
    "shifted_windows",
    "slerp",
    "tiled_along_time",
    "window_columns",
    "window_weight",
    "wrap_loop",
]
