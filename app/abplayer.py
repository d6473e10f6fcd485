"""An A/B player: loop a region and switch between sources instantly, at the same position.

``ab_player({"Sketch": sketch, "Take": take}, key="preview_ab")`` draws one player in the page:
a Play button, one button per source ("A: Sketch", "B: Take", ...), a Loop toggle and a
position bar (click to jump). Keys, once the player has focus (click it): A/B/C/D switch,
Space plays and pauses, L toggles the loop, the arrows jump a second.

How: the page (``abplayer.html``, self-contained) gets the audio as base64 in the HTML and
decodes it with Web Audio. Every source starts on the same clock with the same offset, each
through its own gain, so a switch only moves gains (a 1.5 ms glide, no click): the position
cannot differ between sources. The shortest source sets the end. Identical arguments make
identical HTML, so a page rerun leaves a playing player alone; new audio (a new take) is a new
page in the frame, which comes back with the source, loop and position of the last one with
its key (the tab's sessionStorage), playing on if it was playing and the browser lets it.

Tests read ``window.abPlayer`` inside the frame and the ``data-*`` attributes of ``#player``.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path

import soundfile as sf
import streamlit as st

from neurochip.io.audio import Audio

TEMPLATE = Path(__file__).with_name("abplayer.html")
KEYS = "ABCD"
#: The most audio one player takes, all sources together (it travels inside the page):
#: about six minutes of 16-bit stereo 44.1 kHz. Pass a region for longer songs.
MAX_TOTAL_BYTES = 64 * 1024 * 1024
#: The frame's height: a row of buttons, the bar, the hint. (Streamlit's height="content" never
#: goes below the 150 px a frame starts with.) Give more where long labels wrap.
HEIGHT = 100


def ab_player(
    sources: Mapping[str, bytes | Audio],
    *,
    key: str,
    loop: tuple[float, float] | None = None,
    offset_s: float = 0.0,
    height: int = HEIGHT,
) -> None:
    """Draw an A/B player for 2 to 4 sources that play in step.

    Args:
        sources: Label -> audio, in button order (keys A, B, C, D). Audio is an
            :class:`Audio` or the bytes of a file the browser decodes (WAV, FLAC, OGG, MP3).
        key: Names this player: its source, loop and position carry over to new audio.
        loop: (start, end) in seconds to loop; default the whole clip (the shortest source).
            The loop is on at first; L or the Loop button turns it off.
        offset_s: Added to the times shown (where the clips start in the song).
        height: Of the frame in pixels; the default fits one row of buttons.

    Raises:
        ValueError: Fewer than 2 or more than 4 sources, an empty label, empty or unreadable
            audio, too much audio, or a loop that is not inside the clips.
    """
    st.iframe(
        player_html(sources, key=key, loop=loop, offset_s=offset_s),
        height=height,
        alt="A/B player: " + ", ".join(f"{KEYS[i]}: {name}" for i, name in enumerate(sources)),
    )


def player_html(
    sources: Mapping[str, bytes | Audio],
    *,
    key: str,
    loop: tuple[float, float] | None = None,
    offset_s: float = 0.0,
) -> str:
    """The player's self-contained page (what :func:`ab_player` shows)."""
    if not 2 <= len(sources) <= len(KEYS):
        raise ValueError(f"The A/B player takes 2 to 4 sources; got {len(sources)}.")
    encoded, durations, total = [], [], 0
    for label, audio in sources.items():
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"Each A/B source needs a label; got {label!r}.")
        data = _file_bytes(label, audio)
        durations.append(_duration_s(label, data))
        total += len(data)
        encoded.append({"label": label, "data": base64.b64encode(data).decode("ascii")})
    if total > MAX_TOTAL_BYTES:
        raise ValueError(
            f"The A/B sources are {total / 2**20:.0f} MB together; the player takes at most "
            f"{MAX_TOTAL_BYTES // 2**20} MB. Pass a region of the song instead."
        )
    shortest = min(durations)
    if loop is not None:
        start, end = (float(t) for t in loop)
        if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
            raise ValueError(f"The loop must be (start, end) with 0 <= start < end; got {loop}.")
        if start >= shortest:
            raise ValueError(
                f"The loop starts at {start:.2f} s, after the end of the shortest source "
                f"({shortest:.2f} s)."
            )
        loop = (start, min(end, shortest))
    if not math.isfinite(offset_s):
        raise ValueError(f"offset_s must be a number of seconds; got {offset_s}.")
    config = {"key": str(key), "sources": encoded, "loop": loop, "offset": float(offset_s)}
    # In a <script> element nothing may close it: "<" is escaped, so no label can.
    text = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
    return TEMPLATE.read_text(encoding="utf-8").replace("__CONFIG__", text)


def _file_bytes(label: str, audio: bytes | Audio) -> bytes:
    if isinstance(audio, Audio):
        if audio.frames == 0:
            raise ValueError(f"A/B source {label!r} is empty.")
        buffer = io.BytesIO()
        sf.write(buffer, audio.samples.T, audio.sample_rate, format="WAV", subtype="PCM_16")
        return buffer.getvalue()
    if isinstance(audio, (bytes, bytearray, memoryview)):
        if len(audio) == 0:
            raise ValueError(f"A/B source {label!r} is empty.")
        return bytes(audio)
    raise ValueError(f"A/B source {label!r} must be an Audio or file bytes; got {type(audio)}.")


def _duration_s(label: str, data: bytes) -> float:
    try:
        info = sf.info(io.BytesIO(data))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise ValueError(f"A/B source {label!r} is not audio soundfile can read: {err}") from err
    if info.frames <= 0 or info.samplerate <= 0:
        raise ValueError(f"A/B source {label!r} is empty.")
    return info.frames / info.samplerate
