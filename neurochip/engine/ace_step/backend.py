"""ACE-Step 1.5 as a NeuroChip backend: covers of a sketch, repaint for re-rolls, a part added.

The song, at 48 kHz, is encoded once by ACE-Step's VAE (25 latent frames a second) and, for
covers, through its audio tokenizer into the semantic latents a cover follows; then the DiT
makes each take from noise in a few flow-matching steps
(:mod:`~neurochip.engine.ace_step.pipeline`), and the VAE decodes it. ACE-Step's output is
stereo; takes are mixed to mono, as every NeuroChip take is (a stereo pair is two takes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from neurochip.engine.ace_step.pipeline import Task, context_latents, generate, take_noise
from neurochip.engine.backend import Capabilities, Render, RenderJob
from neurochip.engine.device import MemoryProbe
from neurochip.engine.latent_audio import LatentAudioBackend, noise_period
from neurochip.engine.loading import load_pipeline
from neurochip.engine.progress import StagedProgress
from neurochip.errors import ModelLoadError
from neurochip.io.audio import Audio
from neurochip.model_spec import DEFAULT_ACE_STEP_ID
from neurochip.spectrogram import SpectrogramParams

if TYPE_CHECKING:
    from neurochip.model_spec import ModelSpec

#: The instruments ACE-Step can add as a part of their own (its "lego" track names).
TRACKS = (
    "drums",
    "bass",
    "guitar",
    "keyboard",
    "percussion",
    "strings",
    "synth",
    "brass",
    "woodwinds",
    "fx",
    "vocals",
    "backing_vocals",
)

#: Seconds of the take on each side of a re-rolled region that the model hears as it is.
REPAINT_CONTEXT_S = 10.0

#: A loop is rendered with this much of itself wrapped round each side (in latent frames,
#: 2.56 s as Riffusion's), its noise repeating with the loop.
LOOP_CONTEXT_FRAMES = 64

#: Seconds per unit of each stage before this device's are measured (the tests' tiny model on
#: a 2-core CPU): encode per second of song, denoise per DiT frame-step, decode per frame.
PRIOR_RATES = {"encode": 2e-3, "denoise": 2e-5, "decode": 2e-4}


@dataclass
class SongLatents:
    """What the backend keeps of a song: its VAE latents and, for covers, their semantic
    version (1, frames, dim) each."""

    acoustic: torch.Tensor
    semantic: torch.Tensor

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.acoustic, self.semantic))


class AceStepBackend(LatentAudioBackend):
    """Renders with one loaded diffusers :class:`~diffusers.AceStepPipeline`."""

    prior_rates = PRIOR_RATES
    estimate_needs = frozenset({"denoise", "decode"})

    def __init__(self, pipe: Any, source: str = "") -> None:
        self.pipe = self.model = pipe
        self.source = source
        self.spec: ModelSpec | None = None
        self.device = pipe.transformer.device
        self.rate = int(pipe.sample_rate)
        self.hop = round(self.rate / pipe.latents_per_second)  # samples per latent frame
        self.dim = int(pipe.transformer.config.audio_acoustic_hidden_dim)
        self.params = SpectrogramParams(sample_rate=self.rate)  # the pictures takes carry
        self.memory = MemoryProbe(self.device, None)
        self.capabilities = Capabilities(
            sample_rate=self.rate,
            channels=1,
            probe_frames=10 * self.rate,
            longest_s=600.0,
            loops=True,
            sections=False,
            repaint=True,
            batching=True,
            parts=TRACKS,
            knobs=("prompt", "cover_strength", "steps", "shift", "seed")
            + (() if self.turbo else ("guidance",)),
        )
        self._prompts: dict = {}

    @property
    def turbo(self) -> bool:
        """A turbo checkpoint has guidance distilled into it: no guidance knob."""
        return bool(getattr(self.pipe, "is_turbo", False))

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, local_files_only: bool | None = None, **_: Any
    ) -> AceStepBackend:
        """The checkpoint ``spec`` names (hub id or local folder in diffusers layout),
        safetensors weights only, on the device and in the number format asked."""
        from diffusers import AceStepPipeline

        how = (
            f"To get them: run `huggingface-cli download {DEFAULT_ACE_STEP_ID}` once on a "
            "machine with internet access (kept in the Hugging Face cache), or choose a local "
            "folder in diffusers layout."
        )
        pipe = load_pipeline(AceStepPipeline, spec, local_files_only, "ACE-Step", how)
        backend = cls(pipe, spec.source)
        backend.spec = spec
        return backend

    def describe(self) -> str:
        kind = "turbo" if self.turbo else "base"
        return f"ACE-Step 1.5 ({kind}) {self.source or 'built in memory'} on {self.device}"

    def info(self) -> dict[str, Any]:
        info = {"engine": "ace-step", "model": self.source, "device": str(self.device)}
        if self.spec is not None:
            info["spec"] = self.spec.to_dict()
        return info

    # -- what the engine asks ----------------------------------------------------------------

    def encode(self, song: Audio, kept: SongLatents | None, for_model: bool) -> SongLatents:
        """The song's VAE latents (the posterior's mean: the same take every time) and their
        semantic version through the audio tokenizer, as a cover hears the source."""
        if kept is not None:
            return kept
        acoustic = self.latents_of(song)
        pipe = self.pipe
        if pipe.audio_tokenizer is None or pipe.audio_token_detokenizer is None:
            raise ModelLoadError(
                "This ACE-Step checkpoint has no audio tokenizer, which covers need: choose "
                "one that ships it (the diffusers conversions of ACE-Step 1.5 do)."
            )
        with torch.no_grad():
            silence = pipe.condition_encoder.silence_latent.to(self.device, acoustic.dtype)
            codes, _ = pipe.audio_tokenizer.tokenize(acoustic, silence)
            semantic = pipe.audio_token_detokenizer(codes)[:, : acoustic.shape[1]]
        return SongLatents(acoustic, semantic.contiguous())

    def latents_of(self, song: Audio) -> torch.Tensor:
        """VAE latents (1, frames, dim) of mono audio at the model's rate, heard as stereo."""
        frames = math.ceil(song.frames / self.hop)
        wave = self.stereo(song).to(self.device, self.pipe.vae.dtype)
        with torch.no_grad():
            latents = self.pipe.vae.encode(wave).latent_dist.mean
        return latents.transpose(1, 2)[:, :frames].to(self.pipe.transformer.dtype)

    def loop_pad(self, length: int) -> int:
        return LOOP_CONTEXT_FRAMES * self.hop

    def work(self, job: RenderJob, kept: SongLatents | None) -> dict[str, float]:
        """Units of work of each stage (seconds of song, DiT frame-steps, latent frames)."""
        lo, hi, _ = self.window(job)
        frames = hi - lo
        calls = sum(
            take.steps * (1 + (take.cover_strength < 1) + (take.guidance > 1 and not self.turbo))
            for take in job.takes
        )
        song_s = max(job.songs[0].frames, job.start + job.length) / self.rate
        encode = song_s if kept is None else 0.0
        if job.repaint is not None:
            encode += job.repaint.parent.frames / self.rate
        return {
            "encode": encode,
            "denoise": float(calls * frames),
            "decode": float(len(job.takes) * frames),
        }

    def render(
        self, job: RenderJob, encodings: Sequence[SongLatents], report: StagedProgress
    ) -> list[Render]:
        """Each take of ``job``: a cover of its song (or, with ``job.part``, that instrument
        alone, made to play along with the song)."""
        lo, hi, total = self.window(job)
        if job.part:
            task = Task("lego", job.part)
            heard = [context_latents(e.acoustic[:, lo:hi], torch.ones(hi - lo)) for e in encodings]
        else:
            task = Task("cover")
            heard = [context_latents(e.semantic[:, lo:hi], torch.ones(hi - lo)) for e in encodings]
        period = noise_period(job, self.hop)
        noise = [take_noise(s.seed, total, self.dim, period)[:, lo:hi] for s in job.takes]
        waves = generate(
            self.pipe,
            torch.cat(heard),
            job.takes,
            task,
            torch.cat(noise),
            report,
            duration_s=(job.songs[0].frames - 2 * job.loop_pad) / self.rate,
            prompt_cache=self._prompts,
        )
        return self.takes_of(job, waves, lo, {"part": job.part} if job.part else None)

    def repaint(
        self, job: RenderJob, encoding: SongLatents, report: StagedProgress
    ) -> list[Render]:
        """ACE-Step's repaint over the take: the frames of the region and its margins are
        made anew, hearing the take around them as it is; the audio is spliced through the
        bounds' weight, so outside the region and its margins it is the parent's, sample for
        sample."""
        assert job.repaint is not None
        parent = job.repaint.parent
        made, lo, hi = self.repaint_frames(job, REPAINT_CONTEXT_S)
        frames = math.ceil(parent.frames / self.hop)
        make = torch.zeros(frames)
        make[made] = 1.0
        silence = self.pipe.condition_encoder.silence_latent[0, : hi - lo]
        heard = context_latents(self.latents_of(parent)[:, lo:hi], make[lo:hi], silence)
        noise = [take_noise(s.seed, frames, self.dim)[:, lo:hi] for s in job.takes]
        waves = generate(
            self.pipe,
            heard.expand(len(job.takes), -1, -1),
            job.takes,
            Task("repaint"),
            torch.cat(noise),
            report,
            duration_s=parent.frames / self.rate,
            prompt_cache=self._prompts,
        )
        return self.spliced(job, waves, lo, hi)

    # -- the model's parts ----------------------------------------------------------------------
