"""Takes as files: the settings every rendered file carries, embedded and in a sidecar.

Every file NeuroChip renders embeds its settings as JSON (in the WAV/FLAC/OGG comment) and has
a ``.json`` sidecar beside it, so any take can be reproduced, even after an MP3 export or a DAW
that drops metadata. The JSON (see :func:`take_metadata`) says what the file is (``kind``),
the settings of each take in it keyed by the take's name (``"A"``, ``"B"``), and where it came
from.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from neurochip import __version__, untrusted
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.write import (
    check_writable,
    read_metadata,
    refuse_overwriting_inputs,
    save_audio,
    write_text_atomically,
)
from neurochip.settings import RenderSettings
from neurochip.spectrogram import PNG_MARKER

METADATA_FORMAT = "neurochip-take"
#: Every row of a batch's index.json carries it (:func:`neurochip.batch.write_index`).
BATCH_INDEX_FORMAT = "neurochip-batch-index"
#: The stems.json in a stems ZIP (``neurochip.stems.STEMS_FORMAT``; the library may not
#: import the stems module, which renders).
STEMS_ZIP_FORMAT = "neurochip-stems"
#: Largest JSON read to learn whose it is (a batch index of many thousand items fits): a
#: bigger file at an output's place is not ours.
MAX_OWNED_JSON_BYTES = 64_000_000


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

    ``info`` is the render's (:attr:`Render.info <neurochip.engine.Render.info>`, with the
    song's provenance): its ``"spec"``, the model spec that made the take as a table, is
    written as ``"model_spec"`` (read back with
    :meth:`ModelSpec.of_take <neurochip.model_spec.ModelSpec.of_take>`); the rest as it is.

    ``extra`` fields are added as they are; :func:`~neurochip.takeset.render_take_set` adds
    ``"faithfulness"``: the note-faithfulness meter's result (see :func:`faithfulness_score`).
    """
    info = dict(info or {})
    spec = info.pop("spec", None)
    if spec is not None:
        info["model_spec"] = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    return {
        "format": METADATA_FORMAT,
        "neurochip": __version__,
        "kind": kind,
        "source": source_name,
        "takes": {name: s.to_dict() for name, s in settings.items()},
        **info,
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
    # Compared, not converted: a damaged file's 1e400 must not overflow; NaN is out too.
    return float(score) if 0 <= score <= 1 else None


def notes_kept_score(metadata: Mapping[str, Any]) -> float | None:
    """A take's "notes kept" (0 to 1, see :mod:`neurochip.notes_kept`), or ``None``.

    ``metadata["faithfulness"]["notes"]["score"]``: the share of the sketch's notes the take
    plays, counted when it was rendered (or later, :func:`~neurochip.library.notes.count_notes`);
    for a file of takes A and B, the mean of theirs (:func:`combined_faithfulness`). ``None``
    where notes were not counted (a take made before the measure, basic-pitch missing).
    """
    found = metadata.get("faithfulness") if isinstance(metadata, Mapping) else None
    notes = found.get("notes") if isinstance(found, Mapping) else None
    return faithfulness_score({"faithfulness": notes})


def combined_faithfulness(
    measured: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, Any] | None:
    """The ``"faithfulness"`` of a file holding several takes (``{"A": ..., "B": ...}``).

    One take: its own. Several: ``{"score": the mean of their chroma scores, "takes": each's}``
    (the mean of those measured; ``None`` if none was), with ``"notes": {"score": the mean of
    their notes kept}`` where every take's notes were counted.
    """
    if len(measured) == 1:
        only = next(iter(measured.values()))
        return None if only is None else dict(only)
    scores = [faithfulness_score({"faithfulness": m}) for m in measured.values()]
    known = [s for s in scores if s is not None]
    if not known:
        return None
    both: dict[str, Any] = {
        "score": round(sum(known) / len(known), 4),
        "takes": dict(measured),
    }
    kept = [notes_kept_score({"faithfulness": m}) for m in measured.values()]
    if kept and all(k is not None for k in kept):
        both["notes"] = {"score": round(sum(kept) / len(kept), 4)}  # type: ignore[arg-type]
    return both


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


#: Largest settings JSON read from a take file or its sidecar: a take's is a few kilobytes, a
#: mix of many stereo stems' some 100 KB.
MAX_METADATA_BYTES = 2_000_000


def read_take_metadata(path: str | Path) -> dict[str, Any]:
    """The settings JSON of a take: embedded in the file, else from its sidecar.

    Checked as it comes in (:func:`check_take_metadata`); a damaged copy gives way to the
    other one, and where both are damaged the error says what is wrong.

    Raises:
        NeuroChipError: The file carries no settings, or damaged ones.
    """
    path = Path(path)
    what = f"{path.name}'s NeuroChip settings"
    candidates: list[Callable[[], str]] = []
    embedded = read_metadata(path) if path.exists() else None
    if embedded:
        candidates.append(lambda: embedded)
    if sidecar_path(path).is_file():
        sidecar = sidecar_path(path)
        candidates.append(lambda: untrusted.read_text_file(sidecar, what, MAX_METADATA_BYTES))
    damage: untrusted.DataError | None = None
    for read in candidates:
        try:
            data = untrusted.load_json_text(read(), what, max_bytes=MAX_METADATA_BYTES)
        except untrusted.MalformedError:
            continue  # not JSON: some other program's comment, not ours
        except untrusted.DataError as err:  # too large or too deep: ours, damaged
            damage = damage or err
            continue
        if isinstance(data, dict) and data.get("format") == METADATA_FORMAT:
            try:
                return check_take_metadata(data)
            except untrusted.DataError as err:
                damage = damage or err
    if damage is not None:
        raise _damaged(path.name, damage)
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
    """The settings of take ``take`` in a take's metadata (see :func:`settings_from_take`).

    Raises:
        NeuroChipError: It holds no such take, or its settings are damaged.
    """
    takes = checked_takes(metadata, what)
    if take is None:
        take = "A" if "A" in takes else next(iter(takes), "A")
    if take not in takes:
        if not takes:
            raise _damaged(what, untrusted.DataError("", 'there is no take in "takes"'))
        raise NeuroChipError(f"{what} holds takes {', '.join(takes)}, not {take!r}.")
    try:
        return RenderSettings.from_dict(takes[take])
    except NeuroChipError as err:  # a setting out of range, a section without a prompt...
        raise _damaged(what, untrusted.DataError(f"take {take}:", str(err))) from None


def check_take_metadata(data: Any) -> dict[str, Any]:
    """``data`` if it has the shape of a take's metadata (see :func:`take_metadata`).

    What readers rely on: a table whose ``"takes"`` is a table of tables (take name ->
    settings), ``"kind"`` text, ``"source"`` text or null. Each take's settings are checked
    when read (:func:`settings_in`); other fields (``"faithfulness"``...) are read with care
    where they are used.

    Raises:
        untrusted.DataError: Saying which field is wrong.
    """
    metadata = untrusted.table(data, "")
    untrusted.text(metadata, "kind", "", None)
    if metadata.get("source") is not None:
        untrusted.text(metadata, "source", "")
    checked_takes(metadata, None)
    return metadata


def checked_metadata(metadata: Any, what: str) -> dict[str, Any]:
    """:func:`check_take_metadata`, failing with "<what>'s NeuroChip settings are damaged: ..."
    (for metadata handed over rather than read here)."""
    try:
        return check_take_metadata(metadata)
    except untrusted.DataError as err:
        raise _damaged(what, err) from None


def checked_takes(metadata: Any, what: str | None) -> dict[str, dict[str, Any]]:
    """A take's ``"takes"``: take name -> settings, each a table (none: ``{}``).

    Raises:
        NeuroChipError: "<what>'s NeuroChip settings are damaged: ..." (``what`` names the
            take); :class:`untrusted.DataError` alone where ``what`` is ``None``.
    """
    try:
        takes = untrusted.table(untrusted.table(metadata, "").get("takes", {}), '"takes"')
        return {
            name: untrusted.table(settings, f"take {name}'s settings")
            for name, settings in takes.items()
        }
    except untrusted.DataError as err:
        if what is None:
            raise
        raise _damaged(what, err) from None


def _damaged(what: str, err: untrusted.DataError) -> NeuroChipError:
    return NeuroChipError(
        f"{what}'s NeuroChip settings are damaged: {err} Render it again, or use a copy of "
        "the file that is whole."
    )


# --------------------------------------------------------------------------------------
# Whose file is it: the one rule every front end keeps before writing
# --------------------------------------------------------------------------------------


def written_by_neurochip(path: str | Path) -> bool:
    """Whether NeuroChip wrote the file at ``path``, by what the file itself says.

    Audio: the settings embedded in it (never a ``.json`` beside it: a sidecar can sit next
    to anyone's file); ``.json``: a take's settings or a batch index; ``.png``: our text
    chunk (:data:`~neurochip.spectrogram.PNG_MARKER`); ``.zip``: a stems ZIP's stems.json.
    Anything else, or a file that cannot be read, is not ours.
    """
    path = Path(path)
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            if path.stat().st_size > MAX_OWNED_JSON_BYTES:
                return False
            found = _json_format(path.read_text(encoding="utf-8"))
            return found in (METADATA_FORMAT, BATCH_INDEX_FORMAT)
        if suffix == ".png":
            with Image.open(path) as image:  # text chunks before the pixels are read on open
                return image.format == "PNG" and image.info.get(PNG_MARKER[0]) == PNG_MARKER[1]
        if suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                if archive.getinfo("stems.json").file_size > MAX_OWNED_JSON_BYTES:
                    return False
                text = archive.read("stems.json").decode("utf-8")
            return _json_format(text) == STEMS_ZIP_FORMAT
        return _json_format(read_metadata(path)) == METADATA_FORMAT
    except (
        OSError,
        ValueError,
        KeyError,
        SyntaxError,
        zipfile.BadZipFile,
        Image.DecompressionBombError,
    ):
        # SyntaxError is PIL's word for a broken PNG; ValueError covers bad UTF-8 and JSON.
        return False


def _json_format(text: str | None) -> str | None:
    """The "format" a JSON text declares: an object's, or that of every row of a list."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
        return None
    if isinstance(data, list):  # a batch index: one format on every row
        formats = {row.get("format") if isinstance(row, dict) else None for row in data}
        data = {"format": formats.pop()} if len(formats) == 1 else {}
    found = data.get("format") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def inside_folder(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is in ``folder`` (or is it), after ``..`` and symbolic links."""
    return Path(path).expanduser().resolve().is_relative_to(Path(folder).expanduser().resolve())


def check_output_files(
    outputs: Iterable[str | Path],
    inputs: Iterable[str | Path | None],
    *,
    home: str | Path,
    overwrite: bool = False,
    elsewhere: str = "choose another output name (-o)",
    replace: str = "add --overwrite to replace it",
    ours: Callable[[Path], bool] = written_by_neurochip,
) -> None:
    """Refuse, before any work, to write what must not be written: the CLI's and batch's rule.

    * an input (a sketch, a take, a manifest) is never replaced, whatever ``overwrite`` says;
    * nothing is written inside the take library's ``home``: the library keeps its own
      files, and a file replaced behind its back would no longer be the take it lists;
    * the folder must be one we can write to (checked now, not after the render);
    * an existing file is replaced only when NeuroChip wrote it (``ours``, by default
      :func:`written_by_neurochip`), or with ``overwrite``.

    ``elsewhere`` and ``replace`` are the front end's own advice ("choose another output
    name (-o)", "add --overwrite to replace it").

    Raises:
        NeuroChipError: Naming the file, and saying what to do.
    """
    outputs = [Path(o) for o in outputs]
    refuse_overwriting_inputs(outputs, inputs, elsewhere)
    for output in outputs:
        if inside_folder(output, home):
            raise NeuroChipError(
                f"{output} is inside the take library ({home}), which keeps its own files: "
                "find and export takes there through the library (the app's Takes page, "
                f"neurochip commands), or write elsewhere: {elsewhere}."
            )
        check_writable(output, elsewhere)
        if not overwrite and output.exists() and not ours(output):
            raise NeuroChipError(
                f"{output} already exists and NeuroChip did not write it: {replace}, or "
                f"{elsewhere}."
            )
