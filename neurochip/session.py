"""A composer's session: everything they set up, as one typed object kept in the workspace.

The app's pages are views of it: a widget shows a field and writes a change back into it,
and every change is saved (``state.json`` in the workspace), so a refresh, a trip to
another page or a restart finds the session as it was. What belongs to one song (its span,
sections, stems, bar grid, grid fields, loop) is kept per song, so opening another song and
coming back finds that song's setup too.

Nothing here knows of Streamlit: the same object could back another front end.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from neurochip.bars import BarGrid
from neurochip.model_spec import KINDS, ModelSpec
from neurochip.settings import RenderSettings, TakeSetOptions, default_of

#: How many songs' setups are kept (the most recently opened).
KEPT_SONGS = 20

#: Where a song's bar grid came from, as the page says it.
GRID_SOURCES = ("detected", "typed")

#: The prompt a first session starts with: an empty prompt is a poor first impression.
DEFAULT_PROMPT = "a funk band with slap bass, live recording"


def _render_default(name: str) -> Any:
    return default_of(RenderSettings, name)


@dataclass
class Settings:
    """The render settings Arrange shows, as set (a half-typed prompt included)."""

    prompt: str = DEFAULT_PROMPT
    negative_prompt: str = field(default_factory=lambda: _render_default("negative_prompt"))
    denoise: float = field(default_factory=lambda: _render_default("denoise"))
    guidance: float = field(default_factory=lambda: _render_default("guidance"))
    steps: int = field(default_factory=lambda: _render_default("steps"))
    seed: int = field(default_factory=lambda: _render_default("seed"))
    scheduler: str = field(default_factory=lambda: _render_default("scheduler"))
    overlap: float = field(default_factory=lambda: _render_default("overlap"))
    windows: str = field(default_factory=lambda: _render_default("windows"))
    feature_reuse: int = field(default_factory=lambda: _render_default("feature_reuse"))
    guidance_until: float = field(default_factory=lambda: _render_default("guidance_until"))
    cover_strength: float = field(default_factory=lambda: _render_default("cover_strength"))
    shift: float = field(default_factory=lambda: _render_default("shift"))
    width: float = field(default_factory=lambda: default_of(TakeSetOptions, "width"))

    def render_settings(self) -> RenderSettings:
        """These as RenderSettings (raises NeuroChipError saying which one is invalid)."""
        values = dataclasses.asdict(self)
        del values["width"]  # the stereo pair's, not a take's
        return RenderSettings(**values)

    @staticmethod
    def owner(name: str) -> type:
        """The settings class whose field ``name`` describes (label, help, range)."""
        return TakeSetOptions if name == "width" else RenderSettings


@dataclass
class View:
    """How the pages show things: choices that are not about one song."""

    auto_preview: bool = True
    quick_preview: bool = False
    stereo_pair: bool = True
    compare: bool = False
    download_format: str = ".wav"
    takes_search: str = ""
    takes_song: str = "All songs"
    takes_sort: str = "Newest first"
    takes_starred_only: bool = False
    takes_compare: bool = False
    takes_comp: bool = False
    takes_format: str = ".wav"
    pair_width: float = 1.0
    compare_seeds: int = 2  # Compare engines: seeds per engine
    compare_kinds: str | None = None  # Compare engines: kinds picked, "a,b"; None: all there
    #: Each engine kind's model source last used (the Model page's *Use this model*, the
    #: server's ``--model``): what Compare engines loads for a kind not in use now.
    engine_sources: dict[str, str] = field(default_factory=dict)
    piano_roll: bool = False  # Arrange: the preview's piano roll shown
    takes_piano_roll: bool = False  # Takes: the open take's piano roll shown


@dataclass
class SongSetup:
    """What the composer set up on one song."""

    start_s: float = 0.0  # the render's span
    duration_s: float | None = None  # None: to the end of the song
    preview_start_s: float = 0.0
    loop: bool = False
    compare_at_s: float | None = None  # None: a third of the span
    sections: list[dict[str, Any]] = field(default_factory=list)  # the table's rows, as typed
    transition_s: float | None = None  # None: one bar (2 s without bars)
    stems_on: bool = False
    stems: list[dict[str, Any]] | None = None  # the instrument map as typed; None: the default
    bar_grid: BarGrid | None = None  # an audio song's bars (MIDI brings its own)
    bar_grid_source: str = "detected"
    grid_seeds: str | None = None  # None: follow the seed (the seed and its next two)
    grid_axis: str = "denoise"
    grid_values: dict[str, str] = field(default_factory=dict)  # axis -> values as typed


@dataclass
class ComposerSession:
    """Everything a composer set up, in one place; the app's single source of truth."""

    settings: Settings = field(default_factory=Settings)
    model: ModelSpec = field(default_factory=ModelSpec)  # the Model & device page's choice
    view: View = field(default_factory=View)
    song_key: str | None = None  # the song open on Arrange
    songs: dict[str, SongSetup] = field(default_factory=dict)
    last_render: dict[str, Any] | None = None  # {"key": song key, "result": role -> take id, ...}

    def use_model(self, spec: ModelSpec) -> None:
        """Use model ``spec`` from now on, remembering the source each engine kind used last
        (the one in use until now too: its kind's last-used source)."""
        for used in (self.model, spec):
            if used.source.strip():
                self.view.engine_sources[used.kind] = used.source
        self.model = spec

    def song(self, key: str) -> SongSetup:
        """The setup of song ``key`` (a new one for a song never set up), most recent last."""
        setup = self.songs.pop(key, None) or SongSetup()
        self.songs[key] = setup
        while len(self.songs) > KEPT_SONGS:
            del self.songs[next(iter(self.songs))]
        return setup

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (see :meth:`from_dict`)."""
        data = dataclasses.asdict(self)
        for key, setup in self.songs.items():
            grid = setup.bar_grid
            data["songs"][key]["bar_grid"] = grid.to_dict() if grid is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Any) -> ComposerSession:
        """The session ``data`` holds; a field that is missing or of the wrong kind (an older
        or damaged file) takes its default, and the rest are kept."""
        data = data if isinstance(data, dict) else {}
        if "songs" not in data and "settings" in data:
            data = _from_first_format(data)
        songs = data.get("songs") if isinstance(data.get("songs"), dict) else {}
        session = cls(
            settings=_read(Settings, data.get("settings")),
            model=_read_model(data.get("model")),
            view=_read(View, data.get("view")),
            song_key=data.get("song_key") if isinstance(data.get("song_key"), str) else None,
            last_render=data.get("last_render")
            if isinstance(data.get("last_render"), dict)
            else None,
        )
        sources = session.view.engine_sources  # a kind this NeuroChip does not know: left out
        session.view.engine_sources = {k: v for k, v in sources.items() if k in KINDS and v}
        for key, setup in list(songs.items())[-KEPT_SONGS:]:
            if isinstance(key, str) and isinstance(setup, dict):
                session.songs[key] = _read_setup(setup)
        return session


def field_paths() -> list[str]:
    """Every field a composer sets, as "settings.denoise", "song.loop"...: what the app shows."""
    paths = [f"{part}.{f.name}" for part, kind in _PARTS.items() for f in dataclasses.fields(kind)]
    return paths + [f"song.{f.name}" for f in dataclasses.fields(SongSetup)]


_PARTS: dict[str, type] = {"settings": Settings, "model": ModelSpec, "view": View}


def _fits(value: Any, default: Any, annotation: str) -> bool:
    """Whether a value read from a file may stand for a field with this default and type."""
    if value is None:
        return "None" in annotation
    if "list" in annotation:
        return isinstance(value, list) and all(isinstance(row, dict) for row in value)
    if "dict" in annotation:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if "float" in annotation:
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if "int" in annotation:
        return isinstance(value, int) and not isinstance(value, bool)
    kind = type(default) if default is not None else str
    return isinstance(value, kind)


def _read(kind: type, data: Any) -> Any:
    data = data if isinstance(data, dict) else {}
    defaults, values = kind(), {}
    for f in dataclasses.fields(kind):
        value = data.get(f.name)
        if f.name in data and _fits(value, getattr(defaults, f.name), str(f.type)):
            floats = "float" in str(f.type) and value is not None
            values[f.name] = float(value) if floats else value
    return kind(**values)


def _read_model(data: Any) -> ModelSpec:
    """The model spec a session kept (before ModelSpec, a ``ModelChoice`` of the same field
    names less kind, compile and channels_last); an unknown kind takes the default too."""
    data = data if isinstance(data, dict) else {}
    if data.get("kind") not in KINDS:
        data = {k: v for k, v in data.items() if k != "kind"}
    return _read(ModelSpec, data)


def _read_setup(data: dict[str, Any]) -> SongSetup:
    setup = _read(SongSetup, {k: v for k, v in data.items() if k != "bar_grid"})
    setup.bar_grid = BarGrid.from_dict(data.get("bar_grid"))
    if setup.bar_grid_source not in GRID_SOURCES:
        setup.bar_grid_source = "detected"
    return setup


def _from_first_format(data: dict[str, Any]) -> dict[str, Any]:
    """A ``state.json`` of NeuroChip before the session model: the same fields under the
    names the page's widgets had."""
    view_names = {
        "auto_preview": "auto_preview",
        "quick_preview": "quick_preview",
        "render_pair": "stereo_pair",
        "render_compare": "compare",
    }
    view = {new: data[old] for old, new in view_names.items() if old in data}
    songs: dict[str, dict[str, Any]] = {}
    span = data.get("render_span")
    if isinstance(span, list) and len(span) == 3 and isinstance(span[0], str):
        songs[span[0]] = {"start_s": span[1], "duration_s": span[2]}
        song = songs[span[0]]
        song.update(loop=data.get("render_loop", False), sections=data.get("sections_rows", []))
        song.update(
            stems_on=data.get("render_stems_on", False),
            preview_start_s=data.get("preview_start", 0.0),
        )
    grid = data.get("bar_grid")
    if isinstance(grid, dict) and isinstance(grid.get("key"), str):
        song = songs.setdefault(grid["key"], {})
        song.update(bar_grid=grid, bar_grid_source=grid.get("source") or "typed")
    stems = data.get("stems_rows")
    for key, rows in stems.items() if isinstance(stems, dict) else ():
        songs.setdefault(key, {})["stems"] = rows
    render = data.get("last_render")
    return {
        "settings": data.get("settings"),
        "model": data.get("model"),
        "view": view,
        "songs": songs,
        "song_key": span[0] if songs and isinstance(span, list) else None,
        "last_render": render,
    }
