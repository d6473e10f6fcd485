"""The workspace: what the app had open, kept on disk so a refresh or a restart brings it back.

NeuroChip is a local tool for one composer, so there is one workspace per home
(``$NEUROCHIP_HOME/workspace``, beside the take library). It holds:

- the sketch as it was loaded: the file's bytes, its name and the MIDI voices
  (``sketch.bin``, ``sketch.json``), so it is decoded again exactly as before;
- the page's state: settings and view choices, plain JSON (``state.json``);
- the last preview: its audio, pictures and note faithfulness (``preview.npz``,
  ``preview.json``; arrays only, read with ``allow_pickle=False``);
- the last variation grid of a preview region: each cell's audio, picture and note
  faithfulness, the same way (``grid.npz``, ``grid.json``);
- the last comparison of engines on a preview region: each engine's takes the same way, and
  its refusal where it had none (``comparison.npz``, ``comparison.json``).

Every file is written atomically. One that cannot be read is set aside as ``*.damaged`` and
treated as absent: a damaged workspace costs what it held, never the app.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from neurochip.engine import Render
from neurochip.engine_comparison import EngineRow
from neurochip.faithfulness import Faithfulness
from neurochip.io.audio import Audio
from neurochip.io.write import write_bytes_atomically, write_text_atomically
from neurochip.library.store import default_home
from neurochip.model_spec import ModelSpec
from neurochip.notes_kept import NotesKept
from neurochip.settings import RenderSettings
from neurochip.variations import Variation, VariationGrid

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The largest sketch file kept for reopening (uploads are limited to 200 MB anyway).
MAX_SKETCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, eq=False)
class Preview:
    """A finished preview: the take of a region, its note faithfulness, and what it was for.

    ``key`` is whatever the front end asked with (the app: song key, settings, region start),
    kept as JSON, so it can tell whether the preview is out of date.
    """

    song_key: str
    key: Any
    render: Render
    faithfulness: Faithfulness


@dataclass(frozen=True, eq=False)
class GridPreview:
    """A finished variation grid of a preview region, and what it was for.

    ``key`` is whatever the front end asked with (the app: song key, region start, quick
    previews), kept as JSON; the settings it was made with are ``grid.base``.
    """

    song_key: str
    key: Any
    grid: VariationGrid
    variations: list[Variation]


@dataclass(frozen=True, eq=False)
class ComparisonPreview:
    """A finished comparison of engines on a preview region, and what it was for.

    ``key`` is whatever the front end asked with (the app: song key, settings, region
    start, quick previews, seeds, engines), kept as JSON.
    """

    song_key: str
    key: Any
    rows: list[EngineRow]


@dataclass(frozen=True)
class SketchFile:
    """A sketch as it was loaded: enough to load it again."""

    data: bytes
    name: str
    voices: dict[str, str]
    decode_as: str  # a name whose suffix picks the decoder (the name itself, mostly)


class Workspace:
    """The open sketch, the page's settings, the last preview and the last variation grid of
    one NeuroChip home."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.root = Path(home).expanduser() if home is not None else default_home()
        self.root = self.root / "workspace"

    # -- the sketch --------------------------------------------------------------------------

    def keep_sketch(
        self,
        data: bytes,
        name: str,
        voices: Mapping[str, str] | None = None,
        decode_as: str | None = None,
    ) -> None:
        """Remember the sketch now open (its file, as loaded). Too large a file is skipped.

        ``decode_as`` names the file for its decoder when the bytes are not what ``name``
        says (a take library's FLAC copy of ``minuet.wav``)."""
        if len(data) > MAX_SKETCH_BYTES:
            log.info("Not keeping %s for reopening: %d bytes", name, len(data))
            return
        self.root.mkdir(parents=True, exist_ok=True)
        # The bytes first: a crash between the two writes leaves the old name with new bytes
        # only if the JSON fails, and then the load check (length) sets both aside.
        write_bytes_atomically(self.root / "sketch.bin", data)
        meta = {
            "name": name,
            "voices": dict(voices or {}),
            "size": len(data),
            "decode_as": decode_as or name,
        }
        write_text_atomically(self.root / "sketch.json", json.dumps(meta))

    def sketch(self) -> SketchFile | None:
        """The sketch last kept, or None."""
        meta = self._read_json("sketch.json")
        if meta is None:
            return None
        try:
            data = (self.root / "sketch.bin").read_bytes()
            if len(data) != meta["size"] or not isinstance(meta["name"], str):
                raise ValueError("the sketch file does not match its description")
            voices = {str(k): str(v) for k, v in dict(meta.get("voices") or {}).items()}
            return SketchFile(
                data, meta["name"], voices, str(meta.get("decode_as") or meta["name"])
            )
        except (OSError, KeyError, TypeError, ValueError) as err:
            self._set_aside("sketch.json", err)
            self._set_aside("sketch.bin", err)
            return None

    def forget_sketch(self) -> None:
        shown = ("preview", "grid", "comparison")
        for name in (*_SKETCH_FILES, *(f"{s}.{ext}" for s in shown for ext in ("json", "npz"))):
            (self.root / name).unlink(missing_ok=True)

    # -- the page's state --------------------------------------------------------------------

    def keep_state(self, state: Mapping[str, Any]) -> None:
        """Remember the page's settings and choices (JSON-able values)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.root / "state.json", json.dumps(dict(state), sort_keys=True))

    def state(self) -> dict[str, Any]:
        """The state last kept ({} if none)."""
        state = self._read_json("state.json")
        return state if isinstance(state, dict) else {}

    # -- the last preview --------------------------------------------------------------------

    def keep_preview(self, preview: Preview) -> None:
        """Remember the newest finished preview (the one the page shows)."""
        arrays = _render_arrays(preview.render, preview.faithfulness)
        meta = {
            "song_key": preview.song_key,
            "key": preview.key,
            **_render_meta(preview.render, preview.faithfulness),
        }
        self._write("preview", arrays, meta)

    def preview(self) -> Preview | None:
        """The preview last kept, or None."""

        def build(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Preview:
            render, faithfulness = _render_from(arrays, meta)
            return Preview(str(meta["song_key"]), _key(meta["key"]), render, faithfulness)

        return self._read("preview", build)

    # -- the last variation grid -------------------------------------------------------------

    def keep_grid(self, grid: GridPreview) -> None:
        """Remember the newest finished variation grid of a preview region."""
        arrays: dict[str, np.ndarray] = {}
        cells = []
        for i, variation in enumerate(grid.variations):
            arrays |= _render_arrays(variation.render, variation.faithfulness, f"{i}_")
            cells.append(_variation_meta(variation))
        _share_equal_arrays(arrays, len(cells), ("source", "input_image"))
        meta = {
            "song_key": grid.song_key,
            "key": grid.key,
            "grid": grid.grid.to_dict(),
            "cells": cells,
        }
        self._write("grid", arrays, meta)

    def grid(self) -> GridPreview | None:
        """The variation grid last kept, or None."""

        def build(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> GridPreview:
            grid = VariationGrid.from_dict(meta["grid"])
            variations = []
            for i, cell in enumerate(meta["cells"]):
                variations.append(_variation_from(arrays, cell, f"{i}_"))
            if [v.settings for v in variations] != grid.cells:
                raise ValueError("the cells do not match the grid")
            return GridPreview(str(meta["song_key"]), _key(meta["key"]), grid, variations)

        return self._read("grid", build)

    # -- the last comparison of engines -------------------------------------------------------

    def keep_comparison(self, comparison: ComparisonPreview) -> None:
        """Remember the newest finished comparison of engines on a preview region."""
        arrays: dict[str, np.ndarray] = {}
        rows = []
        for i, row in enumerate(comparison.rows):
            cells = []
            for k, cell in enumerate(row.cells):
                arrays |= _render_arrays(cell.render, cell.faithfulness, f"{i}_{k}_")
                cells.append(_variation_meta(cell))
            rows.append(
                {
                    "kind": row.kind,
                    "name": row.name,
                    "spec": None if row.spec is None else row.spec.to_dict(),
                    "settings": None if row.settings is None else row.settings.to_dict(),
                    "seconds": row.seconds,
                    "load_s": row.load_s,
                    "error": row.error,
                    "cells": cells,
                }
            )
        meta = {"song_key": comparison.song_key, "key": comparison.key, "rows": rows}
        self._write("comparison", arrays, meta)

    def comparison(self) -> ComparisonPreview | None:
        """The comparison of engines last kept, or None."""

        def build(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> ComparisonPreview:
            rows = []
            for i, kept in enumerate(meta["rows"]):
                cells = []
                for k, cell in enumerate(kept["cells"]):
                    cells.append(_variation_from(arrays, cell, f"{i}_{k}_"))
                spec, settings = kept["spec"], kept["settings"]
                rows.append(
                    EngineRow(
                        kind=str(kept["kind"]),
                        name=str(kept["name"]),
                        spec=None if spec is None else ModelSpec.from_dict(spec),
                        settings=None if settings is None else RenderSettings.from_dict(settings),
                        cells=cells,
                        seconds=_number(kept["seconds"]),
                        load_s=_number(kept["load_s"]),
                        error=None if kept["error"] is None else str(kept["error"]),
                    )
                )
            return ComparisonPreview(str(meta["song_key"]), _key(meta["key"]), rows)

        return self._read("comparison", build)

    # -- files -------------------------------------------------------------------------------

    def _write(self, name: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """``name.npz`` (the arrays), then ``name.json`` (what they are), each atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.root.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(self.root / f"{name}.npz", buffer.getvalue())
        write_text_atomically(self.root / f"{name}.json", json.dumps(meta))

    def _read(
        self, name: str, build: Callable[[dict[str, np.ndarray], dict[str, Any]], T]
    ) -> T | None:
        """``build(arrays, meta)`` of what :meth:`_write` wrote, or None: absent, or damaged
        (unreadable, or refused by ``build``) and then set aside."""
        meta = self._read_json(f"{name}.json")
        if meta is None:
            return None
        try:
            if not isinstance(meta, dict):
                raise ValueError(f"{name}.json is not a description")
            with np.load(self.root / f"{name}.npz", allow_pickle=False) as arrays:
                data = {key: arrays[key] for key in arrays.files}
            return build(data, meta)
        except Exception as err:  # noqa: BLE001 -- any damage: set aside, never fatal
            self._set_aside(f"{name}.json", err)
            self._set_aside(f"{name}.npz", err)
            return None

    def _read_json(self, name: str) -> Any:
        path = self.root / name
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            self._set_aside(name, err)
            return None

    def _set_aside(self, name: str, err: BaseException) -> None:
        path = self.root / name
        if not path.exists():
            return
        log.warning("Workspace file %s cannot be used (%s): set aside", path, err)
        try:
            path.replace(path.with_name(name + ".damaged"))
        except OSError:
            path.unlink(missing_ok=True)


