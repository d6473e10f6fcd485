"""Writing audio files atomically, with a text comment (the render settings) inside.

:func:`save_audio` writes WAV, FLAC, OGG or MP3 under a temporary name and renames it into
place; :func:`read_metadata` reads the comment back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.riff import iff_chunks

# --------------------------------------------------------------------------------------
# One atomic write for every file NeuroChip makes
# --------------------------------------------------------------------------------------

_OS_ERRORS: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free some space, or write to another disk",
    errno.EDQUOT: "your disk quota is used up: free some space, or write elsewhere",
    errno.EACCES: "permission denied: choose a folder you can write to",
    errno.EPERM: "permission denied: choose a folder you can write to",
    errno.EROFS: "the disk is read-only: write to another folder",
    errno.ENOENT: "the folder does not exist",
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.EISDIR: "that is a folder: give a file name",
    errno.ENAMETOOLONG: "the file name is too long",
}


def describe_os_error(err: BaseException) -> str:
    """An OS error as a composer would want it said ("the disk is full")."""
    code = getattr(err, "errno", None)
    if code in _OS_ERRORS:
        return _OS_ERRORS[code]
    code = _libsndfile_errno(err)
    if code in _OS_ERRORS:
        return _OS_ERRORS[code]
    detail = getattr(err, "strerror", None) or getattr(err, "error_string", None) or str(err)
    return str(detail).rstrip(".") or type(err).__name__


#: libsndfile's code for a failed system call ("System error."): the cause is in errno.
_SFE_SYSTEM = 2


def _libsndfile_errno(err: BaseException) -> int | None:
    """The errno behind libsndfile's "System error" (a full disk says no more than that).

    soundfile calls libsndfile through cffi, which keeps the errno of the thread's last C
    call: the failed write's (checked on a full tmpfs: ENOSPC).
    """
    if not isinstance(err, sf.LibsndfileError) or getattr(err, "code", None) != _SFE_SYSTEM:
        return None
    try:
        return int(sf._ffi.errno) or None  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write ``path`` all at once: yields a temporary path beside it, renamed into place.

    Whatever happens while writing (a full disk, a crash, Ctrl-C), ``path`` holds either its
    old content or the complete new one, never half of either. Missing folders are made.
    Every OS error becomes a :class:`NeuroChipError` saying "Could not write X: <why>".

    Raises:
        NeuroChipError: If the file cannot be written.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        _make_folder(path.parent)
        # Created by us (not mkstemp) so the file gets the usual umask permissions.
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield temporary
        with temporary.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise NeuroChipError(f"Could not write {path}: {describe_os_error(err)}.") from err
    finally:
        # Gone after a successful rename; after a failure, never leave it behind. A cleanup
        # that fails (a read-only disk, a folder that is a file) must not hide the error
        # that brought us here.
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's word for "part of the path is a file"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None


def check_writable(path: str | os.PathLike[str], elsewhere: str = "choose another place") -> None:
    """Raise at once when ``path`` clearly cannot be written, before any slow work.

    The folder it goes in (or the nearest one above that exists, since :func:`atomic_write`
    makes the rest) must be a folder we may write to, on a disk that is not read-only, and
    ``path`` itself must not be a folder.

    Raises:
        NeuroChipError: Saying what is wrong, as :func:`atomic_write` would have after the
            work.
    """
    path = Path(path)
    if path.is_dir():
        raise NeuroChipError(f"Cannot write {path}: {_OS_ERRORS[errno.EISDIR]}.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NeuroChipError(
            f"Cannot write {path}, as {folder} is a file, not a folder: {elsewhere}."
        )
    code = None
    with contextlib.suppress(OSError, AttributeError):  # no statvfs on Windows
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            code = errno.EROFS
    if code is None and not os.access(folder, os.W_OK | os.X_OK):
        code = errno.EACCES
    if code is not None:
        raise NeuroChipError(f"Cannot write {path}: {_OS_ERRORS[code]}.")


def refuse_overwriting_inputs(
    outputs: Iterable[str | os.PathLike[str]],
    inputs: Iterable[str | os.PathLike[str] | None],
    elsewhere: str = "choose another output name (-o)",
) -> None:
    """Raise if any output would replace one of the inputs.

    The same file counts however it is named: relative or absolute paths, symbolic links and
    hard links (same device and inode) alike.

    Raises:
        NeuroChipError: Naming the input that would be lost, and saying ``elsewhere``.
    """
    sources = [Path(p) for p in inputs if p is not None]
    for output in map(Path, outputs):
        for source in sources:
            if _same_file(output, source):
                raise NeuroChipError(
                    f"Writing {output} would replace your input {source.name}: {elsewhere}."
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where they would be
        return a.expanduser().resolve() == b.expanduser().resolve()


# --------------------------------------------------------------------------------------
# Saving and metadata
# --------------------------------------------------------------------------------------

_SAVE_FORMATS: dict[str, str] = {".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "OGG"}

# ID3v1's comment field holds 30 bytes; LAME only writes an ID3v2 tag for longer text.
_ID3V1_COMMENT_BYTES = 30


def save_audio(
    path: str | os.PathLike[str],
    audio: Audio,
    *,
    bit_depth: Literal["16", "24", "float"] = "16",
    metadata: str | None = None,
    loop: tuple[int, int] | None = None,
) -> Path:
    """Write audio to a WAV, FLAC, MP3 or OGG (Vorbis) file, picked by the suffix.

    The file is written under a temporary name in the same folder and renamed into place,
    so a crash never leaves a half-written file under ``path``. Missing folders are made.

    Args:
        path: Where to write. Replaced if it exists.
        audio: What to write. Samples outside ``[-1, 1]`` are clipped, except in float WAV;
            NaN becomes 0.
        bit_depth: ``"16"``, ``"24"`` or ``"float"`` for WAV; FLAC stores 16 or 24 bits
            (``"float"`` gives 24); ignored for MP3 and OGG.
        metadata: Text stored in the file's comment field (WAV ``LIST/INFO/ICMT``, FLAC and
            OGG Vorbis comment, MP3 ID3 comment); read it with :func:`read_metadata`.
            ``None`` or ``""`` stores nothing.
        loop: (first frame, length in frames) of a loop, in the forms game engines and
            samplers read: a WAV ``smpl`` chunk; ``LOOPSTART`` and ``LOOPLENGTH`` comments in
            OGG and FLAC (RPG Maker, GameMaker, Godot importers...). MP3 has no place for
            them. Read them back with :func:`read_loop_points`.

    Returns:
        The path written.

    Raises:
        NeuroChipError: For an unknown suffix or bit depth, or if the file cannot be
            written (no permission, disk full, a sample rate MP3 does not support, ...).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    file_format = _SAVE_FORMATS.get(suffix)
    if file_format is None:
        raise NeuroChipError(
            f"Cannot save {path.name}: unknown file type {suffix or '(no extension)'}. "
            f"Use one of {', '.join(_SAVE_FORMATS)}."
        )
    bit_depth = str(bit_depth)  # type: ignore[assignment]  # tolerate 16 and 24 as ints
    if bit_depth not in ("16", "24", "float"):
        raise NeuroChipError(f'The bit depth must be "16", "24" or "float"; got {bit_depth!r}.')
    subtype = {
        "WAV": {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}[bit_depth],
        "FLAC": "PCM_16" if bit_depth == "16" else "PCM_24",
        "MP3": "MPEG_LAYER_III",
        "OGG": "VORBIS",
    }[file_format]

    samples = np.nan_to_num(audio.samples, nan=0.0, posinf=1.0, neginf=-1.0)
    if subtype != "FLOAT":
        # libsndfile wraps out-of-range floats around in integer formats instead of clipping.
        np.clip(samples, -1.0, 1.0, out=samples)
    if file_format == "WAV":
        bytes_per_sample = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}[subtype]
        if samples.size * bytes_per_sample > 0xFFFFFFFF - (1 << 20):
            raise NeuroChipError(
                f"{path.name} would be over 4 GB, the most a WAV file can hold. "
                "Save it as FLAC instead."
            )

    with atomic_write(path) as temporary:
        with sf.SoundFile(
            temporary,
            "w",
            samplerate=audio.sample_rate,
            channels=audio.channels,
            subtype=subtype,
            format=file_format,
        ) as sound_file:
            if metadata and file_format != "WAV":
                # Vorbis comments and ID3 tags are written with the first block of audio.
                sound_file.comment = metadata
            sound_file.write(samples.T)
        if metadata and file_format == "WAV":
            # libsndfile drops a WAV comment longer than ~2 KB without a word.
            _append_wav_comment(temporary, metadata)
        if loop is not None:
            start, length = _check_loop(loop, audio.frames)
            if file_format == "WAV":
                _append_wav_loop(temporary, start, length, audio.sample_rate)
            elif file_format in ("OGG", "FLAC"):
                _tag_loop(temporary, file_format, start, length)
    return path


