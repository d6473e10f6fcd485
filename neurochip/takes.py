"""Takes on disk: audio files that carry the settings that made them.

Every file NeuroChip renders embeds its settings as JSON (in the WAV/FLAC/OGG comment) and has
a ``.json`` sidecar beside it, so any take can be reproduced, even after an MP3 export or a DAW
that drops metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from neurochip import __version__
from neurochip.audio import Audio, read_metadata, save_audio
from neurochip.engine import Render, RenderSettings
from neurochip.errors import NeuroChipError

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
    names ("A", "B") to their settings.
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


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_take(
    path: str | Path, audio: Audio, metadata: dict[str, Any], bit_depth: str = "16"
) -> Path:
    """Write a take with its settings embedded and in a ``.json`` sidecar; both atomically."""
    text = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    written = save_audio(path, audio, bit_depth=bit_depth, metadata=text)  # type: ignore[arg-type]
    _write_text_atomically(sidecar_path(written), json.dumps(metadata, indent=2) + "\n")
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


def settings_from_take(path: str | Path, take: str = "A") -> RenderSettings:
    """The settings that made a take (``take`` picks A or B of a stereo pair)."""
    takes = read_take_metadata(path).get("takes", {})
    if take not in takes:
        raise NeuroChipError(f"{Path(path).name} holds takes {', '.join(takes)}, not {take!r}.")
    return RenderSettings.from_dict(takes[take])


def render_metadata(render: Render, source_name: str | None = None) -> dict[str, Any]:
    return take_metadata("take", {"A": render.settings}, source_name, render.info)


def _write_text_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
