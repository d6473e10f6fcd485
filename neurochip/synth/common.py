"""What the chip synth, its drum kit and the SoundFont renderer share.

The sample clock with its grid of control blocks (controller curves are stepped every
:data:`CONTROL_BLOCK` samples and interpolated in between) and of mixing chunks, voice
stealing (which the reader also needs, to estimate a song's work before it is played),
progress reporting, the NES noise channel's LFSR (heard in the chip's ``noise`` voice and in
the drums), the output level and the sample-rate check every render makes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from neurochip.errors import NeuroChipError

__all__ = ["CONTROL_BLOCK", "MAX_VOICES_PER_CHANNEL", "PEAK_LEVEL"]

CONTROL_BLOCK: int = 64
"""Samples per step of the controller curves (interpolated linearly in between)."""

MAX_VOICES_PER_CHANNEL: int = 16
"""Notes sounding at once on one channel before the oldest is stolen."""

# Samples per chunk of an oscillator or of a channel's mix: bounds the temporaries of a very
# long note, and a channel is only cleared and mixed in the chunks its notes reach.
_CHUNK = 1 << 16

PEAK_LEVEL: float = 0.89
"""Peak level of a render, about -1 dBFS."""

# Fade-out of a stolen voice or a choked hi-hat.
_STEAL_RELEASE_S = 0.005


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate < 8000:
        raise NeuroChipError(
            f"The sample rate must be a whole number of at least 8000 Hz; got {sample_rate}."
        )
    return int(sample_rate)


def _steal(starts: Sequence[float], ends: Sequence[float]) -> tuple[list[float], list[bool]]:
    """Notes' ends after voice stealing, and which notes were stolen.

    ``starts`` and ``ends`` are one channel's pitched notes. With
    :data:`MAX_VOICES_PER_CHANNEL` notes held, a new note ends the oldest one at its start.
    """
    ends = list(ends)
    stolen = [False] * len(starts)
    active: list[tuple[float, int]] = []  # (start, index) of the notes still held
    for index in sorted(range(len(starts)), key=starts.__getitem__):
        start = starts[index]
        active = [(s, i) for s, i in active if ends[i] > start]
        if len(active) >= MAX_VOICES_PER_CHANNEL:
            oldest = min(active)
            active.remove(oldest)
            ends[oldest[1]], stolen[oldest[1]] = start, True
        active.append((start, index))
    return ends, stolen


def _mark(touched: np.ndarray, start: int, stop: int) -> None:
    """Mark the :data:`_CHUNK` s of a bus that samples ``[start, stop)`` reach."""
    if stop > start:
        touched[start // _CHUNK : (stop - 1) // _CHUNK + 1] = True


class _Progress:
    """Reports the fraction of notes rendered, at most about every 1 %."""

    def __init__(self, callback: Callable[[float], None] | None, total: int) -> None:
        self.callback, self.total, self.count, self.reported = callback, max(total, 1), 0, 0.0
        if callback:
            callback(0.0)

    def step(self) -> None:
        self.count += 1
        fraction = self.count / self.total
        if self.callback and fraction - self.reported >= 0.01 and fraction < 1.0:
            self.reported = fraction
            self.callback(fraction)

    def done(self) -> None:
        if self.callback:
            self.callback(1.0)


@dataclass(frozen=True)
class _Clock:
    """Sample rate, length, and the grid of control blocks."""

    rate: int
    frames: int

    @functools.cached_property
    def block_times(self) -> np.ndarray:
        """Time of each block start; one block past the end so every sample has two."""
        return np.arange(self.frames // CONTROL_BLOCK + 2) * (CONTROL_BLOCK / self.rate)

    def expand(self, curve: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Per-sample values of a block curve on samples ``[start, stop)`` (linear)."""
        first, last = start // CONTROL_BLOCK, -(-stop // CONTROL_BLOCK)
        values = curve[first : last + 1]
        ramp = np.arange(CONTROL_BLOCK) / CONTROL_BLOCK
        per_sample = (values[:-1, None] + np.diff(values)[:, None] * ramp).ravel()
        offset = start - first * CONTROL_BLOCK
        return per_sample[offset : offset + stop - start]


@functools.lru_cache(maxsize=1)
def _lfsr_sequence() -> np.ndarray:
    """One period (32767 steps) of the NES noise channel's 15-bit LFSR, as +-1."""
    register, out = 1, np.empty(32767, dtype=np.float64)
    for i in range(32767):
        out[i] = 1.0 if register & 1 else -1.0
        feedback = (register ^ (register >> 1)) & 1
        register = (register >> 1) | (feedback << 14)
    return out
