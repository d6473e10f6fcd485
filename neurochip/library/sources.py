"""Copies of the sketches takes were made from, so opening a take brings its song back.

``$NEUROCHIP_HOME/sources/<sketch key>.mid`` (a MIDI sketch: the file itself) or ``.flac``
(audio, 24-bit, as decoded), beside ``<sketch key>.json`` (the name the composer knows and the
MIDI voices). One copy per sketch, however many takes: the key is a hash of its content.
Written atomically, the JSON last, so a half-kept source is never found.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from neurochip.io.write import atomic_write, write_bytes_atomically, write_text_atomically
from neurochip.sketch import Sketch

log = logging.getLogger(__name__)

_KEY = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True)
class SourceFile:
    """A kept sketch: its file's bytes, a name whose suffix picks the decoder, and how the
    composer knows it."""

    data: bytes
    decode_as: str  # e.g. "sketch.flac": only its suffix matters
    name: str
    voices: dict[str, str]


def keep_source(folder: Path, sketch: Sketch) -> None:
    """Keep a copy of ``sketch`` in ``folder`` (once: an existing copy is left alone)."""
    if not _KEY.fullmatch(sketch.key):
        log.info("Not keeping %s: its key %r is not a content key", sketch.name, sketch.key)
        return
    meta_path = folder / f"{sketch.key}.json"
    if meta_path.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    if sketch.midi is not None:
        suffix = ".mid"
        write_bytes_atomically(folder / f"{sketch.key}{suffix}", sketch.midi)
    else:
        import soundfile as sf

        suffix = ".flac"
        with atomic_write(folder / f"{sketch.key}{suffix}") as temporary:
            sf.write(
                temporary, sketch.audio.samples.T, sketch.audio.sample_rate, "PCM_24", format="FLAC"
            )
    meta = {"name": sketch.name, "voices": dict(sketch.voices), "file": f"{sketch.key}{suffix}"}
    write_text_atomically(meta_path, json.dumps(meta))


def source_file(folder: Path, key: str) -> SourceFile | None:
    """The kept copy of the sketch with this key, or None (never kept, or unreadable)."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        return None  # never a path from metadata: only our own keys name files
    try:
        meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        suffix = ".mid" if meta["file"].endswith(".mid") else ".flac"
        data = (folder / f"{key}{suffix}").read_bytes()
        voices = {str(k): str(v) for k, v in dict(meta.get("voices") or {}).items()}
        return SourceFile(data, f"sketch{suffix}", str(meta["name"]), voices)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("The kept sketch %s cannot be read: %s", key, err)
        return None
