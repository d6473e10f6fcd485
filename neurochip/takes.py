"""Takes on disk: audio files that carry the settings that made them, and the take library.

Every file NeuroChip renders embeds its settings as JSON (in the WAV/FLAC/OGG comment) and has
a ``.json`` sidecar beside it, so any take can be reproduced, even after an MP3 export or a DAW
that drops metadata.

The take library
----------------

:class:`TakeLibrary` keeps every take a composer renders, so that a refresh, a second browser
tab or a killed server loses nothing. It lives in ``$NEUROCHIP_HOME`` (default
``~/.neurochip``)::

    library.sqlite3        the index: one row per take (name, star, kind, length, settings)
    takes/<id>/            one folder per take; <id> is random hex, never text from a user
        take.wav           the audio (24-bit WAV) with its settings embedded (save_take)
        take.json          the same settings, as a sidecar
        entry.json         the take's own row (created, name, source, star), mirrored so the
                           index can be rebuilt from the folders alone
        thumb.png          a small spectrogram picture, when there is one
    takes/<id>.partial/    a take being written, or one a crash interrupted
    takes/<id>.deleted/    a take being deleted, or one a crash interrupted

The folders are the truth; the index is a cache of them that makes listing fast and holds the
edits (star, rename; mirrored into ``entry.json``). Text a user typed or uploaded (file names,
take names) is stored as text in the index and in JSON, and never becomes part of a path.

Invariants, kept by the order of every write:

1. A bare ``<id>`` folder is always a complete take. Files are written into ``<id>.partial``,
   flushed to disk, and the folder is then renamed to ``<id>`` in one atomic step.
2. A row is inserted only after its folder is complete, so a row never points at half a take.
   Inserts are ``INSERT OR IGNORE``: indexing a folder twice (recovery racing an add) is
   harmless.
3. A delete renames ``<id>`` to ``<id>.deleted`` inside the transaction that deletes the row,
   and removes the folder after the commit. A bare folder without a row is therefore never one
   the user deleted, and a crash leaves a deleted take on its way out (a ``.deleted`` folder,
   or a row whose folder is gone), never half-deleted and brought back.

So after a crash :meth:`TakeLibrary.recover` (run whenever a library is opened) restores a
consistent state from names alone:

* ``<id>.partial``: unfinished; removed once nothing in it has changed for
  :data:`STALE_AFTER_S` (a take another process is writing right now is left alone);
* ``<id>.deleted``: removed;
* ``<id>`` without a row: a take whose insert never happened; indexed again from its files;
* a row whose folder or audio is gone: dropped;
* hidden temporary files of an interrupted atomic write (``.take.wav.tmp-...``) inside a take's
  folder: removed once stale.

:meth:`TakeLibrary.list` and :meth:`TakeLibrary.get` notice the last two cases as well (a
cheap folder listing), so a take whose index insert failed still shows up without a restart.

Concurrency: every call opens its own SQLite connection, so one library object can be shared
by all of Streamlit's session threads; the database is in WAL mode (readers never wait for a
writer) with a busy timeout (writers from other tabs or processes queue instead of failing).
Changes that must agree with the folders (reconciling, deleting, starring, renaming) run in
``BEGIN IMMEDIATE`` transactions, which take the write lock before they look at anything.
WAL needs a local disk: keep the library off network shares.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

from neurochip import __version__
from neurochip.audio import Audio, read_metadata, save_audio
from neurochip.engine import Render, RenderSettings
from neurochip.errors import NeuroChipError
from neurochip.mix import stereo_pair

log = logging.getLogger(__name__)

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


# --- the take library ---------------------------------------------------------------------------

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the index; :data:`_MIGRATIONS` brings older ones up to it."""

STALE_AFTER_S = 15 * 60.0
"""A ``.partial`` folder or temporary file untouched this long belongs to no live writer.

Writers touch their files every few milliseconds (and a 20-minute song saves in seconds), so
this is very conservative: it only delays the clean-up of a crash's leftovers, which are never
listed anyway.
"""

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another tab or process holding the index's write lock."""

EXPORT_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")
"""File types :meth:`TakeLibrary.export` writes."""

AUDIO_FILE = "take.wav"
THUMBNAIL_FILE = "thumb.png"
ENTRY_FILE = "entry.json"
ENTRY_FORMAT = "neurochip-take-entry"
MAX_NAME_CHARS = 200
MAX_FILENAME_CHARS = 120

