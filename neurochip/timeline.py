"""A prompt timeline as composers write it: ``"0=soft strings"``, ``"bar 17=full funk band"``.

The engine takes :class:`~neurochip.settings.Section` objects in song seconds
(:attr:`RenderSettings.sections <neurochip.settings.RenderSettings.sections>`); this reads
them from text (the CLI's ``--section``, and any front end that takes typed sections):
``START=PROMPT`` with START in seconds or ``bar N`` (bars of the sketch), and an optional
``:DENOISE`` after the prompt (``"bar 17=full funk band:0.5"``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from neurochip.errors import NeuroChipError
from neurochip.settings import Section

_BAR = re.compile(r"^\s*bar\s+(\d+)\s*$", re.IGNORECASE)


def parse_section(text: str, bar_times_s: Sequence[float] | None = None) -> Section:
    """One section from ``"START=PROMPT[:DENOISE]"`` (START: seconds, or ``bar N``).

    Raises:
        NeuroChipError: Saying how to write it, for anything else.
    """
    where, sep, what = str(text).partition("=")
    if not sep or not what.strip():
        raise NeuroChipError(
            f'Write a section as START=PROMPT, e.g. "0=soft strings" or "bar 17=full funk '
            f'band" (got {text!r}).'
        )
    bar = _BAR.match(where)
    if bar:
        number = int(bar.group(1))
        if not bar_times_s:
            raise NeuroChipError(
                f"Bar {number}: this sketch's bars are not known; give the section's start in "
                "seconds."
            )
        if not 1 <= number <= len(bar_times_s):
            raise NeuroChipError(f"The song has bars 1 to {len(bar_times_s)}; no bar {number}.")
        start = float(bar_times_s[number - 1])
    else:
        try:
            start = float(where)
        except ValueError:
            raise NeuroChipError(
                f'A section starts at a number of seconds or at "bar N", not {where!r}.'
            ) from None
        if not math.isfinite(start) or start < 0:
            raise NeuroChipError(f"A section starts at 0 s or later, not {where!r}.")
    prompt, denoise = what.strip(), None
    head, colon, tail = prompt.rpartition(":")
    if colon:
        try:
            denoise = float(tail)
        except ValueError:
            pass  # a colon inside the prompt
        else:
            prompt = head.strip()
    return Section(start, prompt, denoise=denoise)


def parse_timeline(
    texts: Sequence[str], bar_times_s: Sequence[float] | None = None
) -> tuple[Section, ...]:
    """Sections from texts, in order of their start (two at one time are refused)."""
    return ordered_sections([parse_section(t, bar_times_s) for t in texts])


def ordered_sections(sections: Sequence[Section]) -> tuple[Section, ...]:
    """Sections in order of their start, as the engine takes them (two at one time refused)."""
    ordered = sorted(sections, key=lambda s: s.start_s)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if abs(a.start_s - b.start_s) < 1e-6:
            raise NeuroChipError(f"Two sections start at {a.start_s:g} s: keep one.")
    return tuple(ordered)


def one_bar_s(bar_times_s: Sequence[float] | None) -> float | None:
    """The length of a bar (the median), for a transition of one bar; None without bars."""
    if not bar_times_s or len(bar_times_s) < 2:
        return None
    lengths = sorted(b - a for a, b in zip(bar_times_s, bar_times_s[1:], strict=False))
    return float(lengths[len(lengths) // 2])
