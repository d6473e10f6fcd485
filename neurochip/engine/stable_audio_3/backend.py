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

import torch

from neurochip.engine.backend import Capabilities, Render, RenderJob
from neurochip.engine.device import MemoryProbe
from neurochip.engine.latent_audio import LatentAudioBackend, noise_period
from neurochip.engine.loading import load_pipeline
from neurochip.engine.progress import StagedProgress
from neurochip.engine.stable_audio_3.pipeline import NoiseStream, generate
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.model_spec import DEFAULT_STABLE_AUDIO_3_ID, KIND_KNOBS
from neurochip.spectrogram import SpectrogramParams

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


class StableAudio3Backend(LatentAudioBackend):
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
        wave = self.stereo(song).to(self.device, self.pipe.vae.dtype)
        with torch.no_grad():
            latents = self.pipe.vae.encode(wave).latents
        return latents[..., : math.ceil(song.frames / self.hop)].float()

    def loop_pad(self, length: int) -> int:
        return round(LOOP_CONTEXT_S * self.rate / self.hop) * self.hop

    def work(self, job: RenderJob, kept: SongLatents | None) -> dict[str, float]:
        """Units of work of each stage (seconds of song, DiT frame-steps, latent frames)."""
        lo, hi, _ = self.window(job)
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
        lo, hi, total = self.window(job)
        self._check_length(hi - lo)
        period = noise_period(job, self.hop)
        noise = [NoiseStream(s.seed, total, self.dim, period) for s in job.takes]
        reference = torch.cat([e.latents[..., lo:hi] for e in encodings])
        waves = generate(self.pipe, reference, job.takes, noise, (lo, hi), report, self._prompts)
        return self.takes_of(job, waves, lo)

    def repaint(
        self, job: RenderJob, encoding: SongLatents, report: StagedProgress
    ) -> list[Render]:
        """Inpainting over the take: the frames of the region and its margins are made anew
        from noise, hearing the take around them as it is; spliced into the parent take."""
        assert job.repaint is not None
        made, lo, hi = self.repaint_frames(job, REPAINT_CONTEXT_S)
        self._check_length(hi - lo)
        keep = torch.ones(hi - lo)
        keep[made - lo] = 0.0
        parent = self.latents_of(job.repaint.parent)
        frames = parent.shape[-1]
        noise = [NoiseStream(s.seed, frames, self.dim) for s in job.takes]
        reference = parent[..., lo:hi].expand(len(job.takes), -1, -1)
        waves = generate(
            self.pipe, reference, job.takes, noise, (lo, hi), report, self._prompts, keep
        )
        return self.spliced(job, waves, lo, hi)

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
