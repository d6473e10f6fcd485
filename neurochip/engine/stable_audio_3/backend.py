"""Stable Audio 3 as a NeuroChip backend: variations of a sketch, inpainting for re-rolls.

The song, at 44.1 kHz, is encoded once by the SAME autoencoder (about 10.8 latent frames a
second; deterministic); each take is the song's latents noised to the take's Denoise and
made clean again in a few rectified-flow steps (:mod:`~neurochip.engine.stable_audio_3.pipeline`),
as diffusers' ``StableAudio3AudioToAudioPipeline`` does. A re-roll inpaints the region,
hearing the take around it (``StableAudio3InpaintPipeline``'s conditioning). Stable Audio 3
renders stereo; takes are mixed to mono, as every NeuroChip take is (a stereo pair is two).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neurochip.engine.backend import Capabilities, Render, RenderJob
from neurochip.engine.device import MemoryProbe
from neurochip.engine.loading import load_pipeline
from neurochip.engine.progress import StagedProgress
from neurochip.engine.stable_audio_3.pipeline import NoiseStream, generate
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio, limit_peak
from neurochip.model_spec import DEFAULT_STABLE_AUDIO_3_ID, KIND_KNOBS
from neurochip.spectrogram import SpectrogramParams, amplitudes_to_float_image, mel_amplitudes

if TYPE_CHECKING:
    from neurochip.model_spec import ModelSpec

#: Seconds of the take on each side of a re-rolled region that the model hears as it is.
REPAINT_CONTEXT_S = 10.0

#: A loop is rendered with this much of itself wrapped round each side (in seconds, as
#: Riffusion's 2.56 s), its noise repeating with the loop.
LOOP_CONTEXT_S = 2.56

#: Seconds per unit of each stage before this device's are measured (the tests' tiny model on
#: a 2-core CPU): encode per second of song, denoise per DiT frame-step, decode per frame.
PRIOR_RATES = {"encode": 2e-3, "denoise": 5e-5, "decode": 5e-4}


class SongLatents:
    """What the backend keeps of a song: its SAME latents (1, dim, frames)."""

    def __init__(self, latents: torch.Tensor) -> None:
        self.latents = latents

    @property
    def nbytes(self) -> int:
        return self.latents.element_size() * self.latents.nelement()


class StableAudio3Backend:
    """Renders with one loaded diffusers :class:`~diffusers.StableAudio3AudioToAudioPipeline`
    (its components shared with the inpainting pipeline)."""

    prior_rates = PRIOR_RATES
    estimate_needs = frozenset({"denoise", "decode"})

    def __init__(self, pipe: Any, source: str = "") -> None:
        self.pipe = self.model = pipe
        self.source = source
        self.spec: ModelSpec | None = None
        self.device = pipe.transformer.device
        self.rate = int(pipe.vae.config.sampling_rate)
        self.hop = int(pipe.vae.downsampling_ratio)  # samples per latent frame
        self.dim = int(pipe.vae.config.latent_dim)
        self.params = SpectrogramParams(sample_rate=self.rate)  # the pictures takes carry
        self.memory = MemoryProbe(self.device, None)
        self.longest_s = float(pipe.duration_embedder.config.max_val)
        self.capabilities = Capabilities(
            sample_rate=self.rate,
            channels=1,
            probe_frames=10 * self.rate,
            longest_s=self.longest_s,
            loops=True,
            sections=False,
            repaint=True,
            batching=True,
            knobs=KIND_KNOBS["stable-audio-3"],
        )
        self._prompts: dict = {}

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, local_files_only: bool | None = None, **_: Any
    ) -> StableAudio3Backend:
        """The checkpoint ``spec`` names (hub id or local folder in diffusers layout),
        safetensors weights only, on the device and in the number format asked."""
        from diffusers import StableAudio3AudioToAudioPipeline

        how = (
            "The weights are gated: accept the Stability AI Community License on the model's "
            f"Hugging Face page, then run `huggingface-cli download {DEFAULT_STABLE_AUDIO_3_ID}` "
            "once on a machine with internet access (kept in the Hugging Face cache), or choose "
            "a local folder in diffusers layout."
        )
        pipe = load_pipeline(
            StableAudio3AudioToAudioPipeline, spec, local_files_only, "Stable Audio 3", how
        )
        backend = cls(pipe, spec.source)
        backend.spec = spec
        return backend

    def describe(self) -> str:
        return f"Stable Audio 3 {self.source or 'built in memory'} on {self.device}"

    def info(self) -> dict[str, Any]:
        info = {"engine": "stable-audio-3", "model": self.source, "device": str(self.device)}
        if self.spec is not None:
            info["spec"] = self.spec.to_dict()
        return info

    # -- what the engine asks ----------------------------------------------------------------

    def encode(self, song: Audio, kept: SongLatents | None, for_model: bool) -> SongLatents:
        """The song's SAME latents (deterministic: the same take every time)."""
        return kept if kept is not None else SongLatents(self.latents_of(song))

    def latents_of(self, song: Audio) -> torch.Tensor:
        """SAME latents (1, dim, frames) of mono audio at the model's rate, heard as stereo."""
        frames = math.ceil(song.frames / self.hop)
        samples = np.zeros((2, frames * self.hop), np.float32)
        samples[:, : song.frames] = song.samples[0]
        wave = torch.from_numpy(samples)[None].to(self.device, self.pipe.vae.dtype)
        with torch.no_grad():
            latents = self.pipe.vae.encode(wave).latents
        return latents[..., :frames].float()

    def loop_pad(self, length: int) -> int:
        return round(LOOP_CONTEXT_S * self.rate / self.hop) * self.hop

    def work(self, job: RenderJob, kept: SongLatents | None) -> dict[str, float]:
        """Units of work of each stage (seconds of song, DiT frame-steps, latent frames)."""
        lo, hi, _ = self._window(job)
        frames = hi - lo
        calls = sum(take.steps if take.denoise > 0 else 0 for take in job.takes)
        song_s = max(job.songs[0].frames, job.start + job.length) / self.rate
        encode = song_s if kept is None else 0.0
        if job.repaint is not None:
            encode += job.repaint.parent.frames / self.rate
            calls = sum(take.steps for take in job.takes)
        return {
            "encode": encode,
            "denoise": float(calls * frames),
            "decode": float(len(job.takes) * frames),
        }

    def render(
        self, job: RenderJob, encodings: Sequence[SongLatents], report: StagedProgress
    ) -> list[Render]:
        """Each take of ``job``: a variation of its song at the take's Denoise."""
        lo, hi, total = self._window(job)
        self._check_length(hi - lo)
        inner = job.length - 2 * job.loop_pad  # a loop's own length
        period = (
            (job.loop_pad // self.hop, max(1, round(inner / self.hop))) if job.loop_pad else None
        )
        noise = [NoiseStream(s.seed, total, self.dim, period) for s in job.takes]
        reference = torch.cat([e.latents[..., lo:hi] for e in encodings])
        waves = generate(self.pipe, reference, job.takes, noise, (lo, hi), report, self._prompts)
        cut = job.start - lo * self.hop
        results = []
        for song, settings, wave in zip(job.songs, job.takes, waves, strict=True):
            audio = limit_peak(wave.mean(0, keepdim=True)[:, cut : cut + job.length].cpu().numpy())
            source = song.samples[:, job.start : job.start + job.length].copy()
            results.append(self._render(audio, source, settings, job.start / self.rate, {}))
        return results

    def repaint(
        self, job: RenderJob, encoding: SongLatents, report: StagedProgress
    ) -> list[Render]:
        """Inpainting over the take: the frames of the region and its margins are made anew
        from noise, hearing the take around them as it is; the audio is spliced through the
        bounds' weight, so outside the region and its margins it is the parent's, sample for
        sample."""
        assert job.repaint is not None
        bounds, parent = job.repaint.bounds, job.repaint.parent
        frames = math.ceil(parent.frames / self.hop)
        centres = (np.arange(frames) + 0.5) * self.hop
        make = np.flatnonzero(bounds.weight_at(centres) > 0)
        context = math.ceil(REPAINT_CONTEXT_S * self.rate / self.hop)
        lo, hi = max(0, int(make[0]) - context), min(frames, int(make[-1]) + 1 + context)
        self._check_length(hi - lo)
        keep = torch.ones(hi - lo)
        keep[make - lo] = 0.0
        reference = self.latents_of(parent)[..., lo:hi].expand(len(job.takes), -1, -1)
        noise = [NoiseStream(s.seed, frames, self.dim) for s in job.takes]
        waves = generate(
            self.pipe, reference, job.takes, noise, (lo, hi), report, self._prompts, keep
        )
        a, b = lo * self.hop, min(hi * self.hop, parent.frames)
        weight = bounds.weight_at(np.arange(a, b) + 0.5)
        results = []
        for settings, wave in zip(job.takes, waves, strict=True):
            new = limit_peak(wave.mean(0, keepdim=True)[:, : b - a].cpu().numpy())
            spliced = parent.samples.copy()
            # Outside the region and its margins the weight is 0: the parent's samples, as
            # they were (x + 0 * y is x, exactly).
            spliced[:, a:b] = spliced[:, a:b] + weight * (new - spliced[:, a:b])
            source = job.songs[0].samples.copy()
            info = {"reroll": bounds.describe(self.rate)}
            results.append(self._render(spliced, source, settings, 0.0, info))
        return results

    # -- the model's parts ----------------------------------------------------------------------

    def _check_length(self, frames: int) -> None:
        """Refuse, with the limit, what the duration conditioning cannot say (never cut)."""
        seconds = frames * self.hop / self.rate
        if seconds > self.longest_s + self.hop / self.rate:
            raise NeuroChipError(
                f"Stable Audio 3 renders at most {self.longest_s:.0f} s in one piece; this "
                f"needs {seconds:.0f} s. Render the song in parts (Start and Duration), or "
                "choose Riffusion or ACE-Step for it whole."
            )

    def _window(self, job: RenderJob) -> tuple[int, int, int]:
        """(first, end) latent frames a job renders, and the song's frames: the region with a
        preview's context each side (the whole song for a render)."""
        total = math.ceil(max(job.songs[0].frames, job.start + job.length) / self.hop)
        if job.repaint is not None:
            return 0, total, total
        context = math.ceil(job.quality.context_columns * self.params.hop_length / self.hop)
        lo = max(0, job.start // self.hop - context)
        hi = min(total, math.ceil((job.start + job.length) / self.hop) + context)
        return lo, hi, total

    def _render(self, audio, source, settings, start_s: float, extra: dict) -> Render:
        source_image, level = self.picture(source)
        return Render(
            audio=Audio(audio, self.rate),
            source=Audio(source, self.rate),
            settings=settings,
            input_image=source_image,
            output_image=self.picture(audio, level)[0],
            start_s=start_s,
            info=self.info() | extra,
        )

    def picture(self, samples: np.ndarray, level: float | None = None):
        """The spectrogram picture of mono samples (10 ms columns, as every take's), and its
        level (the take's is drawn at its source's)."""
        amplitudes = mel_amplitudes(torch.from_numpy(np.ascontiguousarray(samples)), self.params)
        image, max_value = amplitudes_to_float_image(amplitudes, level)
        return image.cpu(), max_value