# New ids are 12 hex digits; accept a range so a later version may lengthen them.
_ID = re.compile(r"[0-9a-f]{8,32}")
# Leftovers of save_audio (".take.wav.tmp-1a2b3c4d") and _write_text_atomically
# (".take.json.x8k2j1.tmp").
_TEMPORARY_FILE = re.compile(r"\..+\.tmp(-[0-9a-f]+)?")
_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
_COLUMNS = (
    "id",
    "created",
    "name",
    "kind",
    "source_name",
    "audio_file",
    "thumbnail_file",
    "metadata",
    "starred",
    "frames",
    "sample_rate",
    "channels",
)
# One list of statements per schema version; version n's list turns n - 1 into n.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """
        CREATE TABLE IF NOT EXISTS takes (
            id TEXT PRIMARY KEY,        -- random hex; also the folder name
            created REAL NOT NULL,      -- unix time
            name TEXT NOT NULL,         -- display title (user text: never used in a path)
            kind TEXT NOT NULL,         -- "take", "stereo pair", "crossfade comparison"
            source_name TEXT,           -- the song's file name as uploaded (user text)
            audio_file TEXT NOT NULL,   -- file name inside the take's folder
            thumbnail_file TEXT,        -- file name inside the take's folder, or NULL
            metadata TEXT NOT NULL,     -- the take_metadata() JSON
            starred INTEGER NOT NULL DEFAULT 0,
            frames INTEGER NOT NULL,
            sample_rate INTEGER NOT NULL,
            channels INTEGER NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS takes_by_created ON takes (created)",
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION

_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}
_LEADING_ARTICLE = re.compile(r"^(a|an|the)-(?=.)")

# The library's home, read from $NEUROCHIP_HOME whenever DEFAULT_HOME is looked up (see
# __getattr__ below), so a test or app that sets the variable after import is obeyed.
DEFAULT_HOME: Path


def default_home() -> Path:
    """Where the take library lives: ``$NEUROCHIP_HOME``, else ``~/.neurochip``."""
    return Path(os.environ.get("NEUROCHIP_HOME") or "~/.neurochip").expanduser()


def __getattr__(name: str) -> Any:
    if name == "DEFAULT_HOME":
        return default_home()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Take:
    """One take in the library, as listed. Change it through :class:`TakeLibrary`."""

    id: str  # random hex (uuid4().hex[:12]), never derived from user input
    created: float  # unix time
    name: str  # display title
    kind: str  # "take", "stereo pair", "crossfade comparison"
    source_name: str | None  # the uploaded song's file name, for display only
    audio_path: Path
    thumbnail_path: Path | None
    metadata: dict[str, Any]  # take_metadata(): "takes" maps "A" (and "B") to settings
    starred: bool
    duration_s: float
    channels: int

    # The metadata dict is unhashable; the id alone identifies a take.
    def __hash__(self) -> int:
        return hash(self.id)

    def settings(self, take: str = "A") -> RenderSettings:
        """The settings that made take ``take`` ("A", or "B" of a stereo pair)."""
        takes = self.metadata.get("takes") or {}
        if take not in takes:
            held = f"takes {', '.join(takes)}" if takes else "no render settings"
            raise NeuroChipError(f"“{self.name}” holds {held}, not {take!r}.")
        return RenderSettings.from_dict(takes[take])


# --- names ---------------------------------------------------------------------------------------


def take_filename(
    source_name: str | None, settings: RenderSettings | None, kind: str, suffix: str
) -> str:
    """A download name made from the song and the settings, safe on every OS.

    E.g. ``minuet_funk-band-with-slap-bass_d0.35_g7_seed42.wav`` for a take of ``minuet.nsf``
    with the prompt "a funk band with slap bass", or ``minuet_stereo-pair_..._seed42.flac``.
    Only ``A-Z a-z 0-9 . _ -`` appear, and the name starts with a letter or digit; accents are
    dropped (``é`` -> ``e``) and other scripts left out. It is at most
    :data:`MAX_FILENAME_CHARS` long, never empty, never a Windows device name (``nul.wav``),
    and the same arguments always give the same name. The song's folders and extension are
    dropped; a leading "a", "an" or "the" of the prompt too.
    """
    ext = _clean_suffix(suffix)
    parts = [_clip_slug(_slug(_file_stem(source_name or "")), 40)]
    if kind and kind != "take":
        parts.append(_clip_slug(_slug(kind).lower(), 24))
    prompt = ""
    tail: list[str] = []
    if settings is not None:
        prompt = _LEADING_ARTICLE.sub("", _slug(settings.prompt).lower(), count=1)
        tail = [f"d{settings.denoise:g}", f"g{settings.guidance:g}", f"seed{settings.seed}"]
    # The prompt gets whatever room the fixed parts leave.
    fixed = "_".join(p for p in (*parts, *tail) if p)
    room = min(48, MAX_FILENAME_CHARS - len(ext) - len(fixed) - 1)
    parts.append(_clip_slug(prompt, room))
    stem = "_".join(p for p in (*parts, *tail) if p)
    stem = stem[: MAX_FILENAME_CHARS - len(ext)].strip("._-") or "neurochip-take"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem += "-take"
    return stem + ext


