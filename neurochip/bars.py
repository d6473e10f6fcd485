"""Where the bars of an audio sketch fall: a tempo and a first downbeat.

A MIDI sketch knows its bars (its tempo map: :func:`neurochip.faithfulness.midi_bar_times`).
A WAV, MP3 or tracker rip does not, so composers say them: a BPM and where bar 1 starts,
prefilled by beat tracking (librosa's ``beat_track``) and theirs to correct. The grid is
steady (one tempo, one metre), as chip music almost always is; a song that changes tempo is
better given as MIDI, or its region in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio

#: The tempi a grid may have: slower or faster is a wrong guess or a typing slip.
MIN_BPM, MAX_BPM = 30.0, 300.0


@dataclass(frozen=True)
class BarGrid:
    """A steady bar grid: ``bpm`` beats a minute, ``beats_per_bar`` to a bar, bar 1 at
    ``downbeat_s`` (anything before it is a pickup)."""

    bpm: float
    downbeat_s: float = 0.0
    beats_per_bar: int = 4

    def __post_init__(self) -> None:
        if not (math.isfinite(self.bpm) and MIN_BPM <= self.bpm <= MAX_BPM):
            raise NeuroChipError(f"A tempo of {self.bpm:g} BPM? Give {MIN_BPM:g} to {MAX_BPM:g}.")
        if not (math.isfinite(self.downbeat_s) and self.downbeat_s >= 0):
            raise NeuroChipError(f"Bar 1 must start at 0 s or later, not {self.downbeat_s:g} s.")
        if not 1 <= int(self.beats_per_bar) <= 16:
            raise NeuroChipError(f"{self.beats_per_bar} beats to a bar? Give 1 to 16.")

    @property
    def bar_s(self) -> float:
        return 60.0 * self.beats_per_bar / self.bpm

    def bar_times(self, duration_s: float) -> list[float]:
        """Where each bar starts (bar 1 first), up to ``duration_s``."""
        count = max(0, math.ceil((duration_s - self.downbeat_s) / self.bar_s - 1e-9))
        return [self.downbeat_s + k * self.bar_s for k in range(count)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bpm": round(float(self.bpm), 3),
            "downbeat_s": round(float(self.downbeat_s), 4),
            "beats_per_bar": int(self.beats_per_bar),
        }

    @classmethod
    def from_dict(cls, data: Any) -> BarGrid | None:
        """The grid a dict describes, or None for anything that is not one (old files)."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                float(data["bpm"]),
                float(data.get("downbeat_s", 0.0)),
                int(data.get("beats_per_bar", 4)),
            )
        except (KeyError, TypeError, ValueError, NeuroChipError):
            return None


def estimate_bar_grid(audio: Audio, beats_per_bar: int = 4) -> BarGrid | None:
    """Guess a song's bar grid by beat tracking; None where no steady beat is found.

    The tempo and beats come from librosa's ``beat_track``; bar 1 is the beat, among the
    first ``beats_per_bar``, whose every ``beats_per_bar``-th beat is loudest on average
    (downbeats carry the accents in most chip music: kick, bass note, chord change).
    """
    import librosa  # imported on first use: it takes seconds (numba)

    mono = audio.to_mono().samples[0].astype(np.float32)
    if mono.size < audio.sample_rate or not np.any(mono):
        return None
    hop = 512
    onset = librosa.onset.onset_strength(y=mono, sr=audio.sample_rate, hop_length=hop)
    tempo, beats = librosa.beat.beat_track(
        onset_envelope=onset, sr=audio.sample_rate, hop_length=hop, units="frames"
    )
    bpm = float(np.atleast_1d(tempo)[0])
    if len(beats) < 2 * beats_per_bar or not MIN_BPM <= bpm <= MAX_BPM:
        return None
    # The beat period from the beats themselves (beat_track's tempo is on a coarse grid).
    times = librosa.frames_to_time(beats, sr=audio.sample_rate, hop_length=hop)
    period = float(np.median(np.diff(times)))
    if period > 0 and MIN_BPM <= 60.0 / period <= MAX_BPM:
        bpm = 60.0 / period
    accents = [float(np.mean(onset[beats[p::beats_per_bar]])) for p in range(beats_per_bar)]
    first = int(np.argmax(accents))
    # Bar 1 is the earliest downbeat: step back whole bars from the first one found.
    downbeat = float(times[first])
    bar_s = 60.0 * beats_per_bar / bpm
    downbeat -= bar_s * math.floor(downbeat / bar_s)
    return BarGrid(round(bpm, 2), round(downbeat, 3), beats_per_bar)