def _check_loop(loop: tuple[int, int], frames: int) -> tuple[int, int]:
    start, length = (int(v) for v in loop)
    if not (start >= 0 and length > 0 and start + length <= frames):
        raise NeuroChipError(
            f"A loop of {length} samples from sample {start} does not fit {frames} samples."
        )
    return start, length


def _append_wav_loop(path: Path, start: int, length: int, sample_rate: int) -> None:
    """Append a ``smpl`` chunk with one forward loop (end inclusive, as the format says)."""
    fields = [0, 0, round(1e9 / sample_rate), 60, 0, 0, 0, 1, 0]
    loop = [0, 0, start, start + length - 1, 0, 0]  # id, forward, start, end, fraction, forever
    body = b"".join(v.to_bytes(4, "little") for v in fields + loop)
    _append_riff_chunk(path, b"smpl" + len(body).to_bytes(4, "little") + body)


def _tag_loop(path: Path, file_format: str, start: int, length: int) -> None:
    from mutagen.flac import FLAC
    from mutagen.oggvorbis import OggVorbis

    tags = OggVorbis(path) if file_format == "OGG" else FLAC(path)
    tags["LOOPSTART"] = str(start)
    tags["LOOPLENGTH"] = str(length)
    tags.save()


def read_loop_points(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(first frame, length) of the loop a file declares (see :func:`save_audio`), or None."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".wav":
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            for chunk, chunk_size, offset in iff_chunks(f, 12, size, big_endian=False):
                if chunk == b"smpl" and chunk_size >= 60:
                    f.seek(offset)
                    body = f.read(60)
                    values = [int.from_bytes(body[i : i + 4], "little") for i in range(0, 60, 4)]
                    if values[7] >= 1:  # loops in it
                        return values[11], values[12] - values[11] + 1
        return None
    if suffix in (".ogg", ".flac"):
        from mutagen import File

        tags = File(path)
        try:
            return int(tags["LOOPSTART"][0]), int(tags["LOOPLENGTH"][0])
        except (KeyError, TypeError, ValueError, IndexError):
            return None
    return None


def _append_wav_comment(path: Path, text: str) -> None:
    """Append a LIST/INFO chunk holding ``text`` as ICMT, and fix the RIFF size."""
    comment = text.encode("utf-8") + b"\0"
    if len(comment) & 1:
        comment += b"\0"
    info = b"INFO" + b"ICMT" + len(comment).to_bytes(4, "little") + comment
    _append_riff_chunk(path, b"LIST" + len(info).to_bytes(4, "little") + info)


def _append_riff_chunk(path: Path, chunk: bytes) -> None:
    """Append a chunk to a WAV file and fix the RIFF size."""
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end & 1:  # chunks start on even offsets
            f.write(b"\0")
            end += 1
        riff_size = end + len(chunk) - 8
        if riff_size > 0xFFFFFFFF:
            raise NeuroChipError(f"{path.name} is too large for a WAV file; save it as FLAC.")
        f.write(chunk)
        f.seek(4)
        f.write(riff_size.to_bytes(4, "little"))


def read_metadata(path: str | os.PathLike[str]) -> str | None:
    """The text :func:`save_audio` stored in a file's comment field.

    Works on any WAV, FLAC, OGG or MP3 file with a comment. Returns ``None`` when there is
    none, or the file cannot be read.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            header = f.read(12)
            if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
                return _read_wav_comment(f, os.fstat(f.fileno()).st_size)
        with sf.SoundFile(path) as sound_file:
            comment = sound_file.comment
            is_mp3 = sound_file.format == "MP3"
    except (sf.SoundFileError, RuntimeError, OSError, ValueError):
        return None
    if is_mp3 and comment:
        comment = _repair_id3_comment(comment)
    return comment or None


def _read_wav_comment(f: BinaryIO, file_size: int) -> str | None:
    # Our own reader because libsndfile ignores ICMT chunks over ~2 KB.
    for chunk_id, size, offset in iff_chunks(f, 12, file_size, big_endian=False):
        if chunk_id != b"LIST":
            continue
        f.seek(offset)
        if f.read(4) != b"INFO":
            continue
        end = min(offset + size, file_size)
        for sub_id, sub_size, sub_offset in iff_chunks(f, offset + 4, end, big_endian=False):
            if sub_id == b"ICMT":
                f.seek(sub_offset)
                text = f.read(sub_size).split(b"\0", 1)[0].decode("utf-8", "replace")
                return text or None
    return None


def _repair_id3_comment(comment: str) -> str:
    """Undo the double UTF-8 encoding of non-ASCII MP3 comments.

    libsndfile hands our UTF-8 bytes to LAME, which stores them in an ID3v2 frame marked
    Latin-1, so they come back decoded as Latin-1 ("é" reads as "Ã©"). Comments of up to
    30 bytes go to ID3v1 instead and come back intact, so only longer ones are repaired.
    """
    try:
        repaired = comment.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return comment
    return repaired if len(repaired.encode("utf-8")) > _ID3V1_COMMENT_BYTES else comment


def write_text_atomically(path: Path, text: str) -> None:
    """Write a text file all at once (see :func:`atomic_write`)."""
    with atomic_write(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write a binary file all at once (see :func:`atomic_write`)."""
    with atomic_write(path) as temporary:
        temporary.write_bytes(data)
