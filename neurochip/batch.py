"""Batch renders: a soundtrack's songs x prompts x seeds from one manifest, resumable.

A manifest is TOML::

    output = "soundtrack"            # the output folder (relative to the manifest)

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
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.io.write import write_text_atomically
from neurochip.library.metadata import read_take_metadata
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import load_sketch
from neurochip.takeset import TakeSet, check_take_set, output_paths, render_take_set, roles

log = logging.getLogger(__name__)

_OPTION_KEYS = {f.name for f in dataclasses.fields(TakeSetOptions)}
_SETTING_KEYS = {f.name for f in dataclasses.fields(RenderSettings)} - {"prompt", "seed"}
_SONG_KEYS = {"path", "prompts", "seeds", "name"}


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


def load_manifest(path: str | Path) -> list[BatchItem]:
    """A manifest's items, in order: songs, then prompts, then seeds.

    Raises:
        NeuroChipError: For a file that is not TOML, an unknown key, a missing song, or a
            bad setting, naming the song.
    """
    try:
        import tomllib  # the standard library's from Python 3.11
    except ImportError:
        raise NeuroChipError("Batch manifests need Python 3.11 or later (tomllib).") from None
    path = Path(path)
    try:
        manifest = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise NeuroChipError(f"Cannot read the manifest {path}: {err}.") from None
    except tomllib.TOMLDecodeError as err:
        raise NeuroChipError(f"{path.name} is not valid TOML: {err}.") from None
    unknown = set(manifest) - {"output", "defaults", "songs"}
    if unknown:
        raise NeuroChipError(f"{path.name}: unknown keys {', '.join(sorted(unknown))}.")
    base = path.parent
    output = base / str(manifest.get("output") or path.stem)
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
    return items


def _song_items(
    number: int, song: Any, defaults: Mapping[str, Any], base: Path, output: Path
) -> list[BatchItem]:
    if not isinstance(song, Mapping) or "path" not in song:
        raise NeuroChipError(f"Song {number} of the manifest needs a path.")
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
    """
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
    score = takes.main.metadata.get("faithfulness")
    return {
        **index_row(item),
        "status": "done",
        "takes": takes.saved,
        "faithfulness": score.get("score") if isinstance(score, Mapping) else None,
    }


def write_index(folder: Path, index: Mapping[str, Mapping[str, Any]]) -> None:
    """``index.json`` and ``index.csv`` of what the batch holds (atomically, each time)."""
    rows = list(index.values())
    write_text_atomically(folder / "index.json", json.dumps(rows, indent=2) + "\n")
    columns = ["item", "song", "prompt", "seed", "status", "file", "faithfulness", "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(folder / "index.csv", out.getvalue())


__all__ = [
    "BatchItem",
    "BatchReport",
    "done_row",
    "index_row",
    "is_finished",
    "load_manifest",
    "run_batch",
    "write_index",
]