def _slug(text: str) -> str:
    """ASCII letters and digits joined by single hyphens ("Für Elise!" -> "Fur-Elise")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-")


def _clip_slug(slug: str, limit: int) -> str:
    """``slug`` cut to ``limit`` characters, at a word boundary where there is one."""
    if limit <= 0:
        return ""
    if len(slug) <= limit:
        return slug
    cut = slug[:limit]
    if slug[limit] != "-" and "-" in cut:
        cut = cut.rsplit("-", 1)[0]
    return cut.strip("-")


def _clean_suffix(suffix: str) -> str:
    letters = re.sub(r"[^a-z0-9]", "", suffix.lower())[:8]
    return f".{letters}" if letters else ""


def _file_stem(file_name: str) -> str:
    """A file name without folders (either kind of slash) or extension, for display."""
    base = re.split(r"[\\/]", file_name.strip())[-1] or file_name.strip()
    stem = os.path.splitext(base)[0]
    return stem or base


def _clean_name(text: str) -> str:
    """A display title on one line, without control characters, at most MAX_NAME_CHARS."""
    text = " ".join(text.split())  # newlines and tabs become spaces first
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    if len(text) > MAX_NAME_CHARS:
        text = text[: MAX_NAME_CHARS - 1].rstrip() + "…"
    return text


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def default_take_name(metadata: Mapping[str, Any]) -> str:
    """A title for a take nobody named: "sketch — a funk band with slap bass (seed 42)"."""
    source = metadata.get("source")
    song = _file_stem(source) if isinstance(source, str) and source.strip() else "untitled"
    settings = [s for s in (metadata.get("takes") or {}).values() if isinstance(s, Mapping)]
    prompts: list[str] = []
    for s in settings:
        prompt = _shorten(str(s.get("prompt") or "no prompt"), 60)
        if prompt not in prompts:
            prompts.append(prompt)
    what = " / ".join(prompts) or "no settings"
    kind = str(metadata.get("kind") or "take")
    if kind != "take":
        what = f"{kind}: {what}"
    seeds = [str(s["seed"]) for s in settings if "seed" in s]
    if seeds:
        what += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)})"
    return _clean_name(f"{song} — {what}")


# --- thumbnails ----------------------------------------------------------------------------------


def spectrogram_thumbnail(
    image: torch.Tensor, max_width: int = 400, height: int = 96
) -> Image.Image:
    """A small RGB preview of a float spectrogram picture, for lists.

    ``image`` is the engine's picture: ``(3, 512, W)`` (or ``(1, H, W)``, ``(H, W)``) in
    ``[0, 1]``, 1 being white (silence), low notes at the bottom. Each thumbnail pixel is the
    mean of the area it covers, so short notes in a long song still show. The result is
    ``height`` pixels high and ``min(W, max_width)`` wide.
    """
    if max_width < 1 or height < 1:
        raise ValueError(f"A thumbnail needs a positive size, not {max_width}x{height}.")
    pixels = image.detach()
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or min(pixels.shape[1:]) == 0:
        raise NeuroChipError(
            f"A spectrogram picture is shaped (3, height, width); got {tuple(image.shape)}."
        )
    if pixels.shape[0] == 3 and not bool(pixels[0].any()) and bool(pixels[1:].any()):
        # A stereo picture keeps R at 0 (Riffusion's layout); grey reads better than cyan.
        pixels = pixels[1:].float().mean(0, keepdim=True)
    # Pool first, on the device it is on: the full picture of a long song is hundreds of MB.
    width = min(int(pixels.shape[-1]), max_width)
    small = F.adaptive_avg_pool2d(pixels[None].float(), (height, width))[0].cpu()
    small = torch.nan_to_num(small, nan=1.0).clamp(0, 1)
    if small.shape[0] == 1:
        small = small.expand(3, -1, -1)
    rgb = (small * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(rgb, mode="RGB")


# --- the library -------------------------------------------------------------------------------


class TakeLibrary:
    """Every take a composer renders, kept on disk, indexed, starred, paired and exported.

    Safe to share between threads and to open from several processes at once; see the module
    docstring for the layout and the invariants that make it crash-safe.

    Args:
        root: The library's folder; :func:`default_home` when ``None``. Created if missing.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        home = default_home() if root is None or str(root) == "" else Path(root).expanduser()
        self.root: Path = home.absolute()
        self.takes_dir: Path = self.root / "takes"
        self.index_path: Path = self.root / "library.sqlite3"
        # Folders that hold no readable take (damaged by hand?): reported once, then left alone
        # by list() so it does not retry them on every call. recover() tries them again.
        self._unreadable: set[str] = set()
        try:
            self.takes_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise NeuroChipError(
                f"Cannot create the take library in {self.root}: {err.strerror or err}. "
                "Set NEUROCHIP_HOME to a folder you can write to."
            ) from err
        self._open_index()
        self.recover()

    def __repr__(self) -> str:
        return f"TakeLibrary({str(self.root)!r})"

    # -- adding -------------------------------------------------------------------------------

    def add(
        self,
        audio: Audio,
        metadata: dict[str, Any],
        name: str | None = None,
        thumbnail: Image.Image | None = None,
        bit_depth: str = "24",
    ) -> Take:
        """Keep a take: its audio, settings (from :func:`take_metadata`) and a thumbnail.

        ``name`` is the display title (made from the song, prompt and seed when not given);
        the source file name is ``metadata["source"]``. Returns the take as listed.

        Raises:
            ValueError: If ``metadata`` was not made by :func:`take_metadata`.
            NeuroChipError: If the files cannot be written (disk full, no permission). Nothing
                is left behind then. If only the index update fails, the take is kept on disk
                and shows up in the list as soon as the index can be written again.
        """
        metadata = _plain_json(metadata)
        if metadata.get("format") != METADATA_FORMAT:
            raise ValueError("Take metadata must be made by take_metadata().")
        source = metadata.get("source")
        source_name = None if source is None else str(source)
        title = _clean_name(name or "") or default_take_name(metadata)
        take_id, partial = self._new_partial_folder()
        entry = {
            "format": ENTRY_FORMAT,
            "id": take_id,
            "created": time.time(),
            "name": title,
            "source_name": source_name,
            "starred": False,
        }
        folder = self._folder(take_id)
        try:
            save_take(partial / AUDIO_FILE, audio, metadata, bit_depth=bit_depth)
            if thumbnail is not None:
                _write_png(partial / THUMBNAIL_FILE, thumbnail)
            _write_text_atomically(partial / ENTRY_FILE, _entry_json(entry))
            _fsync_folder(partial)
            os.rename(partial, folder)  # the take appears complete, or not at all
            _fsync_folder(self.takes_dir)
        except BaseException as err:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(err, OSError):
                raise NeuroChipError(
                    f"Could not save the take in {self.takes_dir}: {err.strerror or err}."
                ) from err
            raise
        record = {
            "id": take_id,
            "created": entry["created"],
            "name": title,
            "kind": str(metadata.get("kind") or "take"),
            "source_name": source_name,
            "audio_file": AUDIO_FILE,
            "thumbnail_file": THUMBNAIL_FILE if thumbnail is not None else None,
            "metadata": json.dumps(metadata, ensure_ascii=False),
            "starred": 0,
            "frames": audio.frames,
            "sample_rate": audio.sample_rate,
            "channels": audio.channels,
        }
        try:
            with self._transaction() as conn:
                _insert(conn, record)
        except NeuroChipError as err:
            raise NeuroChipError(
                f"The take was saved in {folder}, but the library's index could not be "
                f"updated ({err}). It will be listed once the index can be written again."
            ) from err
        return self._take(record)

    def add_render(
        self, render: Render, source_name: str | None = None, name: str | None = None
    ) -> Take:
        """Keep an engine render as a take (kind "take"), with a thumbnail of its picture."""
        thumbnail = None
        try:
            thumbnail = spectrogram_thumbnail(render.output_image)
        except (NeuroChipError, RuntimeError) as err:
            # A preview picture is not worth losing the take over.
            log.warning("No thumbnail for this take: %s", err)
        metadata = take_metadata("take", {"A": render.settings}, source_name, render.info)
        return self.add(render.audio, metadata, name=name, thumbnail=thumbnail)

    def pair(self, take_a: str, take_b: str, width: float = 1.0) -> Take:
        """A new take: take A panned left and take B right (see :func:`~neurochip.mix.stereo_pair`).

        Its metadata holds both takes' settings as "A" and "B", the width and
        ``"from_takes": [id_a, id_b]``; its thumbnail is take A's. (A take that is itself a
        pair or a comparison contributes its settings "A" and is mixed down to mono first.)

        Raises:
            NeuroChipError: For an unknown id, a width outside 0..1, or takes of different
                lengths or sample rates.
        """
        try:
            width = float(width)
        except (TypeError, ValueError):
            width = math.nan
        if not 0.0 <= width <= 1.0:  # NaN fails too
            raise NeuroChipError(f"Stereo width must be between 0 and 1, not {width}.")
        a, b = self.get(take_a), self.get(take_b)
        settings = {"A": a.settings("A"), "B": b.settings("A")}
        audio_a, audio_b = self.load_audio(a.id), self.load_audio(b.id)
        if audio_a.sample_rate != audio_b.sample_rate:
            raise NeuroChipError(
                f"“{a.name}” ({audio_a.sample_rate} Hz) and “{b.name}” "
                f"({audio_b.sample_rate} Hz) have different sample rates, so they cannot be "
                "paired."
            )
        if audio_a.frames != audio_b.frames:
            raise NeuroChipError(
                f"“{a.name}” is {audio_a.duration_s:.3f} s long and “{b.name}” "
                f"{audio_b.duration_s:.3f} s: a stereo pair needs two takes of the same length. "
                "Render both from the same start and duration of the song."
            )
        mix = stereo_pair(audio_a, audio_b, width)
        sources = [s for s in dict.fromkeys((a.source_name, b.source_name)) if s]
        provenance = {k: a.metadata[k] for k in ("model", "device") if k in a.metadata}
        metadata = take_metadata(
            "stereo pair",
            settings,
            " + ".join(sources) or None,
            provenance,
            width=width,
            from_takes=[a.id, b.id],
        )
        return self.add(mix, metadata, thumbnail=_read_png(a.thumbnail_path))

    # -- reading ------------------------------------------------------------------------------

    def list(self, starred_only: bool = False) -> builtins.list[Take]:
        """All takes (or the starred ones), newest first."""
        query = "SELECT * FROM takes {} ORDER BY created DESC, rowid DESC".format(
            "WHERE starred = 1" if starred_only else ""
        )
        with self._connect() as conn:
            known = {row[0] for row in conn.execute("SELECT id FROM takes")}
        if known != set(self._take_folders()) - self._unreadable:
            # A take whose index insert failed, or one deleted behind our back.
            self._reconcile()
        with self._connect() as conn:
            return [self._take(row) for row in conn.execute(query)]

    def get(self, take_id: str) -> Take:
        """The take with this id.

        Raises:
            NeuroChipError: If there is no such take (any more).
        """
        take = self._get(take_id)
        if take is None and self._folder(take_id, check=False).is_dir():
            self._reconcile()  # its folder is there but its row is not: index it
            take = self._get(take_id)
        elif take is not None and not take.audio_path.is_file():
            self._reconcile()  # deleted by another tab, or by hand
            take = self._get(take_id)
        if take is None:
            raise self._unknown(take_id)
        return take

    def load_audio(self, take_id: str) -> Audio:
        """A take's audio, exactly as stored."""
        take = self.get(take_id)
        try:
            samples, rate = sf.read(take.audio_path, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            raise NeuroChipError(
                f"The audio of “{take.name}” ({take.audio_path}) could not be read: {err}."
            ) from err
        return Audio(samples.T, rate)

    def export(self, take_id: str, suffix: str = ".wav") -> tuple[bytes, str]:
        """A take as the bytes of a ``.wav``, ``.flac``, ``.mp3`` or ``.ogg`` file, and a name.

        The file embeds the take's settings (see :func:`read_take_metadata`); the name comes
        from :func:`take_filename` with the settings of take "A". A WAV is the stored file
        itself; other types are encoded on the fly (24-bit FLAC; MP3 and OGG at libsndfile's
        default quality).

        Raises:
            NeuroChipError: For an unknown id or an unsupported suffix.
        """
        ext = "." + suffix.lower().lstrip(".") if isinstance(suffix, str) else ""
        if ext not in EXPORT_SUFFIXES:
            raise NeuroChipError(
                f"Takes can be downloaded as {', '.join(EXPORT_SUFFIXES)}, not {suffix!r}."
            )
        take = self.get(take_id)
        try:
            settings: RenderSettings | None = take.settings("A")
        except NeuroChipError:
            settings = None
        file_name = take_filename(take.source_name, settings, take.kind, ext)
        try:
            if take.audio_path.suffix.lower() == ext:
                return take.audio_path.read_bytes(), file_name  # already has everything
            audio = self.load_audio(take.id)
            with tempfile.TemporaryDirectory(prefix="neurochip-export-") as folder:
                path = save_take(Path(folder) / f"take{ext}", audio, take.metadata, "24")
                return path.read_bytes(), file_name
        except OSError as err:
            raise NeuroChipError(
                f"Could not prepare “{take.name}” for download: {err.strerror or err}."
            ) from err

    # -- changing -----------------------------------------------------------------------------

    def star(self, take_id: str, starred: bool = True) -> Take:
        """Star a keeper (or unstar it with ``starred=False``)."""
        return self._update(take_id, "starred", int(bool(starred)))

    def rename(self, take_id: str, name: str) -> Take:
        """Give a take a new display title.

        Raises:
            NeuroChipError: If the name is empty (or only spaces), or the id unknown.
        """
        title = _clean_name(name if isinstance(name, str) else "")
        if not title:
            raise NeuroChipError("A take's name cannot be empty.")
        return self._update(take_id, "name", title)

    def delete(self, take_id: str) -> None:
        """Delete a take: its row and its folder, for good.

        The folder is renamed to ``<id>.deleted`` inside the transaction that deletes the row
        and removed after it commits (see the module docstring for why).
        """
        with self._transaction() as conn:
            if conn.execute("DELETE FROM takes WHERE id = ?", (take_id,)).rowcount == 0:
                raise self._unknown(take_id)
            folder = self._folder(take_id)
            doomed = folder.with_name(f"{take_id}.deleted")
            try:
                os.rename(folder, doomed)
            except FileNotFoundError:
                return  # its files were already gone: dropping the row (on commit) is all
            except OSError as err:  # e.g. a file in it open elsewhere, on Windows
                raise NeuroChipError(
                    f"Could not delete the take in {folder}: {err.strerror or err}."
                ) from err
        shutil.rmtree(doomed, ignore_errors=True)  # whatever is left is recover()'s job

    # -- recovery -----------------------------------------------------------------------------

    def recover(self, stale_after_s: float = STALE_AFTER_S) -> int:
        """Bring the folders and the index back in line after a crash; see the module docstring.

        Removes ``.deleted`` folders, and ``.partial`` folders and temporary files nothing has
        touched for ``stale_after_s``; indexes complete folders that have no row; drops rows
        whose folder or audio is gone. Safe to run while other processes use the library.

        Returns:
            How many takes were indexed again.
        """
        now = time.time()
        self._unreadable.clear()
        for entry in _scan(self.takes_dir):
            stem, _, state = entry.name.partition(".")
            if not _ID.fullmatch(stem) or not entry.is_dir(follow_symlinks=False):
                continue  # not ours: leave it alone
            path = Path(entry.path)
            # A .deleted folder is gone in intent already; a .partial one may be a live
            # writer's, in another process, until it has been still for a while.
            stale_partial = state == "partial" and now - _last_change(path) >= stale_after_s
            if state == "deleted" or stale_partial:
                shutil.rmtree(path, ignore_errors=True)
            elif state == "":
                for item in _scan(path):
                    if _TEMPORARY_FILE.fullmatch(item.name) and item.is_file():
                        with contextlib.suppress(OSError):
                            if now - item.stat().st_mtime >= stale_after_s:
                                os.unlink(item.path)
        return self._reconcile()

    # -- internals ----------------------------------------------------------------------------

    def _folder(self, take_id: str, check: bool = True) -> Path:
        """The folder of a take. Only ids shaped like ours ever become paths."""
        if not isinstance(take_id, str) or not _ID.fullmatch(take_id):
            if check:
                raise self._unknown(take_id)
            return self.takes_dir / "-"  # a name no take has
        return self.takes_dir / take_id

    def _take_folders(self) -> builtins.list[str]:
        """Ids of the complete takes on disk (bare ``<id>`` folders)."""
        return [
            e.name
            for e in _scan(self.takes_dir)
            if _ID.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        ]

    def _unknown(self, take_id: object) -> NeuroChipError:
        return NeuroChipError(
            f"No take with id {take_id!r} in {self.root}: it was deleted, perhaps in another "
            "tab. Refresh the list."
        )

    def _new_partial_folder(self) -> tuple[str, Path]:
        for _ in range(16):
            take_id = uuid.uuid4().hex[:12]
            folder = self._folder(take_id)
            if folder.exists() or folder.with_name(f"{take_id}.deleted").exists():
                continue  # 48 random bits: never, in practice
            partial = folder.with_name(f"{take_id}.partial")
            try:
                partial.mkdir(parents=True)
            except FileExistsError:
                continue
            except OSError as err:
                raise NeuroChipError(
                    f"Could not save the take in {self.takes_dir}: {err.strerror or err}."
                ) from err
            return take_id, partial
        raise NeuroChipError(f"Could not find a free take id in {self.takes_dir}.")

    def _get(self, take_id: str) -> Take | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM takes WHERE id = ?", (str(take_id),)).fetchone()
        return None if row is None else self._take(row)

    def _update(self, take_id: str, column: str, value: object) -> Take:
        if column not in ("starred", "name"):  # it is spliced into the SQL below
            raise ValueError(f"Cannot update {column!r}.")
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
            if row is None:
                raise self._unknown(take_id)
            conn.execute(f"UPDATE takes SET {column} = ? WHERE id = ?", (value, take_id))
            record = {**dict(row), column: value}
            # Mirrored inside the transaction, so concurrent edits reach the file in the
            # order they reach the index.
            self._write_entry(record)
        return self._take(record)

    def _write_entry(self, record: Mapping[str, Any]) -> None:
        """Mirror a row into its folder's entry.json (best effort: the index is what counts)."""
        entry = {
            "format": ENTRY_FORMAT,
            "id": record["id"],
            "created": record["created"],
            "name": record["name"],
            "source_name": record["source_name"],
            "starred": bool(record["starred"]),
        }
        try:
            _write_text_atomically(self._folder(record["id"]) / ENTRY_FILE, _entry_json(entry))
        except OSError as err:
            log.warning("Could not update %s of take %s: %s", ENTRY_FILE, record["id"], err)

    def _take(self, record: Mapping[str, Any]) -> Take:
        folder = self._folder(record["id"], check=False)
        thumbnail = record["thumbnail_file"]
        return Take(
            id=record["id"],
            created=float(record["created"]),
            name=record["name"],
            kind=record["kind"],
            source_name=record["source_name"],
            # Only the final component: a damaged index cannot point outside the folder.
            audio_path=folder / Path(record["audio_file"]).name,
            thumbnail_path=folder / Path(thumbnail).name if thumbnail else None,
            metadata=json.loads(record["metadata"]),
            starred=bool(record["starred"]),
            duration_s=record["frames"] / record["sample_rate"],
            channels=int(record["channels"]),
        )

    def _reconcile(self) -> int:
        """Index complete folders without a row and drop rows without their audio.

        Runs under the write lock, so no delete or add is half-way through while it looks:
        a delete renames its folder before it commits, and an add's folder is complete before
        its row is inserted.
        """
        added = 0
        with self._transaction() as conn:
            rows = conn.execute("SELECT id, audio_file FROM takes").fetchall()
            gone = [
                (row["id"],)
                for row in rows
                if not (self._folder(row["id"], check=False) / row["audio_file"]).is_file()
            ]
            conn.executemany("DELETE FROM takes WHERE id = ?", gone)
            known = {row["id"] for row in rows}
            for take_id in self._take_folders():
                if take_id in known:
                    continue
                record = self._record_from_folder(self._folder(take_id))
                if record is None:
                    self._unreadable.add(take_id)
                else:
                    added += _insert(conn, record)
        if gone or added:
            log.info("Take library %s: dropped %d rows, indexed %d", self.root, len(gone), added)
        return added

    def _record_from_folder(self, folder: Path) -> dict[str, Any] | None:
        """A row for a complete take folder, from its files; ``None`` if it holds no take."""
        audio = next(
            (folder / f"take{s}" for s in _AUDIO_SUFFIXES if (folder / f"take{s}").is_file()),
            None,
        )
        if audio is None:
            log.warning("Take folder %s holds no take audio; skipped", folder)
            return None
        try:
            metadata = read_take_metadata(audio)
            info = sf.info(str(audio))
        except (NeuroChipError, sf.SoundFileError, RuntimeError, OSError) as err:
            log.warning("Take folder %s could not be indexed: %s", folder, err)
            return None
        entry = _read_json(folder / ENTRY_FILE)
        if entry.get("id") != folder.name:
            entry = {}  # missing, damaged, or copied from another take's folder
        created = entry.get("created")
        if not isinstance(created, (int, float)) or not math.isfinite(created):
            created = audio.stat().st_mtime
        source = entry.get("source_name", metadata.get("source"))
        name = entry.get("name")
        return {
            "id": folder.name,
            "created": float(created),
            "name": (_clean_name(name) if isinstance(name, str) else "")
            or default_take_name(metadata),
            "kind": str(metadata.get("kind") or "take"),
            "source_name": None if source is None else str(source),
            "audio_file": audio.name,
            "thumbnail_file": THUMBNAIL_FILE if (folder / THUMBNAIL_FILE).is_file() else None,
            "metadata": json.dumps(metadata, ensure_ascii=False),
            "starred": int(entry.get("starred") is True),
            "frames": int(info.frames),
            "sample_rate": int(info.samplerate),
            "channels": int(info.channels),
        }

    # -- the index ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection of our own (sqlite3 connections must not cross threads)."""
        try:
            conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise self._index_error(err) from err
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.Error as err:
            raise self._index_error(err) from err
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock first (``BEGIN IMMEDIATE``).

        What it reads of the folders then stays true until it commits, because every change
        that must agree with the folders happens under this lock.
        """
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _index_error(self, err: sqlite3.Error) -> NeuroChipError:
        hint = (
            " Another NeuroChip is busy writing to it; try again."
            if "locked" in str(err) or "busy" in str(err)
            else ""
        )
        return NeuroChipError(f"The take library's index {self.index_path} failed: {err}.{hint}")

    def _open_index(self) -> None:
        """Create or migrate the index; set a damaged one aside (the folders rebuild it)."""
        try:
            self._migrate()
        except sqlite3.OperationalError as err:  # locked, read-only, disk full: say so
            raise self._index_error(err) from err
        except sqlite3.DatabaseError as err:  # "file is not a database", "malformed"
            aside = self.index_path.with_name(
                f"{self.index_path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            )
            log.warning("Take index %s is damaged (%s); moved to %s", self.index_path, err, aside)
            for extra in ("", "-wal", "-shm"):
                source = self.index_path.with_name(self.index_path.name + extra)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(source, aside.with_name(aside.name + extra))
            try:
                self._migrate()
            except sqlite3.Error as again:
                raise self._index_error(again) from again

    def _migrate(self) -> None:
        conn = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            # Persistent: every later connection, from any process, uses the write-ahead log.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise NeuroChipError(
                    f"The take library in {self.root} was written by a newer NeuroChip "
                    f"(index version {version}, this one knows {SCHEMA_VERSION}). Upgrade "
                    "NeuroChip, or set NEUROCHIP_HOME to another folder."
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()


# --- file helpers --------------------------------------------------------------------------------


def _insert(conn: sqlite3.Connection, record: Mapping[str, Any]) -> int:
    """Insert a row unless its id is there already; returns 1 if it was inserted."""
    columns = ", ".join(_COLUMNS)
    values = ", ".join(f":{c}" for c in _COLUMNS)
    cursor = conn.execute(f"INSERT OR IGNORE INTO takes ({columns}) VALUES ({values})", record)
    return cursor.rowcount


def _plain_json(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` as it will read back from JSON (numpy numbers -> floats, paths -> text)."""

    def fallback(value: object) -> object:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        return str(value)

    if not isinstance(metadata, Mapping):
        raise ValueError("Take metadata must be made by take_metadata().")
    return json.loads(json.dumps(dict(metadata), ensure_ascii=False, default=fallback))


def _entry_json(entry: Mapping[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, indent=2) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    with path.open("wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def _read_png(path: Path | None) -> Image.Image | None:
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError):
        return None


def _fsync_folder(path: Path) -> None:
    """Make a folder's entries (new files, a rename) durable."""
    if os.name == "nt":
        return  # folders cannot be opened on Windows; NTFS journals renames itself
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


def _scan(path: Path) -> list[os.DirEntry[str]]:
    """A folder's entries; none if it cannot be read (e.g. removed meanwhile)."""
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except OSError:
        return []


def _last_change(folder: Path) -> float:
    """The newest modification time of a folder and the files in it."""
    times = []
    for path in (folder, *(Path(e.path) for e in _scan(folder))):
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times, default=0.0)
