"""The chip synth's drum kit: what channel 10, and any part given the ``drums`` voice, plays.

Channel 10 (GM drums) plays a small kit instead of pitched voices: one-shots that ignore
note-offs, bends and vibrato. Kick (35, 36: a sine falling from 150 to 50 Hz plus a click),
snares (38, 40: band-passed LFSR noise plus a 185-160 Hz tone), clap, side stick, toms
(pitched sine drops, 90 to 200 Hz), hi-hats (42, 44, 46: high-passed noise, closed 25-35 ms,
open 180 ms and choked by the next closed hat), crash/splash/china and ride cymbals
(high-passed noise, up to 0.5 s decay), bells and blocks (short sines); any other key gets a
short noise tick.

A hit's level is ``(velocity / 127) ** 2``, the General MIDI level curve, as for the
pitched voices of :mod:`neurochip.synth.chip`, which mixes the kit into each channel.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import signal

from neurochip.synth.common import _STEAL_RELEASE_S, _Clock, _lfsr_sequence, _mark, _Progress
from neurochip.synth.midi import Note


class _Tone(NamedTuple):
    """A sine whose pitch falls from ``hz * drop`` to ``hz`` (time constant ``drop_s``)."""

    hz: float
    decay_s: float
    level: float
    drop: float = 1.0
    drop_s: float = 0.03


class _DrumSound(NamedTuple):
    """A one-shot: sine tones plus filtered LFSR noise with an exponential decay."""

    length_s: float
    tones: tuple[_Tone, ...] = ()
    noise: str | None = None  # "white", "snare", "hat" or "cymbal"
    noise_decay_s: float = 0.05
    noise_level: float = 0.0


def _tom(hz: float) -> _DrumSound:
    return _DrumSound(0.5, (_Tone(hz, 0.2, 1.0, 1.6, 0.04),), "white", 0.02, 0.15)


def _conga(hz: float) -> _DrumSound:
    return _DrumSound(0.35, (_Tone(hz, 0.12, 0.8, 1.2, 0.02),), "white", 0.01, 0.1)


def _block(hz: float) -> _DrumSound:
    return _DrumSound(0.12, (_Tone(hz, 0.02, 0.7),))


def _bell(hz: float, decay_s: float) -> _DrumSound:
    # Two inharmonic partials: metal, not a pitched note.
    return _DrumSound(4 * decay_s, (_Tone(hz, decay_s, 0.4), _Tone(hz * 1.48, decay_s, 0.3)))


def _shaker(decay_s: float) -> _DrumSound:
    return _DrumSound(4 * decay_s, noise="hat", noise_decay_s=decay_s, noise_level=0.4)


_KICK = _DrumSound(0.35, (_Tone(50, 0.15, 1.0, 3.0, 0.03),), "white", 0.002, 0.5)
_SNARE = _DrumSound(0.3, (_Tone(160, 0.06, 0.5, 1.15, 0.02),), "snare", 0.09, 0.7)
_CRASH = _DrumSound(1.8, noise="cymbal", noise_decay_s=0.5, noise_level=0.45)
_RIDE = _DrumSound(1.2, (_Tone(3200, 0.3, 0.05),), "cymbal", 0.35, 0.3)
_TICK = _DrumSound(0.1, noise="hat", noise_decay_s=0.03, noise_level=0.35)
_HAT_OPEN = 46
_HAT_CHOKERS = (42, 44)

_DRUM_KIT: dict[int, _DrumSound] = {
    35: _KICK,
    36: _KICK,
    37: _DrumSound(0.06, (_Tone(800, 0.01, 0.5),), "white", 0.005, 0.4),  # side stick
    38: _SNARE,
    39: _DrumSound(0.25, noise="snare", noise_decay_s=0.05, noise_level=0.8),  # clap
    40: _SNARE,
    41: _tom(90),
    42: _DrumSound(0.15, noise="hat", noise_decay_s=0.025, noise_level=0.35),
    43: _tom(110),
    44: _DrumSound(0.18, noise="hat", noise_decay_s=0.035, noise_level=0.3),
    45: _tom(130),
    46: _DrumSound(0.7, noise="hat", noise_decay_s=0.18, noise_level=0.35),
    47: _tom(150),
    48: _tom(175),
    49: _CRASH,
    50: _tom(200),
    51: _RIDE,
    52: _DrumSound(1.5, noise="cymbal", noise_decay_s=0.4, noise_level=0.45),  # china
    53: _bell(800, 0.3),  # ride bell
    54: _shaker(0.1),  # tambourine
    55: _DrumSound(1.0, noise="cymbal", noise_decay_s=0.25, noise_level=0.4),  # splash
    56: _DrumSound(0.3, (_Tone(587, 0.08, 0.4), _Tone(845, 0.08, 0.4))),  # cowbell
    57: _CRASH,
    58: _shaker(0.15),  # vibraslap
    59: _RIDE,
    60: _conga(400),
    61: _conga(300),
    62: _conga(260),
    63: _conga(250),
    64: _conga(180),
    65: _conga(330),
    66: _conga(250),
    67: _bell(900, 0.1),  # agogo
    68: _bell(650, 0.1),
    69: _shaker(0.04),
    70: _shaker(0.03),
    73: _shaker(0.05),
    74: _shaker(0.12),
    75: _block(2500),  # claves
    76: _block(1200),  # wood blocks
    77: _block(900),
    78: _conga(500),  # cuica
    79: _conga(350),
    80: _bell(4000, 0.06),  # triangle (the instrument)
    81: _bell(4000, 0.4),
    82: _shaker(0.05),
}


@functools.lru_cache(maxsize=4)
def _noise_buffers(rate: int) -> dict[str, np.ndarray]:
    """Three seconds of LFSR noise, plain and filtered, each scaled to unit RMS."""
    white = np.resize(_lfsr_sequence(), 3 * rate)
    nyquist = rate / 2

    def filtered(kind: str, hz) -> np.ndarray:
        sos = signal.butter(4, hz, kind, fs=rate, output="sos")
        out = signal.sosfilt(sos, white)
        return out / np.sqrt(np.mean(out**2))

    return {
        "white": white,
        "snare": filtered("bandpass", [1000, min(8000, 0.9 * nyquist)]),
        "hat": filtered("highpass", min(7000, 0.8 * nyquist)),
        "cymbal": filtered("highpass", min(4000, 0.7 * nyquist)),
    }


@functools.lru_cache(maxsize=128)
def _drum_parts(sound: _DrumSound, rate: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The tonal part of a drum sound and the envelope of its noise part."""
    t = np.arange(round(sound.length_s * rate)) / rate
    tone = np.zeros_like(t)
    for part in sound.tones:
        hz = part.hz * (1 + (part.drop - 1) * np.exp(-t / part.drop_s))
        tone += part.level * np.exp(-t / part.decay_s) * np.sin(2 * np.pi * np.cumsum(hz) / rate)
    noise_envelope = None
    if sound.noise:
        noise_envelope = sound.noise_level * np.exp(-t / sound.noise_decay_s)
    # Fade the last 10 ms so a cut-off decay does not click.
    fade = min(len(t), round(0.01 * rate))
    ramp = np.linspace(1.0, 0.0, fade)
    tone[len(t) - fade :] *= ramp
    if noise_envelope is not None:
        noise_envelope[len(t) - fade :] *= ramp
    return tone, noise_envelope


