"""What the backends over a latent audio model share (ACE-Step, Stable Audio 3).

Such a model encodes audio to latent frames of ``hop`` samples, renders a stretch of them and
decodes it back to stereo. The engine's jobs map onto latent frames the same way for each:
which frames a job renders (its region with a preview's context each side), which frames a
re-roll makes anew and what it hears around them, how the new audio is spliced into the
parent take, and each take's mono audio and pictures. :class:`LatentAudioBackend` does that;
a backend sets ``rate``, ``hop`` and ``params`` and adds its model's calls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from neurochip.engine.backend import Render, RenderJob
from neurochip.io.audio import Audio, limit_peak
from neurochip.settings import RenderSettings
from neurochip.spectrogram import SpectrogramParams, amplitudes_to_float_image, mel_amplitudes


class LatentAudioBackend:
    """The latent-frame bookkeeping of a backend; see the module's docstring."""

    rate: int  # the model's sample rate
    hop: int  # samples per latent frame
    params: SpectrogramParams  # the pictures takes carry (10 ms columns, at ``rate``)

    def info(self) -> dict[str, Any]:
        raise NotImplementedError

    def window(self, job: RenderJob) -> tuple[int, int, int]:
        """(first, end) latent frames a job renders, and the song's frames: the region with a
        preview's context each side (the whole song for a render)."""
        total = math.ceil(max(job.songs[0].frames, job.start + job.length) / self.hop)
        if job.repaint is not None:
            return 0, total, total
        context = math.ceil(job.quality.context_columns * self.params.hop_length / self.hop)
        lo = max(0, job.start // self.hop - context)
        hi = min(total, math.ceil((job.start + job.length) / self.hop) + context)
        return lo, hi, total

    def repaint_frames(self, job: RenderJob, context_s: float) -> tuple[np.ndarray, int, int]:
        """A re-roll's latent frames: those made anew (where the bounds' weight is above 0 at
        their centres), and the (first, end) frames rendered, ``context_s`` of the take each
        side of them heard as it is."""
        assert job.repaint is not None
        frames = math.ceil(job.repaint.parent.frames / self.hop)
        centres = (np.arange(frames) + 0.5) * self.hop
        made = np.flatnonzero(job.repaint.bounds.weight_at(centres) > 0)
        context = math.ceil(context_s * self.rate / self.hop)
        return made, max(0, int(made[0]) - context), min(frames, int(made[-1]) + 1 + context)

    def takes_of(
        self, job: RenderJob, waves: torch.Tensor, lo: int, extra: dict[str, Any] | None = None
    ) -> list[Render]:
        """Each take of a render: its wave (stereo, from latent frame ``lo``) mixed to mono and
        cut to the job's region, with its song's same samples as the source (``extra``: more
        for its info)."""
        cut = job.start - lo * self.hop
        results = []
        for song, settings, wave in zip(job.songs, job.takes, waves, strict=True):
            audio = limit_peak(wave.mean(0, keepdim=True)[:, cut : cut + job.length].cpu().numpy())
            source = song.samples[:, job.start : job.start + job.length].copy()
            results.append(self.take(audio, source, settings, job.start / self.rate, extra or {}))
        return results

    def spliced(self, job: RenderJob, waves: torch.Tensor, lo: int, hi: int) -> list[Render]:
        """Each re-rolled take: its wave (frames ``lo`` .. ``hi``) spliced into the parent
        through the bounds' weight, so outside the region and its margins the take is the
        parent's, sample for sample."""
        assert job.repaint is not None
        bounds, parent = job.repaint.bounds, job.repaint.parent
        a, b = lo * self.hop, min(hi * self.hop, parent.frames)
        weight = bounds.weight_at(np.arange(a, b) + 0.5)
        extra = {"reroll": bounds.describe(self.rate)}
        results = []
        for settings, wave in zip(job.takes, waves, strict=True):
            new = limit_peak(wave.mean(0, keepdim=True)[:, : b - a].cpu().numpy())
            audio = parent.samples.copy()
            # Outside the region and its margins the weight is 0: the parent's samples, as
            # they were (x + 0 * y is x, exactly).
            audio[:, a:b] = audio[:, a:b] + weight * (new - audio[:, a:b])
            source = job.songs[0].samples.copy()
            results.append(self.take(audio, source, settings, 0.0, extra))
        return results

    def take(
        self,
        audio: np.ndarray,
        source: np.ndarray,
        settings: RenderSettings,
        start_s: float,
        extra: dict[str, Any],
    ) -> Render:
        """A finished take: its audio and source (mono, at the model's rate) and pictures."""
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

    def stereo(self, song: Audio) -> torch.Tensor:
        """Mono audio at the model's rate as the stereo wave (1, 2, frames x hop) its encoder
        takes: both channels the song, zeros after it to a whole latent frame."""
        frames = math.ceil(song.frames / self.hop)
        samples = np.zeros((2, frames * self.hop), np.float32)
        samples[:, : song.frames] = song.samples[0]
        return torch.from_numpy(samples)[None]


def noise_period(job: RenderJob, hop: int) -> tuple[int, int] | None:
    """(offset, length) in latent frames of a loop's repeating noise; None for no loop."""
    if not job.loop_pad:
        return None
    inner = job.length - 2 * job.loop_pad  # a loop's own length
    return job.loop_pad // hop, max(1, round(inner / hop))
