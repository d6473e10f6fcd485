"""Takes as files: the settings every rendered file carries, embedded and in a sidecar.

Every file NeuroChip renders embeds its settings as JSON (in the WAV/FLAC/OGG comment) and has
a ``.json`` sidecar beside it, so any take can be reproduced, even after an MP3 export or a DAW
that drops metadata. The JSON (see :func:`take_metadata`) says what the file is (``kind``),
the settings of each take in it keyed by the take's name (``"A"``, ``"B"``), and where it came
from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neurochip import __version__
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import read_metadata, save_audio, write_text_atomically
from neurochip.settings import RenderSettings

METADATA_FORMAT = "neurochip-take"


def take_metadata(
    kind: str,
    settings: dict[str, RenderSettings],
    source_name: str | None = None,
    info: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON a take carries: what it is, the settings of each take in it, and provenance.

    ``kind`` is e.g. "take", "stereo pair" or "crossfade comparison"; ``settings`` maps take
    names ("A", "B") to their settings: a single take is keyed by its own name, so take B of
    a pair says it is take B.

    ``extra`` fields are added as they are; :func:`~neurochip.takeset.render_take_set` adds
    ``"faithfulness"``: the note-faithfulness meter's result (see :func:`faithfulness_score`).
    """
    return {
        "format": METADATA_FORMAT,
        "neurochip": __version__,
        "kind": kind,
        "source": source_name,
        "takes": {name: s.to_dict() for name, s in settings.items()},
        **(info or {}),
        **extra,
    }


def faithfulness_score(metadata: Mapping[str, Any]) -> float | None:
    """A take's note-faithfulness score (0 to 1, see :mod:`neurochip.faithfulness`), or ``None``.

    ``metadata["faithfulness"]`` is what :func:`~neurochip.takeset.render_take_set` measured:
    for a file of one take, :meth:`Faithfulness.to_dict` of it; for a file of takes A and B
    (a stereo pair, its comparison), ``{"score": mean of the two, "takes": {"A": ..., "B":
    ...}}``. ``None`` for a take made before the meter existed, or whose measurement failed.
    """
    found = metadata.get("faithfulness") if isinstance(metadata, Mapping) else None
    score = found.get("score") if isinstance(found, Mapping) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    return float(score) if math.isfinite(score) else None


def is_loop(metadata: Mapping[str, Any]) -> bool:
    """Whether a take (or a pair or comp of takes) was rendered as a seamless loop."""
    if metadata.get("kind") not in ("take", "stereo pair", "comp", "stem", "stem mix"):
        return False  # a comparison starts as the sketch: no loop
    takes = metadata.get("takes")
    held = takes.values() if isinstance(takes, Mapping) else ()
    return any(isinstance(t, Mapping) and t.get("loop") is True for t in held)


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_take(
    path: str | Path, audio: Audio, metadata: dict[str, Any], bit_depth: str = "16"
) -> Path:
    """Write a take with its settings embedded and in a ``.json`` sidecar; both atomically.

    A seamless loop (rendered with ``loop``) carries its loop points too: the whole file.
    """
    text = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    loop = (0, audio.frames) if is_loop(metadata) else None
    written = save_audio(path, audio, bit_depth=bit_depth, metadata=text, loop=loop)  # type: ignore[arg-type]
    write_text_atomically(sidecar_path(written), json.dumps(metadata, indent=2) + "\n")
    return written


def read_take_metadata(path: str | Path) -> dict[str, Any]:
    """The settings JSON of a take: embedded in the file, else from its sidecar."""
    path = Path(path)
    candidates = []
    embedded = read_metadata(path) if path.exists() else None
    if embedded:
        candidates.append(embedded)
    if sidecar_path(path).is_file():
        candidates.append(sidecar_path(path).read_text(encoding="utf-8"))
    for text in candidates:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("format") == METADATA_FORMAT:
            return data
    raise NeuroChipError(
        f"{path.name} carries no NeuroChip settings (and has no {sidecar_path(path).name} "
        "beside it): it was not rendered by NeuroChip, or its metadata was stripped."
    )


def settings_from_take(path: str | Path, take: str | None = None) -> RenderSettings:
    """The settings that made a take file (``take`` picks "A" or "B" of a stereo pair).

    Without ``take``: take A's where the file holds it, else its only take's (a take B file).
    """
    return settings_in(read_take_metadata(path), take, Path(path).name)


def settings_in(metadata: dict[str, Any], take: str | None, what: str) -> RenderSettings:
    """The settings of take ``take`` in a take's metadata (see :func:`settings_from_take`)."""
    takes = metadata.get("takes") or {}
    if take is None:
        take = "A" if "A" in takes else next(iter(takes), "A")
    if take not in takes:
        held = f"takes {', '.join(takes)}" if takes else "no render settings"
        raise NeuroChipError(f"{what} holds {held}, not {take!r}.")
    return RenderSettings.from_dict(takes[take])
