"""A small NES-style chip tune, synthesised for tests and benchmarks.

No music files can be downloaded on these machines, so tests make their own: a pulse-wave
lead, a triangle bass and noise drums playing a public-domain folk tune ("Scarborough Fair"
opening) at 132 BPM, band-limited so it is clean up to Nyquist.
"""

from __future__ import annotations

import struct

import numpy as np

SAMPLE_RATE = 44100
BPM = 132.0

# (MIDI note or None for rest, beats)
MELODY = [
    (62, 2),
    (62, 1),
    (69, 2),
    (69, 1),
    (64, 1.5),
    (65, 0.5),
    (64, 1),
    (62, 3),
    (None, 1),
    (69, 1),
    (72, 1),
    (74, 2),
    (72, 1),
    (69, 1),
    (67, 1),
    (64, 1),
    (69, 3),
    (None, 2),
]
BASS = [(38, 3), (45, 3), (43, 3), (38, 3), (41, 3), (36, 3), (45, 3), (38, 3)]


def midi_to_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def pulse(freq: float, n: int, duty: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited pulse wave by additive synthesis (harmonics below 0.45 * sr)."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for k in range(1, int(0.45 * sr / freq) + 1):
        out += np.sin(np.pi * k * duty) / k * np.cos(2 * np.pi * k * freq * t)
    return out * (4 / np.pi) * 0.5


def triangle(freq: float, n: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(n) / sr
    out = np.zeros(n)
    for k in range(1, int(0.45 * sr / freq) + 1, 2):
        out += (-1) ** ((k - 1) // 2) / k**2 * np.sin(2 * np.pi * k * freq * t)
    return out * 8 / np.pi**2


def _envelope(n: int, attack: float, release: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    env = np.ones(n)
    a, r = min(n, int(attack * sr)), min(n, int(release * sr))
    env[:a] = np.linspace(0, 1, a, endpoint=False)
    if r:
        env[n - r :] *= np.linspace(1, 0, r)
    return env


def _voice(notes, seconds_per_beat, total, render, sr=SAMPLE_RATE) -> np.ndarray:
    out = np.zeros(total)
    t = 0.0
    while t * sr < total:
        for note, beats in notes:
            start, n = int(t * sr), int(beats * seconds_per_beat * sr * 0.92)
            t += beats * seconds_per_beat
            if note is None or start >= total:
                continue
            n = min(n, total - start)
            out[start : start + n] += render(midi_to_hz(note), n) * _envelope(n, 0.005, 0.03)
    return out


def _drums(seconds_per_beat: float, total: int, seed: int, sr: int = SAMPLE_RATE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(total)
    beat = 0
    while int(beat * seconds_per_beat * sr) < total:
        start = int(beat * seconds_per_beat * sr)
        kind = "kick" if beat % 2 == 0 else "snare"
        n = min(int((0.12 if kind == "kick" else 0.18) * sr), total - start)
        tt = np.arange(n) / sr
        if kind == "kick":  # a falling-pitch thump, as NES kicks do with the triangle channel
            hit = np.sin(2 * np.pi * (150 * tt - 400 * tt**2)) * np.exp(-tt * 30)
        else:
            hit = rng.uniform(-1, 1, n) * np.exp(-tt * 25) * 0.6
        out[start : start + n] += hit
        hat = min(int(0.03 * sr), total - start - int(seconds_per_beat * sr / 2))
        if hat > 0:
            h0 = start + int(seconds_per_beat * sr / 2)
            out[h0 : h0 + hat] += rng.uniform(-1, 1, hat) * np.exp(-np.arange(hat) / sr * 120) * 0.3
        beat += 1
    return out


def make_chiptune(
    seconds: float = 6.0, stereo: bool = False, seed: int = 0, sr: int = SAMPLE_RATE
) -> np.ndarray:
    """The tune, float32 shaped (channels, samples), peak about 0.8."""
    total = int(round(seconds * sr))
    spb = 60.0 / BPM
    lead = _voice(MELODY, spb, total, lambda f, n: pulse(f, n, 0.25, sr))
    bass = _voice(BASS, spb, total, lambda f, n: triangle(f, n, sr))
    drums = _drums(spb, total, seed, sr)
    if stereo:
        left = 0.75 * lead + 0.6 * bass + 0.35 * drums
        right = 0.45 * lead + 0.6 * bass + 0.55 * drums
        mix = np.stack([left, right])
    else:
        mix = (0.6 * lead + 0.6 * bass + 0.45 * drums)[None]
    return (mix / np.abs(mix).max() * 0.8).astype(np.float32)


def protracker_module() -> bytes:
    """A minimal 4-channel ProTracker module: one pattern of looped square-wave notes."""
    square = bytes([100] * 32 + [256 - 100] * 32)  # signed 8-bit
    words = len(square) // 2
    # name, length (words), finetune, volume, loop start (words), loop length (words)
    sample_1 = b"square".ljust(22, b"\0") + struct.pack(">HBBHH", words, 0, 64, 0, words)
    unused = bytes(22) + struct.pack(">HBBHH", 0, 0, 0, 0, 1)
    header = b"neurochip test".ljust(20, b"\0") + sample_1 + unused * 30
    header += bytes([1, 127]) + bytes(128) + b"M.K."  # song length, restart, orders
    pattern = bytearray(64 * 4 * 4)
    for row in range(0, 64, 8):
        # Amiga channels 0 and 1 are hard left and hard right.
        for channel, period in ((0, 428), (1, 320)):
            cell = (row * 4 + channel) * 4
            pattern[cell : cell + 4] = bytes([period >> 8, period & 0xFF, 1 << 4, 0])
    return header + bytes(pattern) + square
