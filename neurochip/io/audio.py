"""The :class:`Audio` type every part of NeuroChip passes around, and two helpers for it.

Float32 samples shaped ``(channels, frames)`` and a sample rate; nothing else. Reading files is
:mod:`neurochip.io.decode`, writing them :mod:`neurochip.io.write`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import soxr

from neurochip.errors import NeuroChipError

SAMPLE_RATE: int = 44100
"""The sample rate neurochip works at, and what ``load_audio`` returns by default."""


@dataclass(eq=False, repr=False)
class Audio:
    """Audio samples and their sample rate.

    Args:
        samples: Samples shaped ``(channels, frames)``, nominally in ``[-1, 1]``. Stored as
            a C-contiguous float32 array (converted if needed); a 1-D array is taken as
            mono.
        sample_rate: Frames per second.

    Raises:
        ValueError: If ``samples`` is not 1-D or 2-D, looks like ``(frames, channels)``,
            or ``sample_rate`` is not a positive integer.

    Methods that change nothing (``to_mono`` on mono audio, ``resample`` to the same
    rate, ...) return ``self``; treat an :class:`Audio` as immutable.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        samples = np.asarray(self.samples, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[np.newaxis, :]
        if samples.ndim != 2 or samples.shape[0] == 0:
            raise ValueError(
                f"Audio samples must be shaped (channels, frames); got shape {samples.shape}"
            )
        if samples.shape[0] > 64:
            # Nobody feeds 65+ channels to neurochip; this is soundfile's (frames, channels).
            raise ValueError(
                f"Audio samples must be shaped (channels, frames); got shape {samples.shape}"
                " (transpose it?)"
            )
        self.samples = np.ascontiguousarray(samples)
        if isinstance(self.sample_rate, bool) or int(self.sample_rate) != self.sample_rate:
            raise ValueError(f"sample_rate must be an integer; got {self.sample_rate!r}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive; got {self.sample_rate!r}")
        self.sample_rate = int(self.sample_rate)

    def __repr__(self) -> str:
        return (
            f"Audio(channels={self.channels}, frames={self.frames}, "
            f"sample_rate={self.sample_rate}, duration_s={self.duration_s:.3f})"
        )

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        """Number of frames (samples per channel)."""
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    def to_mono(self) -> Audio:
        """The mean of all channels, shaped ``(1, frames)``."""
        if self.channels == 1:
            return self
        return Audio(self.samples.mean(axis=0, keepdims=True), self.sample_rate)

    def to_stereo(self) -> Audio:
        """Two channels: mono is duplicated, stereo returned as is.

        With more than two channels the first two are kept and the rest dropped: front
        left and right in WAV and FLAC order. A proper downmix needs the file's channel
        layout, which an array does not carry; :func:`load_audio` therefore has ffmpeg
        downmix such files and only falls back to this when ffmpeg is missing.
        """
        if self.channels == 2:
            return self
        if self.channels == 1:
            return Audio(np.repeat(self.samples, 2, axis=0), self.sample_rate)
        return Audio(self.samples[:2], self.sample_rate)

    def span(self, start_s: float = 0.0, duration_s: float | None = None) -> Audio:
        """An exact excerpt.

        Args:
            start_s: Start time; the excerpt starts at frame ``round(start_s * sample_rate)``.
            duration_s: Length; ``round(duration_s * sample_rate)`` frames, cut short at the
                end of the audio. ``None`` means up to the end.

        Raises:
            NeuroChipError: If the start is negative or not before the end, or the duration
                is not positive.
        """
        start, stop = span_frames(self.frames, self.sample_rate, start_s, duration_s)
        return Audio(self.samples[:, start:stop].copy(), self.sample_rate)

    def resample(self, sample_rate: int) -> Audio:
        """The same audio at another sample rate (soxr, very high quality).

        The result has ``round(frames * sample_rate / self.sample_rate)`` frames, give or
        take one.
        """
        if sample_rate == self.sample_rate:
            return self
        if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer; got {sample_rate!r}")
        resampled = soxr.resample(self.samples.T, self.sample_rate, int(sample_rate), quality="VHQ")
        return Audio(np.ascontiguousarray(resampled.T, dtype=np.float32), int(sample_rate))


T = TypeVar("T")  # a numpy array or a torch tensor


def limit_peak(samples: T, ceiling: float = 0.99) -> T:
    """Scale down (never up) so the peak is at most ``ceiling``: a file that cannot clip.

    Works on numpy arrays and torch tensors alike (renders are tensors, mixes are arrays).
    """
    peak = 0.0 if 0 in samples.shape else float(abs(samples).max())
    return samples * (ceiling / peak) if peak > ceiling else samples


def fade_ramp(length: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A raised-cosine ramp from 0 to 1 over ``length`` samples (sample centres): the gain
    of the incoming side of a crossfade between two versions of the same music."""
    return (0.5 - 0.5 * np.cos(np.pi * (np.arange(length) + 0.5) / length)).astype(dtype)


def format_duration(seconds: float) -> str:
    """A length as people say it: "42.0 s", "3 min 05 s", "1 h 02 min 00 s"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min {rest:02d} s"
    return f"{minutes} min {rest:02d} s"


def span_frames(
    frames: int, sample_rate: int, start_s: float = 0.0, duration_s: float | None = None
) -> tuple[int, int]:
    """The first frame and the frame after the last of :meth:`Audio.span` in audio of
    ``frames`` frames: a span can be checked before the audio exists.

    Raises:
        NeuroChipError: As :meth:`Audio.span` does.
    """
    if not math.isfinite(start_s) or start_s < 0:
        raise NeuroChipError(f"The start time must be 0 s or later; got {start_s} s.")
    start = round(start_s * sample_rate)
    if start >= frames:
        raise NeuroChipError(
            f"The start time {start_s:g} s is past the end of the audio, which is "
            f"{format_duration(frames / sample_rate)} long."
        )
    if duration_s is None:
        stop = frames
    else:
        if not duration_s > 0:  # also catches NaN
            raise NeuroChipError(f"The duration must be more than 0 s; got {duration_s} s.")
        stop = frames
        if math.isfinite(duration_s):
            stop = min(start + round(duration_s * sample_rate), frames)
        if stop <= start:
            raise NeuroChipError(
                f"A duration of {duration_s} s is shorter than one sample at {sample_rate} Hz."
            )
    return start, stop
