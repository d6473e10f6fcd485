"""Batch renders: a soundtrack's songs x prompts x seeds from one manifest, resumable.

A manifest is TOML::

    output = "soundtrack"            # the output folder, inside the manifest's folder

    [defaults]                       # any render setting or take-set option
    denoise = 0.35
    steps = 50
    stereo_pair = true

    [[songs]]
    path = "level1.mid"
    prompts = ["a funk band with slap bass", "a string quartet"]
    seeds = [42, 43]

    [[songs]]
    path = "boss.it"
    prompts = ["a metal band"]
    seeds = [7]
    denoise = 0.45                   # this song's own settings win over the defaults

:func:`load_manifest` reads it into :class:`BatchItem` s (one per song, prompt and seed);
:func:`run_batch` renders each with the library's one workflow
(:func:`~neurochip.takeset.render_take_set`), writes its files under the output folder and
keeps an index (``index.json`` and ``index.csv``). An item whose file is there, carrying the
item's own settings, is skipped: a batch stopped half-way (Ctrl+C, a crash, a lost machine)
is finished by running it again.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurochip import untrusted
from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.io.write import write_text_atomically
from neurochip.library.metadata import (
    BATCH_INDEX_FORMAT,
    MAX_OWNED_JSON_BYTES,
    check_output_files,
    faithfulness_score,
    inside_folder,
    notes_kept_score,
    read_take_metadata,
    sidecar_path,
    written_by_neurochip,
)
from neurochip.library.store import TakeLibrary, default_home
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import load_sketch
from neurochip.takeset import TakeSet, check_take_set, output_paths, render_take_set, roles

log = logging.getLogger(__name__)

_OPTION_KEYS = {f.name for f in dataclasses.fields(TakeSetOptions)}
_SETTING_KEYS = {f.name for f in dataclasses.fields(RenderSettings)} - {"prompt", "seed"}
_SONG_KEYS = {"path", "prompts", "seeds", "name"}

#: Largest manifest read: a soundtrack of hundreds of songs is a few tens of kilobytes.
MAX_MANIFEST_BYTES = 1_000_000


@dataclass(frozen=True)
class BatchItem:
    """One take set of a batch: a song, a prompt, a seed, and where its files go."""

    song: Path
    settings: RenderSettings
    options: TakeSetOptions
    output: Path  # the main file (the stereo pair, or take A); the others beside it

    @property
    def key(self) -> str:
        return self.output.stem


def load_manifest(path: str | Path, output: str | Path | None = None) -> list[BatchItem]:
    """A manifest's items, in order: songs, then prompts, then seeds.

    The files go in the manifest's ``output`` folder, which must lie inside the manifest's
    own folder; ``output`` given here (the command line's ``--output``) goes anywhere.
    What they would replace is checked now (:func:`check_batch_outputs`).

    Raises:
        NeuroChipError: For a file that is not TOML, an unknown key, a missing song, or a
            bad setting, naming the song; an output folder outside the manifest's; outputs
            that would replace a song, the manifest, or a file NeuroChip did not write.
    """
    path = Path(path)
    try:
        # Bounded before and after parsing: a manifest may come from anywhere.
        text = untrusted.read_text_file(path, path.name, MAX_MANIFEST_BYTES)
    except OSError as err:
        raise NeuroChipError(f"Cannot read the manifest {path}: {err.strerror or err}.") from None
    manifest = untrusted.load_toml_text(text, path.name, max_bytes=MAX_MANIFEST_BYTES)
    untrusted.text(manifest, "output", path.name, None)
    untrusted.check_file_names([manifest.get("output")])
    unknown = set(manifest) - {"output", "defaults", "songs"}
    if unknown:
        raise NeuroChipError(f"{path.name}: unknown keys {', '.join(sorted(unknown))}.")
    base = path.parent
    output = Path(output) if output is not None else _output_folder(path, manifest.get("output"))
    defaults = manifest.get("defaults") or {}
    songs = manifest.get("songs") or []
    if not isinstance(defaults, Mapping) or not isinstance(songs, list) or not songs:
        raise NeuroChipError(f"{path.name}: give [defaults] and at least one [[songs]] table.")
    items: list[BatchItem] = []
    for number, song in enumerate(songs, start=1):
        items += _song_items(number, song, defaults, base, output)
    keys = [item.key for item in items]
    if len(set(keys)) < len(keys):
        raise NeuroChipError(f"{path.name}: two items would write one file; name the songs apart.")
    check_batch_outputs(items, inputs=[path])
    return items


def _output_folder(manifest: Path, value: Any) -> Path:
    """The manifest's output folder, refused when it leaves the manifest's folder (an
    absolute path, ``..``, a symbolic link out): a manifest from elsewhere must not write
    wherever it likes."""
    text = str(value or manifest.stem)
    folder = manifest.parent / text
    if Path(text).is_absolute() or not inside_folder(folder, manifest.parent):
        raise NeuroChipError(
            f'{manifest.name}: output = "{text}" is outside the manifest\'s folder: give a '
            'folder inside it (e.g. output = "renders"), or choose one with --output.'
        )
    return folder


def _song_items(
    number: int, song: Any, defaults: Mapping[str, Any], base: Path, output: Path
) -> list[BatchItem]:
    if not isinstance(song, Mapping) or "path" not in song:
        raise NeuroChipError(f"Song {number} of the manifest needs a path.")
    untrusted.text(song, "path", f"song {number}")
    untrusted.check_file_names([song["path"]])
    where = f"song {number} ({song['path']})"
    values = {**defaults, **{k: v for k, v in song.items() if k not in _SONG_KEYS}}
    unknown = set(values) - _SETTING_KEYS - _OPTION_KEYS - {"prompts", "seeds"}
    if unknown:
        raise NeuroChipError(f"{where}: unknown settings {', '.join(sorted(unknown))}.")
    prompts = song.get("prompts", defaults.get("prompts"))
    seeds = song.get("seeds", defaults.get("seeds", [RenderSettings().seed]))
    if not prompts or not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise NeuroChipError(f'{where}: give its prompts, e.g. prompts = ["a funk band"].')
    if not isinstance(seeds, list) or not all(type(s) is int for s in seeds) or not seeds:
        raise NeuroChipError(f"{where}: seeds must be a list of whole numbers, e.g. [1, 2].")
    sketch = (base / str(song["path"])).expanduser()
    if not sketch.is_file():
        raise NeuroChipError(f"{where}: there is no such file.")
    name = _slug(str(song.get("name") or sketch.stem))
    options = TakeSetOptions(**{k: v for k, v in values.items() if k in _OPTION_KEYS})
    shared = {k: v for k, v in values.items() if k in _SETTING_KEYS}
    items = []
    for p, prompt in enumerate(prompts, start=1):
        for seed in seeds:
            try:
                settings = RenderSettings.from_dict({**shared, "prompt": prompt, "seed": seed})
            except NeuroChipError as err:
                raise NeuroChipError(f"{where}: {err}") from None
            target = output / name / f"{name}-p{p}-seed{seed}.wav"
            items.append(BatchItem(sketch, settings, options, target))
    return items


def _slug(text: str) -> str:
    return re.sub(r"[^\w\-]+", "-", text).strip("-")[:60] or "song"


#: Where a batch may write instead, in its refusals.
_ELSEWHERE = "choose another output folder (output in the manifest, or --output)"

#: The fields of every index row (:func:`index_row`): an index.json written before the rows
#: carried their format is still ours when each row has them.
_INDEX_FIELDS = frozenset({"item", "song", "prompt", "seed", "file", "status"})


def check_batch_outputs(
    items: list[BatchItem], inputs: Iterable[Path] = (), home: Path | None = None
) -> None:
    """Refuse, before any render, a batch that would replace what it must not.

    The rule of every front end (:func:`~neurochip.library.metadata.check_output_files`)
    over every file of every item and their sidecars, and ``index.json`` / ``index.csv``:
    never a song of the batch (or ``inputs``: its manifest), nothing inside the take
    library (``home``, by default :func:`~neurochip.library.store.default_home`), and an
    existing file only when NeuroChip wrote it: an index only when it is a batch's index.

    Raises:
        NeuroChipError: Naming the file, and saying to move it or choose another folder.
    """
    if not items:
        return
    folder = items[0].output.parents[1]
    files = [folder / "index.json", folder / "index.csv"]
    for item in items:
        for take in output_paths(item.output, roles(item.options, item.settings)).values():
            files += [take, sidecar_path(take)]
    check_output_files(
        files,
        [*inputs, *(item.song for item in items)],
        home=home or default_home(),
        elsewhere=_ELSEWHERE,
        replace="move it",
        ours=_written_by_batch,
    )


def _written_by_batch(path: Path) -> bool:
    # index.csv has no room for a mark: it is ours when the index.json beside it is.
    if path.name == "index.csv":
        path = path.with_name("index.json")
    if path.name == "index.json" and _legacy_index(path):
        return True
    return written_by_neurochip(path)


def _legacy_index(path: Path) -> bool:
    """An index.json of an older NeuroChip: rows of index fields, no format on them."""
    try:
        if path.stat().st_size > MAX_OWNED_JSON_BYTES:
            return False
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return (
        isinstance(rows, list)
        and bool(rows)
        and all(isinstance(row, dict) and row.keys() >= _INDEX_FIELDS for row in rows)
    )


def is_finished(item: BatchItem) -> bool:
    """Whether the item's files are all there and its main file carries its settings."""
    targets = output_paths(item.output, roles(item.options, item.settings))
    if not all(path.is_file() for path in targets.values()):
        return False
    try:
        kept = read_take_metadata(item.output)["takes"]
    except (NeuroChipError, KeyError, TypeError):
        return False
    return kept.get("A") == item.settings.to_dict()


@dataclass
class BatchReport:
    """What a run did: items rendered now, skipped as done before, and failed (with why)."""

    rendered: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


def run_batch(
    engine: Engine,
    items: list[BatchItem],
    *,
    library: TakeLibrary | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: threading.Event | None = None,
    bit_depth: str = "16",
) -> BatchReport:
    """Render every item not finished before; write the index after each.

    An item's files are written on a thread of their own while the next item renders (the
    GPU never waits for a disk or an encoder); one write at a time, in the items' order.
    A failing item (a song that cannot be read, a setting this song cannot take, a file
    that cannot be written) is logged, listed in the index and the report, and the batch
    goes on; a cancel stops it between and inside items (what was written stays, and a
    write under way finishes).

    Raises:
        NeuroChipError: Before any render, for files the batch must not replace
            (:func:`check_batch_outputs`); on a cancel.
    """
    check_batch_outputs(items, home=library.root if library is not None else None)
    report = BatchReport()
    index: dict[str, dict[str, Any]] = {}
    folder = items[0].output.parents[1] if items else Path()
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
    writing: tuple[BatchItem, TakeSet, Future[None]] | None = None

    def save() -> None:  # rows in the manifest's order, whatever finished first
        write_index(folder, {i.key: index[i.key] for i in items if i.key in index})

    def failed(item: BatchItem, err: NeuroChipError) -> None:
        log.warning("%s failed: %s", item.key, err)
        report.failed[item.key] = str(err)
        index[item.key] = {**index_row(item), "status": "failed", "error": str(err)}

    def settle() -> None:
        """Wait for the item being written; index it as done or failed."""
        nonlocal writing
        if writing is None:
            return
        item, takes, future = writing
        writing = None
        try:
            future.result()
        except NeuroChipError as err:
            failed(item, err)
        else:
            report.rendered.append(item.key)
            index[item.key] = done_row(item, takes)
        save()

    try:
        for number, item in enumerate(items):

            def step(fraction: float, stage: str, number: int = number, key: str = item.key):
                if progress is not None:
                    progress((number + fraction) / len(items), f"{key}: {stage}")

            if is_finished(item):
                report.skipped.append(item.key)
                index[item.key] = {**index_row(item), "status": "done"}
                continue
            try:
                sketch = load_sketch(item.song)
                check_take_set(sketch.audio, item.settings, item.options)
                takes = render_take_set(
                    engine,
                    sketch,
                    item.settings,
                    item.options,
                    library=library,
                    progress=step,
                    cancel=cancel,
                )
            except NeuroChipError as err:
                if cancel is not None and cancel.is_set():
                    raise
                settle()
                failed(item, err)
                save()
            else:
                settle()
                writing = (item, takes, writer.submit(takes.write, item.output, bit_depth))
    finally:
        settle()  # a cancel or an error still finishes (and indexes) the item being written
        writer.shutdown()
    if items:
        save()
    return report


def index_row(item: BatchItem) -> dict[str, Any]:
    """What the index says of an item, whatever became of it."""
    return {
        "item": item.key,
        "song": str(item.song),
        "prompt": item.settings.prompt,
        "seed": item.settings.seed,
        "file": str(item.output),
    }


def done_row(item: BatchItem, takes: TakeSet) -> dict[str, Any]:
    """The index's row of an item rendered now: its takes in the library, its notes kept."""
    return {
        **index_row(item),
        "status": "done",
        "takes": takes.saved,
        "faithfulness": faithfulness_score(takes.main.metadata),
        "notes_kept": notes_kept_score(takes.main.metadata),
    }


def write_index(folder: Path, index: Mapping[str, Mapping[str, Any]]) -> None:
    """``index.json`` and ``index.csv`` of what the batch holds (atomically, each time)."""
    # Each row says NeuroChip wrote it, so a later run knows the index is its own to replace.
    rows = [{**row, "format": BATCH_INDEX_FORMAT} for row in index.values()]
    write_text_atomically(folder / "index.json", json.dumps(rows, indent=2) + "\n")
    columns = [
        "item", "song", "prompt", "seed", "status", "file", "notes_kept", "faithfulness", "error"
    ]  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(folder / "index.csv", out.getvalue())


__all__ = [
    "BatchItem",
    "BatchReport",
    "check_batch_outputs",
    "done_row",
    "index_row",
    "is_finished",
    "load_manifest",
    "run_batch",
    "write_index",
]
