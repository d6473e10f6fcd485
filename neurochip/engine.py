"""The audio-to-audio engine: a whole song through Riffusion img2img, as one piece.

Riffusion's own tools cut a song into 5 s clips and render each alone, so instruments change at
clip borders and crossfades smear the seams. Here the whole song is one latent image:

1. **encode**: the song's mel spectrogram as a float picture (no 8-bit rounding) -> VAE latents;
2. **noise**: one noise tensor for the whole song from one seed, added once (img2img);
3. **denoise**: at every step the UNet sees overlapping 512-column windows (batched, with the
   classifier-free-guidance pair), and their noise predictions are blended into one prediction
   for the whole song (MultiDiffusion), weights tapering near window edges; the scheduler then
   steps the whole song at once;
4. **decode**: latents -> picture -> mel amplitudes at the input's level;
5. **phase**: audio rebuilt with the input's own phase (see :mod:`neurochip.phase`).

The output has exactly the input span's length, sample-aligned with it.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.io.audio import Audio, limit_peak
from neurochip.model import DEFAULT_MODEL_ID, RiffusionModel, load_model
from neurochip.phase import waveform_from_amplitudes
from neurochip.settings import RenderSettings
from neurochip.spectrogram import (
    SpectrogramParams,
    amplitudes_to_float_image,
    float_image_to_amplitudes,
    mel_amplitudes,
)

#: Image columns the model was trained on: its window onto the song.
WINDOW_COLUMNS = 512

#: Image columns the VAE encodes or decodes at once, and how many neighbouring tiles share.
VAE_TILE = 512
VAE_TILE_OVERLAP = 64

#: Memory an engine keeps for the encodings of recent songs (pictures and latents), so that
#: previews of them start at once. A 10-minute song's picture alone is ~370 MB; the newest
#: song is always kept, whatever its size.
DEFAULT_CACHE_BYTES = 1 << 30

#: Length of a preview, in seconds: one model window.
PREVIEW_SECONDS = 5.12

#: progress(fraction done 0..1, stage) -- stage is e.g. "encode", "denoise step 3 of 17".
ProgressCallback = Callable[[float, str], None]


@dataclass
class Render:
    """A finished take and what it was made from."""

    audio: Audio  # the take: mono, exactly the source span's length
    source: Audio  # the input span, as the engine heard it (mono mix)
    settings: RenderSettings
    input_image: torch.Tensor  # (3, 512, frames) float picture of the source, on the CPU
    output_image: torch.Tensor  # (3, 512, frames) float picture of the take, on the CPU
    start_s: float = 0.0  # where the span starts in the song
    info: dict[str, Any] = field(default_factory=dict)  # model, device, timings


# --- windows -----------------------------------------------------------------------------------


def plan_windows(width: int, window: int, overlap: float) -> list[int]:
    """Start columns of windows of ``window`` columns covering ``width`` columns.

    Neighbours share at least ``overlap`` of a window; starts are spread evenly. A song
    narrower than one window is one window of the song's width. (Starts need no alignment: the
    UNet only needs the window's width to be a multiple of 8.)
    """
    if width <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    count = math.ceil((width - window) / stride) + 1
    return [int(round(s)) for s in np.linspace(0, width - window, count)]


def window_weight(window: int, overlap: float, device: torch.device) -> torch.Tensor:
    """Blend weight across a window: 1 in the middle, smoothly down towards the edges.

    Never exactly 0, so the song's first and last columns (covered by one window) keep their
    prediction unchanged after normalisation.
    """
    ramp = max(1, int(window * overlap))
    x = torch.arange(window, device=device, dtype=torch.float32) + 0.5
    distance = torch.minimum(x, window - x) / ramp
    weight = torch.sin(0.5 * torch.pi * distance.clamp(max=1.0)) ** 2
    return weight.clamp_min(1e-3)


def blend_windows(
    x: torch.Tensor,
    starts: list[int],
    window: int,
    weight: torch.Tensor,
    predict: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    before_call: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Apply ``predict`` to overlapping windows of ``x`` (..., width) and blend the results.

    ``predict`` takes a batch (n, C, H, window) and returns the same shape; windows are sent
    ``batch_size`` at a time. Each output column is the weighted mean of the windows over it.
    """
    width = min(window, x.shape[-1])
    out = torch.zeros_like(x, dtype=torch.float32)
    norm = torch.zeros(x.shape[-1], device=x.device, dtype=torch.float32)
    weight = weight[:width]
    for i in range(0, len(starts), batch_size):
        group = starts[i : i + batch_size]
        if before_call is not None:
            before_call()
        crops = torch.cat([x[..., s : s + width] for s in group], dim=0)
        predictions = predict(crops).float()
        for j, s in enumerate(group):
            out[..., s : s + width] += predictions[j : j + 1] * weight
            norm[s : s + width] += weight
    return out / norm


