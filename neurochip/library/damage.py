"""Damaged take audio: telling a cut-off or unreadable file cheaply, and refusing it.

A take's audio file can be damaged (cut off by hand, a full disk, a bad copy). The index
records the size of each complete file (``audio_size``), so
:attr:`~neurochip.library.record.Take.damage` tells with one ``stat`` when first asked for,
reading the file's header only when the size differs (a file put back or edited by hand is
whole if its header says it is complete). A damaged take is still listed, and indexed again
from its folder if its settings can be read (from the file, else its sidecar), so that a
composer sees it, and can delete it or put the file back;
:meth:`~neurochip.library.store.TakeLibrary.load_audio` and
:meth:`~neurochip.library.store.TakeLibrary.export` refuse it with a clear error
(:func:`_refuse_damaged`) instead of handing out a cut-off file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import soundfile as sf

from neurochip.errors import NeuroChipError


def _refuse_damaged(take: Any) -> None:  # a library.record.Take (which imports this module)
    if take.damage is not None:
        raise NeuroChipError(
            f"The audio of “{take.name}” is damaged ({take.damage}): it cannot be played or "
            "exported; delete it or restore the file."
        )


def _audio_damage(audio: str, recorded: int | None) -> str | None:
    """What is wrong with a take's audio file (see :attr:`Take.damage`), or ``None``.

    ``recorded``: the size of the complete file, as the index has it (``None``: not known).
    """
    try:
        size = os.stat(audio).st_size
    except FileNotFoundError:
        return "its file is missing"
    except OSError as err:
        return f"its file cannot be read: {err.strerror or err}"
    if size == recorded:
        return None  # as it was added: whole
    path = Path(audio)
    whole = recorded
    if path.suffix.lower() == ".wav":
        # A WAV's header says how long the file is; it is right for a file put back or
        # edited by hand, and still there in one cut off (unless cut inside the header).
        declared = _declared_size(path)
        whole = recorded if declared is None else declared
    if whole is not None and size < whole:
        return f"cut off at {_size_text(size)} of {_size_text(whole)}"
    problem = _unreadable(path)
    return None if problem is None else f"its file cannot be read: {problem}"


def _declared_size(path: Path) -> int | None:
    """The size of the whole file, as a WAV's RIFF header says; ``None`` if it says none.

    ``None`` for a file that is not a RIFF WAVE file (any more), is shorter than the header,
    or was streamed and never had its size filled in (0 or 0xFFFFFFFF).
    """
    try:
        with open(path, "rb") as f:
            header = f.read(12)
    except OSError:
        return None
    if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    size = int.from_bytes(header[4:8], "little")
    return None if size in (0, 0xFFFFFFFF) else size + 8


def _expected_size(path: Path, readable: bool | None = None) -> int | None:
    """The size of a take's complete audio file, judged from the file alone.

    What a WAV's header declares (or its size, if larger); otherwise its size if the file can
    be read (``readable``, when the caller knows); ``None`` when neither tells.
    """
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    declared = _declared_size(path)
    if declared is not None:
        return max(declared, size)
    if readable is None:
        readable = _unreadable(path) is None
    return size if readable else None


def _unreadable(path: Path) -> str | None:
    """Why libsndfile cannot open an audio file, or ``None`` if it can."""
    try:
        sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        return _soundfile_reason(err)
    return None


def _soundfile_reason(err: BaseException) -> str:
    detail = getattr(err, "error_string", None) or getattr(err, "strerror", None) or str(err)
    return str(detail).strip().rstrip(".")


def _size_text(size: int) -> str:
    """A file size for people: "100 bytes", "66.3 KB", "1.2 MB"."""
    if size < 1000:
        return f"{size} byte{'' if size == 1 else 's'}"
    for unit, scale in (("KB", 1e3), ("MB", 1e6)):
        if round(size / scale, 1) < 1000:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e9:.1f} GB"