_SKETCH_FILES = ("sketch.json", "sketch.bin")


def _key(value: Any) -> Any:
    """A front end's key as it was kept: JSON made its tuple a list."""
    return tuple(value) if isinstance(value, list) else value


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _render_arrays(render: Render, faith: Faithfulness, prefix: str = "") -> dict[str, np.ndarray]:
    """A render's and its note faithfulness's arrays, named ``prefix + name``.

    Pictures are kept in float16: they are drawn, never rendered from again."""
    arrays = {
        "audio": render.audio.samples,
        "source": render.source.samples,
        "input_image": render.input_image.to(torch.float16).numpy(),
        "output_image": render.output_image.to(torch.float16).numpy(),
        "times_s": np.asarray(faith.times_s, dtype=np.float64),
        "strip": np.asarray(faith.strip, dtype=np.float64),
    }
    return {prefix + name: array for name, array in arrays.items()}


def _render_meta(render: Render, faith: Faithfulness) -> dict[str, Any]:
    """The rest of a render and its note faithfulness, as JSON-able values."""
    return {
        "sample_rate": render.audio.sample_rate,
        "settings": render.settings.to_dict(),
        "start_s": render.start_s,
        "info": render.info,
        "faithfulness": {
            "score": faith.score,
            "segment": faith.segment,
            "duration_s": faith.duration_s,
            "counted_s": faith.counted_s,
            "notes": None if faith.notes is None else faith.notes.to_dict(),
        },
    }