def tiled_along_time(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    ratio: float,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` along its last (time) axis and blend them.

    The VAE sees the spectrogram's full height in every tile: square tiles would cut the
    picture into a top part and a thin strip of the lowest bands (bass and kick) with little
    context. ``fn`` maps (1, C, H, tile) to (1, C', H', tile * ratio); tiles overlap by
    ``overlap`` columns, crossfaded with the same tapered weight as the UNet windows.
    """
    width = x.shape[-1]
    if width <= tile:
        return fn(x).float()
    stride = tile - overlap
    starts = list(range(0, width - tile, stride)) + [width - tile]
    out_tile = round(tile * ratio)
    weight = window_weight(out_tile, overlap / tile, x.device)
    out = norm = None
    for start in starts:
        y = fn(x[..., start : start + tile]).float()
        if out is None:
            out = torch.zeros(*y.shape[:-1], round(width * ratio), device=y.device)
            norm = torch.zeros(round(width * ratio), device=y.device)
        a = round(start * ratio)
        out[..., a : a + out_tile] += y * weight.to(y.device)
        norm[a : a + out_tile] += weight.to(y.device)
    return out / norm


# --- preview regions -----------------------------------------------------------------------------


def preview_region(
    song: Audio,
    start_s: float,
    duration_s: float = PREVIEW_SECONDS,
    params: SpectrogramParams = SpectrogramParams(),
) -> tuple[int, int]:
    """(first sample, length) of a preview region of ``song``, at ``params.sample_rate``.

    Seconds become samples at the rate the engine works at (a 48 kHz song's 10 s are sample
    441,000 after resampling, not 480,000), and the start snaps to a picture column (10 ms).
    """
    if song.sample_rate != params.sample_rate:
        raise ValueError("preview_region() takes the song at the engine's sample rate")
    hop = params.hop_length
    first = min(int(round(start_s * song.sample_rate / hop)), max(0, song.frames - 1) // hop)
    start = first * hop
    length = min(int(round(duration_s * song.sample_rate)), song.frames - start)
    if length < params.min_samples:
        raise NeuroChipError("The preview region is too short: choose an earlier start.")
    return start, length


def region_picture(
    song: Audio,
    start_s: float,
    duration_s: float = PREVIEW_SECONDS,
    params: SpectrogramParams = SpectrogramParams(),
) -> tuple[torch.Tensor, float]:
    """The float picture the model sees of a preview region (no model needed), and its start.

    Its columns are exactly the preview's input picture's (the level differs: this is scaled
    to the region alone).
    """
    mono = song.to_mono().resample(params.sample_rate)
    start, length = preview_region(mono, start_s, duration_s, params)
    region = torch.from_numpy(mono.samples[:, start : start + length])
    picture, _ = amplitudes_to_float_image(mel_amplitudes(region, params))
    return picture, start / params.sample_rate


# --- the engine -----------------------------------------------------------------------------------


_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


def device_lock(device: torch.device | str) -> threading.Lock:
    """The one render lock of a device in this process.

    Every engine on a device renders under it, so two engines (two models, or the app's old
    and new model while one still renders) never share a GPU at once: that would only run it
    out of memory. Engines on different devices do not wait for each other.
    """
    key = str(torch.device(device))
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(key, threading.Lock())


class Engine:
    """Renders songs with one loaded model. Keeps the encodings of recent songs for previews.

    Get one with :meth:`from_pretrained`, or hand it a :class:`RiffusionModel` you built. Its
    methods are safe to call from several threads: renders queue on the device's lock
    (:func:`device_lock`), shared by every engine on that device.
    """

    def __init__(
        self,
        model: RiffusionModel,
        params: SpectrogramParams = SpectrogramParams(),
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.params = params
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._lock = device_lock(model.device)
        if model.device.type == "cpu":
            # Denormal floats (from SiLU of large negative activations) make CPU convolutions
            # several times slower; flushing them to zero changes no audible result.
            torch.set_flush_denormal(True)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path = DEFAULT_MODEL_ID,
        device: str = "auto",
        dtype: str | None = None,
        local_files_only: bool | None = None,
    ) -> Engine:
        """An engine with the Riffusion model (or any Stable Diffusion 1.x model) loaded.

        Args:
            source: Hugging Face hub id, local diffusers folder, or one ``.safetensors`` file.
            device: ``auto`` (the best found), ``cuda``, ``mps`` or ``cpu``.
            dtype: ``fp32``, ``fp16`` or ``bf16``; ``None`` is fp16 on CUDA, fp32 elsewhere.
            local_files_only: Never touch the network (default: ``HF_HUB_OFFLINE``).

        Raises:
            ModelNotFoundError: The weights are not here; the message says how to get them.
            ModelLoadError: They are here, but a part cannot be used; the message names it.
        """
        return cls(load_model(source, device, dtype or "auto", local_files_only))

    # -- public --------------------------------------------------------------------------------

    def render(
        self,
        song: Audio,
        settings: RenderSettings,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Render:
        """Render the span ``settings.start_s`` .. ``+duration_s`` of a song as one take."""
        # Cut the span at the working rate: lengths in samples then mean the same on both sides
        # of the resampler (a 48 kHz span's sample count is not the take's).
        song = self._at_working_rate(song)
        span = song.span(settings.start_s, settings.duration_s)
        with self._lock:
            result = self._render_region(span, 0, span.frames, settings, progress, cancel)
        # The span is rendered as a song of its own; report where it sits in the whole song.
        return replace(
            result, start_s=round(settings.start_s * song.sample_rate) / song.sample_rate
        )

    def preview(
        self,
        song: Audio,
        settings: RenderSettings,
        start_s: float,
        duration_s: float = PREVIEW_SECONDS,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Render:
        """Render a short region fast, reusing the cached encoding of the whole song.

        The region gets the same noise the full render puts there, so a preview sounds like
        that part of the full render (up to the windows' context). ``start_s`` snaps to 10 ms.
        """
        song = self._at_working_rate(song)
        start, length = preview_region(song, start_s, duration_s, self.params)
        with self._lock:
            return self._render_region(song, start, length, settings, progress, cancel)

    # -- steps -----------------------------------------------------------------------------------

    def _render_region(
        self,
        song: Audio,
        start: int,
        length: int,
        settings: RenderSettings,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> Render:
        song = self._at_working_rate(song)
        report = _monotonic(progress)
        hop = self.params.hop_length
        mono = song.to_mono()
        report(0.0, "encode")
        use_model = settings.denoise_steps > 0
        cached = self._song_encoding(mono, need_latents=use_model)
        first, frames = start // hop, self.params.num_frames(length)
        input_image = cached["image"][..., first : first + frames]

        if use_model:
            output_image = self._img2img_region(cached, first, frames, settings, report, cancel)
        else:
            output_image = input_image  # no denoising step: the model would change nothing

        report(0.9, "phase")
        source = torch.from_numpy(mono.samples[:, start : start + length]).to(self.model.device)
        amplitudes = float_image_to_amplitudes(
            output_image.mean(dim=0, keepdim=True).expand(3, -1, -1),
            float(cached["max_value"]),
            stereo=False,
        )
        waveform = waveform_from_amplitudes(
            amplitudes.to(self.model.device).float(),
            self.params,
            length,
            settings.phase_settings,
            source=source,
            progress=lambda f: report(0.9 + 0.1 * f, "phase"),
        )
        waveform = limit_peak(waveform)  # a take never clips, and is never turned up
        report(1.0, "done")
        return Render(
            audio=Audio(waveform.cpu().numpy(), song.sample_rate),
            source=Audio(mono.samples[:, start : start + length].copy(), song.sample_rate),
            settings=settings,
            input_image=input_image.cpu(),
            output_image=output_image.cpu(),
            start_s=start / song.sample_rate,
            info={"model": self.model.source, "device": str(self.model.device)},
        )

    def _at_working_rate(self, song: Audio) -> Audio:
        if song.sample_rate == self.params.sample_rate:
            return song
        return song.resample(self.params.sample_rate)

    def _song_encoding(self, mono: Audio, need_latents: bool) -> dict[str, torch.Tensor]:
        """Picture (and VAE latents) of a whole song, kept for the next preview of it."""
        key = hashlib.blake2b(mono.samples.tobytes(), digest_size=16).hexdigest()
        entry = self._cache.get(key)
        if entry is None:
            waveform = torch.from_numpy(mono.samples).to(self.model.device)
            image, max_value = amplitudes_to_float_image(mel_amplitudes(waveform, self.params))
            entry = {"image": image, "max_value": torch.tensor(max_value)}
            self._cache[key] = entry
        self._cache.move_to_end(key)
        if need_latents and "latents" not in entry:
            entry["latents"] = self._encode(entry["image"])
        self._evict()
        return entry

    def cache_size_bytes(self) -> int:
        """Memory the kept song encodings take (pictures and latents)."""
        return sum(_entry_bytes(entry) for entry in self._cache.values())

    def _evict(self) -> None:
        """Forget the least recently used songs until the cache fits; the newest always stays."""
        total = self.cache_size_bytes()
        while total > self._cache_bytes and len(self._cache) > 1:
            _, entry = self._cache.popitem(last=False)
            total -= _entry_bytes(entry)

    @torch.no_grad()
    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        """Float picture (3, 512, W) -> latents (1, 4, 64, W') with W' * 8 >= W, padded."""
        model = self.model
        pad = (-image.shape[-1]) % (model.vae_scale * model.unet_multiple)
        padded = torch.nn.functional.pad(image[None], (0, pad, 0, 0), mode="replicate")

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            pixels = (pixels * 2 - 1).to(model.device, model.dtype)
            return model.vae.encode(pixels).latent_dist.mode()

        latents = tiled_along_time(encode, padded, VAE_TILE, VAE_TILE_OVERLAP, 1 / model.vae_scale)
        return latents * model.latent_scaling

    @torch.no_grad()
    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        model = self.model
        scale = model.vae_scale

        def decode(tile: torch.Tensor) -> torch.Tensor:
            return model.vae.decode((tile / model.latent_scaling).to(model.dtype)).sample

        pixels = tiled_along_time(
            decode, latents, VAE_TILE // scale, VAE_TILE_OVERLAP // scale, scale
        )
        if not torch.isfinite(pixels).all():
            raise NeuroChipError(
                "The model produced invalid numbers (NaN), which fp16 can do on some GPUs. "
                "Render again with --dtype fp32 (or bf16), or choose fp32 on the Model page."
            )
        return (pixels[0] / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def _img2img_region(
        self,
        cached: dict[str, torch.Tensor],
        first: int,
        frames: int,
        settings: RenderSettings,
        report: ProgressCallback,
        cancel: threading.Event | None,
    ) -> torch.Tensor:
        model = self.model
        scale, multiple = model.vae_scale, model.unet_multiple
        song_latents = cached["latents"]
        # The latent columns under the region, with one window of context on each side where
        # the song has it, so the region is denoised in the same company as in a full render.
        total, context = song_latents.shape[-1], WINDOW_COLUMNS // scale
        a = max(0, first // scale - context)
        b = min(total, -(-(first + frames) // scale) + context)
        width = -(-(b - a) // multiple) * multiple  # the UNet needs multiples of 8
        a, b = (a, a + width) if a + width <= total else (total - width, total)
        latents = song_latents[..., a:b]
        noise = self._song_noise(song_latents.shape, settings.seed)[..., a:b]

        denoised = self._denoise(latents, noise, settings, report, cancel)
        report(0.85, "decode")
        image = self._decode(denoised)
        offset = first - a * scale
        return image[..., offset : offset + frames]

    def _song_noise(self, shape: torch.Size, seed: int) -> torch.Tensor:
        # Drawn on the CPU so the same seed gives the same noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        return torch.randn(tuple(shape), generator=generator).to(self.model.device)

    def _denoise(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        settings: RenderSettings,
        report: ProgressCallback,
        cancel: threading.Event | None,
    ) -> torch.Tensor:
        model = self.model
        scheduler = model.make_scheduler(settings.scheduler)
        scheduler.set_timesteps(settings.steps, device=model.device)
        # img2img: skip the first (1 - denoise) of the schedule, as diffusers' pipeline does.
        t_start = settings.steps - settings.denoise_steps
        timesteps = scheduler.timesteps[t_start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        latents = scheduler.add_noise(latents, noise, timesteps[:1])

        guided = settings.guidance > 1.0
        embeddings = model.encode_prompt(settings.prompt)
        if guided:
            embeddings = torch.cat([model.encode_prompt(settings.negative_prompt), embeddings])
        window = WINDOW_COLUMNS // model.vae_scale
        starts = plan_windows(latents.shape[-1], window, settings.overlap)
        weight = window_weight(min(window, latents.shape[-1]), settings.overlap, model.device)
        per_window = 2 if guided else 1
        batch = settings.batch_size or self._auto_batch(latents.shape, per_window)
        windows_per_call = max(1, batch // per_window)
        # Ancestral schedulers draw fresh noise each step: seed it too. Not every scheduler's
        # step() takes a generator (PNDM does not), so pass it only where accepted.
        step_options: dict[str, Any] = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_options["generator"] = torch.Generator("cpu").manual_seed(settings.seed + 1)

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled("The render was cancelled.")

        for k, t in enumerate(timesteps):
            model_input = scheduler.scale_model_input(latents, t)

            def predict(crops: torch.Tensor, t=t) -> torch.Tensor:
                n = crops.shape[0]
                crops = crops.to(model.dtype)
                if guided:
                    crops = torch.cat([crops, crops])
                context = embeddings.repeat_interleave(n, dim=0)
                out = model.unet(crops, t, encoder_hidden_states=context).sample
                if not guided:
                    return out
                uncond, cond = out.chunk(2)
                return uncond + settings.guidance * (cond - uncond)

            while True:
                try:
                    noise_pred = blend_windows(
                        model_input, starts, window, weight, predict, windows_per_call, check_cancel
                    )
                    break
                except torch.OutOfMemoryError as err:
                    # The free-memory estimate was optimistic (or another program took memory):
                    # halve the batch and redo this step; the result does not depend on it.
                    if windows_per_call == 1:
                        raise NeuroChipError(
                            "Out of GPU memory even one window at a time: close other programs "
                            "using the GPU, or use fp16 (--dtype fp16)."
                        ) from err
                    windows_per_call = max(1, windows_per_call // 2)
                    if model.device.type == "cuda":
                        torch.cuda.empty_cache()
            latents = scheduler.step(noise_pred, t, latents, **step_options).prev_sample.float()
            report(
                0.05 + 0.8 * (k + 1) / len(timesteps), f"denoise step {k + 1} of {len(timesteps)}"
            )
        return latents

    def _auto_batch(self, latent_shape: torch.Size, per_window: int) -> int:
        """UNet items per call that fit the device's free memory."""
        device = self.model.device
        if device.type != "cuda":
            return 2 * per_window  # CPU/MPS: bigger batches gain little and cost memory
        free, _ = torch.cuda.mem_get_info(device)
        # ~0.35 GB of activations per 64x64 fp16 item with SDPA (measured on SD 1.5), with
        # half the free memory left as headroom.
        items = latent_shape[-2] * min(latent_shape[-1], WINDOW_COLUMNS // 8)
        per_item = 0.35e9 * items / (64 * 64) * (2 if self.model.dtype == torch.float32 else 1)
        return int(max(per_window, min(64, free * 0.5 // per_item)))


def _entry_bytes(entry: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in entry.values())


def _monotonic(progress: ProgressCallback | None) -> ProgressCallback:
    """A progress callback whose fraction never goes backwards (stages estimate their share)."""
    done = 0.0

    def report(fraction: float, stage: str) -> None:
        nonlocal done
        done = min(1.0, max(done, fraction))
        if progress is not None:
            progress(done, stage)

    return report
