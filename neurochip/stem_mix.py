"""The stem mixer: each stem's gain, pan, mute and solo, and the mix they make."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio, limit_peak
from neurochip.settings import describe, setting_field

#: The range of a stem's gain in dB (:attr:`StemMix.gain_db`, the mixer's fader).
GAIN_DB = (-24.0, 12.0)


@dataclass(frozen=True)
class StemMix:
    """One stem's fader on the mixer: what the mix makes of the stem, never the stem itself."""

    # The ranges are the mixer's sliders' and the limit on any mix (a file's, stems.json's):
    # past +12 dB a stem only clips the mix, and 10 ** (gain / 20) of a huge gain overflows.
    gain_db: float = setting_field(
        0.0,
        label="Gain (dB)",
        help=f"Louder or softer in the mix, {GAIN_DB[0]:+g} to {GAIN_DB[1]:+g} dB.",
        minimum=GAIN_DB[0],
        maximum=GAIN_DB[1],
        step=0.5,
    )
    pan: float = setting_field(
        0.0,
        label="Pan",
        help="-1 hard left, 0 centre, 1 hard right (constant power).",
        minimum=-1.0,
        maximum=1.0,
        step=0.05,
    )
    mute: bool = setting_field(False, label="Mute", help="Leave this stem out of the mix.")
    solo: bool = setting_field(
        False, label="Solo", help="Hear only the soloed stems (mute still wins)."
    )

    def __post_init__(self) -> None:
        for name, unit in (("gain_db", " dB"), ("pan", "")):
            value, about = getattr(self, name), describe(StemMix, name)
            low, high = about.minimum, about.maximum
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not number or not low <= value <= high:  # NaN is never in range
                shown = f"{value:g}" if isinstance(value, float) else repr(value)[:40]
                raise NeuroChipError(
                    f"A stem's {name.split('_')[0]} must be from {low:+g} to {high:+g}{unit}, "
                    f"not {shown}."
                )
        for name in ("mute", "solo"):
            if not isinstance(getattr(self, name), bool):
                raise NeuroChipError(
                    f"A stem's {name} must be true or false, not {getattr(self, name)!r:.40}."
                )

    @classmethod
    def from_dict(cls, data: Any) -> StemMix:
        if not isinstance(data, Mapping):
            raise NeuroChipError(f"A stem's mix must be a table, not {data!r:.40}.")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --- the instrument map ---------------------------------------------------------------------


def stem_gains(stem: Audio, mix: StemMix, heard: bool) -> tuple[float, float]:
    """(left, right) gains of a stem in the mix: its gain, panned with constant power (a
    centred stem at -3 dB each side), or 0 where it is muted or another stem is soloed."""
    if not heard:
        return 0.0, 0.0
    gain = 10 ** (mix.gain_db / 20)
    if stem.channels == 1:
        angle = (mix.pan + 1) * math.pi / 4
        return gain * math.cos(angle), gain * math.sin(angle)
    # A stereo stem (a stereo pair) keeps its image: pan turns one side down (balance).
    return gain * min(1.0, 1.0 - mix.pan), gain * min(1.0, 1.0 + mix.pan)


def heard_stems(mixes: Sequence[StemMix]) -> list[bool]:
    """Which stems the mix plays: not muted, and soloed where any stem is."""
    soloing = any(m.solo for m in mixes)
    return [not m.mute and (m.solo or not soloing) for m in mixes]


def mix_stems(stems: Sequence[Audio], mixes: Sequence[StemMix]) -> Audio:
    """The stereo mix of stems at their faders: the sum of each stem times its (left, right)
    gains (:func:`stem_gains`), scaled down as a whole only where it would clip.

    Raises:
        NeuroChipError: For stems of different lengths or rates, or a mixer per stem missing.
    """
    if not stems or len(stems) != len(mixes):
        raise NeuroChipError(f"{len(mixes)} mixer settings for {len(stems)} stems.")
    if len({(s.frames, s.sample_rate) for s in stems}) > 1:
        raise NeuroChipError("These stems do not line up: mix stems of one render.")
    out = np.zeros((2, stems[0].frames), dtype=np.float32)
    for stem, mix, heard in zip(stems, mixes, heard_stems(mixes), strict=True):
        left, right = stem_gains(stem, mix, heard)
        samples = stem.samples
        out[0] += np.float32(left) * samples[0]
        out[1] += np.float32(right) * samples[-1]
    return Audio(limit_peak(out), stems[0].sample_rate)


# --- export ---------------------------------------------------------------------------------