def _render_from(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], prefix: str = ""
) -> tuple[Render, Faithfulness]:
    """The render and note faithfulness :func:`_render_arrays` and :func:`_render_meta` kept."""

    def array(name: str) -> np.ndarray:
        # A grid keeps what all its cells share once, unprefixed (_share_equal_arrays).
        return arrays[prefix + name] if prefix + name in arrays else arrays[name]

    rate = int(meta["sample_rate"])
    faith = meta["faithfulness"]
    render = Render(
        audio=Audio(array("audio").astype(np.float32), rate),
        source=Audio(array("source").astype(np.float32), rate),
        settings=RenderSettings.from_dict(meta["settings"]),
        input_image=torch.from_numpy(array("input_image").astype(np.float32)),
        output_image=torch.from_numpy(array("output_image").astype(np.float32)),
        start_s=float(meta["start_s"]),
        info=dict(meta.get("info") or {}),
    )
    faithfulness = Faithfulness(
        score=float(faith["score"]),
        times_s=array("times_s"),
        strip=array("strip"),
        segment=faith["segment"],
        duration_s=float(faith["duration_s"]),
        counted_s=float(faith["counted_s"]),
        notes=_notes_kept(faith.get("notes")),
    )
    return render, faithfulness


def _variation_meta(variation: Variation) -> dict[str, Any]:
    """A grid's or a comparison's cell as JSON-able values (its arrays kept beside)."""
    return {
        "label": variation.label,
        "region": variation.region,
        **_render_meta(variation.render, variation.faithfulness),
    }


def _variation_from(
    arrays: Mapping[str, np.ndarray], cell: Mapping[str, Any], prefix: str
) -> Variation:
    """A grid's or a comparison's kept cell: its render, note faithfulness, label, region."""
    render, faithfulness = _render_from(arrays, cell, prefix)
    region = cell["region"]
    return Variation(
        settings=render.settings,
        render=render,
        faithfulness=faithfulness,
        label=str(cell["label"]),
        region=(float(region[0]), float(region[1])) if region else None,
    )


def _notes_kept(data: Any) -> NotesKept | None:
    """A kept note measure; ``None`` if absent (kept before notes were counted) or damaged."""
    if not isinstance(data, Mapping):
        return None
    try:
        return NotesKept.from_dict(data)
    except ValueError as err:
        log.warning("A kept note measure could not be read (%s): it is left out", err)
        return None


def _share_equal_arrays(arrays: dict[str, np.ndarray], cells: int, names: tuple[str, ...]) -> None:
    """Keep an array all cells have equal once, unprefixed: a grid's cells share the sketch's
    region (its sound and picture), which would otherwise be kept once per cell."""
    for name in names:
        first = arrays[f"0_{name}"]
        if all(np.array_equal(arrays[f"{i}_{name}"], first) for i in range(1, cells)):
            for i in range(cells):
                del arrays[f"{i}_{name}"]
            arrays[name] = first