def _render_drums(
    bus: np.ndarray, notes: Sequence[Note], clock: _Clock, report: _Progress, touched: np.ndarray
) -> None:
    """Add drum hits (one-shots: note-offs are ignored; closed hats choke the open hat).

    The chunks of ``bus`` they reach are marked in ``touched``.
    """
    rate, frames = clock.rate, clock.frames
    buffers = _noise_buffers(rate)
    chokes = sorted(n.start_s for n in notes if n.pitch in _HAT_CHOKERS)
    for note in notes:
        report.step()
        sound = _DRUM_KIT.get(note.pitch, _TICK)
        start = round(note.start_s * rate)
        if start >= frames:
            continue
        tone, noise_envelope = _drum_parts(sound, rate)
        length = min(len(tone), frames - start)
        if note.pitch == _HAT_OPEN:
            after = np.searchsorted(chokes, note.start_s, side="right")
            if after < len(chokes):
                length = min(length, round(chokes[after] * rate) - start)
        if length <= 0:
            continue
        hit = tone[:length].copy()
        if noise_envelope is not None and sound.noise is not None:
            noise = buffers[sound.noise]
            # A different stretch of noise per hit (deterministic), so hits are not clones.
            offset = (start * 2654435761) % (len(noise) - length)
            hit += noise_envelope[:length] * noise[offset : offset + length]
        if length < len(tone):  # choked: 5 ms fade
            fade = min(length, round(_STEAL_RELEASE_S * rate))
            hit[length - fade :] *= np.linspace(1.0, 0.0, fade)
        bus[start : start + length] += hit * (note.velocity / 127.0) ** 2
        _mark(touched, start, start + length)
