"""The song open on Arrange: its sketch loaded as a job, its bar grid, its tables' rows.

The loaded ``Sketch`` is this browser session's (a session may load another song than a
second tab); what the composer set up on it lives in the session model (``state.song()``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from app import push, state, ui
from neurochip.bars import BarGrid, estimate_bar_grid
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.jobs import DONE, FAILED, Job
from neurochip.settings import RenderSettings, Section
from neurochip.sketch import SKETCH_SUFFIXES, Sketch, load_sketch
from neurochip.stems import Stem, check_stems, default_stems
from neurochip.timeline import ordered_sections, parse_section

UPLOAD_SUFFIXES = list(SKETCH_SUFFIXES)
DEMO_SKETCH = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"

log = logging.getLogger(__name__)


def current_sketch() -> Sketch | None:
    return st.session_state.get("sketch")


def restore_session() -> None:
    """Once per browser session: what the last one left (a refresh and a restart both start
    a new session). The sketch is loaded again as a job, with its progress on Arrange."""
    if st.session_state.get("_restored"):
        return
    st.session_state["_restored"] = True
    # Said once, to the first page of a new server: what the last one did not live to finish.
    st.session_state["interrupted"] = ui.board().interrupted()
    kept = state.workspace()
    preview = kept.preview()
    if preview is not None:
        st.session_state["last_preview"] = preview
    grid = kept.grid()
    if grid is not None:
        st.session_state["last_grid"] = grid
    sketch_file = kept.sketch()
    if sketch_file is not None and current_sketch() is None:
        reopen(sketch_file.data, sketch_file.name, sketch_file.voices, sketch_file.decode_as)


def demo_sketch() -> Sketch:
    """The demo sketch: Greensleeves as a chip-tune MIDI file (assets/greensleeves.mid)."""
    return load_sketch(DEMO_SKETCH)


def open_demo() -> None:
    cancel_loading()
    set_sketch(demo_sketch(), source=(DEMO_SKETCH.read_bytes(), DEMO_SKETCH.name))


def accept_upload(upload: Any) -> None:
    """Start loading an uploaded file (``name``, ``file_id``, file-like) as the sketch.

    Loading runs as a job (a MIDI file is synthesised, which can take seconds), so the page
    shows its progress and a Cancel button. Until it succeeds, the sketch already loaded stays,
    with its settings, preview and takes; a file that cannot be read changes nothing else.
    """
    st.session_state["upload_id"] = upload.file_id
    reopen(upload.getvalue(), upload.name, {}, upload.name, verb="Reading")


def reopen(data: bytes, name: str, voices: dict[str, str], decode_as: str, verb="Reopening"):
    """Load a kept sketch file as the load job; ``decode_as`` names it for its decoder.

    An audio sketch gets its bar grid: the one kept with the song's setup, else a guess by
    beat tracking (MIDI knows its own bars).
    """
    grids = {key: setup.bar_grid for key, setup in state.composer().songs.items()}

    def load(progress, cancel) -> Sketch:
        sketch = load_sketch(data, name=decode_as, voices=voices, progress=progress, cancel=cancel)
        sketch = dataclasses.replace(sketch, name=name)
        if sketch.midi is None:
            progress(0.97, "finding the beat")
            sketch = sketch.with_bar_grid(grids.get(sketch.key) or detect_bar_grid(sketch))
        return sketch

    start_loading(load, f"{verb} {name}", source=(data, name, decode_as))


def change_voices(sketch: Sketch, voices: dict[str, str]) -> None:
    """Start synthesising a MIDI sketch again with other voices, as a job (see accept_upload)."""

    def load(progress, cancel) -> Sketch:
        return sketch.with_voices(voices, progress, cancel)

    start_loading(
        load,
        f"Playing {sketch.name} with the new voices",
        source=(sketch.midi, sketch.name),
        voices=(sketch.key, voices),
    )


def start_loading(
    work: Callable[..., Sketch], label: str, source: tuple, voices: Any = None
) -> None:
    """Run ``work`` (returns a Sketch) as the load job; ``source`` is the file's bytes, name
    (and the name to decode it as), kept in the workspace once the sketch is adopted."""
    previous = st.session_state.get("load_job")
    if previous is not None:
        previous.cancel()  # the newest file (or voice choice) wins
    st.session_state["load_job"] = job = Job(work, name="load").start()
    push.rerun_when_finished(job)
    st.session_state["load_label"] = label
    st.session_state["load_source"] = source
    st.session_state["load_voices"] = voices
    ui.forget("upload_error", "upload_error_look")


def cancel_loading() -> None:
    """Stop the load in progress, if any: its sketch is not wanted any more."""
    job = st.session_state.get("load_job")
    if job is not None:
        job.cancel()
        st.session_state["load_adopted"] = job


def loading_voices() -> Any:
    """(sketch key, voices) of the voice change being synthesised or last tried, else None."""
    job = st.session_state.get("load_job")
    return st.session_state.get("load_voices") if job is not None else None


def adopt_loaded_sketch() -> None:
    """Take a finished load's sketch, or show its error; once per load, on a full page run.

    A failed or cancelled voice change puts the voice pickers back to what is playing.
    """
    job = st.session_state.get("load_job")
    if job is None or not job.finished or st.session_state.get("load_adopted") is job:
        return
    st.session_state["load_adopted"] = job
    current = current_sketch()
    if job.state == DONE:
        set_sketch(job.result, source=st.session_state.get("load_source"))
        last = st.session_state.get("last_preview")
        voice_change = st.session_state.get("load_voices") is not None
        if (
            voice_change
            and current is not None
            and last is not None
            and last.song_key == current.key
        ):
            # The same song with other voices: its last preview stays on the page, marked out
            # of date (no key matches it), until the new voices' preview is ready.
            st.session_state["last_preview"] = dataclasses.replace(
                last, song_key=job.result.key, key=None
            )
        return
    if job.state == FAILED:
        kept = f" {current.name} is still loaded." if current is not None else ""
        reopening = state.workspace().sketch() if current is None else None
        if reopening is not None:  # it cut short the kept song's reopening: that goes on
            reopen(reopening.data, reopening.name, reopening.voices, reopening.decode_as)
            kept = f" {reopening.name} is loaded again."
        st.session_state["upload_error"] = f"{job.error}{kept}"
        shown = st.session_state.get("last_settings")
        if shown is not None:  # said until a setting moves on (arrange.py)
            st.session_state["upload_error_look"] = take_look(shown)
        if st.session_state.get("load_voices") is None:  # a file, not a voice change
            # A new key empties the uploader (Streamlit's way to reset a file_uploader), so
            # its box never shows a file that is not the loaded song.
            st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
    if current is not None and st.session_state.get("load_voices") is not None:
        st.session_state["load_voices"] = None
        state.redraw()  # the voice pickers show what is playing


def set_sketch(sketch: Sketch | None, source: tuple | None = None) -> None:
    """Open ``sketch``; ``source`` (its file's bytes and name) is kept to reopen it later."""
    previous = ui.board().get("preview")
    asked = previous.info.get("key") if previous is not None else None
    if previous is not None and (sketch is None or not asked or asked[0] != sketch.key):
        previous.job.cancel()  # the old song's preview would only delay the new one's
        ui.board().forget("preview")
    st.session_state["sketch"] = sketch
    session = state.composer()
    session.song_key = sketch.key if sketch is not None else None
    if sketch is not None:
        setup = session.song(sketch.key)
        if sketch.midi is None and setup.bar_grid is None and sketch.bar_grid is not None:
            setup.bar_grid, setup.bar_grid_source = sketch.bar_grid, "detected"
    state.save()
    ui.forget("preview_key")
    opened = st.session_state.get("opened_take")
    if opened is not None and (sketch is None or opened.get("song_key") != sketch.key):
        ui.forget("opened_take")  # another song: Render would not make that take again
    finished = ui.job_of("render")
    if finished is not None and finished.finished:
        ui.board().forget("render")  # the last song's results (its takes stay on Takes)
    last = st.session_state.get("last_preview")
    if sketch is not None and last is not None and last.song_key == sketch.key:
        # This song's last preview is on screen: with the same settings it is not stale,
        # so reopening the song (a refresh) renders nothing new.
        st.session_state["preview_key"] = last.key
    if sketch is not None and source is not None:
        try:
            state.workspace().keep_sketch(*source[:2], sketch.voices, *source[2:])
        except OSError as err:
            st.toast(
                f"Could not keep {sketch.name} for next time: {err}", icon=":material/warning:"
            )


# --- bars -------------------------------------------------------------------------------------


def detect_bar_grid(sketch: Sketch) -> BarGrid | None:
    """Beat tracking's guess at the bars (None where it finds no steady beat: bars are a
    nicety, never worth a failed load)."""
    try:
        return estimate_bar_grid(sketch.audio)
    except Exception as err:  # noqa: BLE001
        log.warning("No bar grid for %s: %s", sketch.name, err)
        return None


def set_bar_grid(grid: BarGrid | None, source: str) -> None:
    """The bar grid of the open (audio) sketch, "typed" or "detected": its takes and
    pictures follow, and the song's setup keeps it."""
    sketch = current_sketch()
    if sketch is None or sketch.midi is not None:
        return
    st.session_state["sketch"] = sketch.with_bar_grid(grid)
    setup = state.song(sketch.key)
    setup.bar_grid, setup.bar_grid_source = grid, source
    state.save()


def bar_grid_source(sketch: Sketch) -> str:
    """Where the open song's bars come from, as the page says it."""
    if sketch.midi is not None:
        return "from the MIDI file"
    return state.song(sketch.key).bar_grid_source


def song_bars(sketch: Sketch) -> list[float] | None:
    """Where the open song's bars start (MIDI: its tempo map; audio: its grid), or None."""
    return ui.memo("song_bars", (sketch.key, sketch.bar_grid), lambda: sketch_bar_times(sketch))


# --- an opened take ---------------------------------------------------------------------------


def open_take(take: Any) -> None:
    """Arrange with a take's settings and span and, where the library kept it, its sketch."""
    settings = take.settings()
    state.set_settings(
        **{name: getattr(settings, name) for name in ui.SETTING_NAMES if hasattr(settings, name)}
    )
    until = "the end" if settings.duration_s is None else f"{settings.duration_s:g} s"
    key = take.metadata.get("sketch_key")
    other_model = ui.other_model_note(take.metadata)
    again = (
        "Render makes it again; change anything to go on from it."
        if other_model is None
        else other_model
    )
    st.session_state["opened_take"] = {
        "text": f"Opened {take.name}: its settings (seed {settings.seed}), from "
        f"{settings.start_s:g} s for {until}. {again}",
        "look": take_look(settings),
        "song_key": key,  # said while its song is the one open
    }
    current = current_sketch()
    if key:
        setup = state.song(key)  # the take's song: its span and preview region are the take's
        setup.start_s, setup.duration_s = float(settings.start_s), settings.duration_s
        setup.preview_start_s = max(0.0, float(settings.start_s))
        setup.loop = bool(settings.loop)
        state.save()
    if key and (current is None or current.key != key):
        kept = ui.library().source(key)
        if kept is not None:
            reopen(kept.data, kept.name, kept.voices, kept.decode_as, verb="Opening")
        else:
            st.session_state["upload_error"] = (
                f"The song of {take.name} was not kept with it (made before NeuroChip kept "
                "songs, or its copy was removed): upload it again to render more of it."
            )


def take_look(settings: RenderSettings) -> tuple[Any, ...]:
    """What Arrange's notice of an opened take stays for: its main settings unchanged."""
    return (settings.prompt, settings.seed, settings.denoise, settings.guidance, settings.steps)


# --- the tables -------------------------------------------------------------------------------


def sections_from_rows(rows: list[dict], bars_s: list[float] | None) -> tuple[Section, ...]:
    """The sections table's rows (start, prompt, denoise, guidance) as a timeline.

    Raises:
        NeuroChipError: Saying which row is wrong and how.
    """
    sections = []
    for number, row in enumerate(rows, start=1):
        start, prompt = cell_text(row.get("start")), cell_text(row.get("prompt"))
        if not start or not prompt:
            raise NeuroChipError(f"Section {number} needs both a start and a prompt.")
        try:
            found = parse_section(f"{start}={prompt}", bars_s)
            sections.append(dataclasses.replace(found, **_numbers(row)))
        except (NeuroChipError, ValueError) as err:
            raise NeuroChipError(f"Section {number}: {err}") from None
    return ordered_sections(sections)


def stem_rows(sketch: Sketch) -> list[dict]:
    """The instrument map's rows for this song: as last edited, else a stem per part with
    its default instrument."""
    rows = state.song(sketch.key).stems
    if rows:
        return list(rows)
    return [
        {"name": s.name, "parts": "+".join(s.parts), "prompt": s.prompt}
        for s in default_stems(sketch)
    ]


def stems_from_rows(rows: list[dict], sketch: Sketch) -> list[Stem]:
    """The instrument map's rows (name, parts "2+3", prompt, denoise, guidance) as stems.

    Raises:
        NeuroChipError: Saying which row is wrong and how.
    """
    stems = []
    for number, row in enumerate(rows, start=1):
        name = cell_text(row.get("name")) or f"Stem {number}"
        parts = tuple(p for p in re.split(r"[+,\s]+", cell_text(row.get("parts"))) if p)
        try:
            stems.append(Stem(name, parts, cell_text(row.get("prompt")), **_numbers(row)))
        except (NeuroChipError, ValueError) as err:
            raise NeuroChipError(f"Stem row {number}: {err}") from None
    check_stems(sketch, stems)
    return stems


def _numbers(row: dict) -> dict[str, float]:
    numbers = {k: row.get(k) for k in ("denoise", "guidance")}
    return {k: float(v) for k, v in numbers.items() if v is not None and v == v}


def cell_text(value: Any) -> str:
    """A table cell as text: "" for an empty one (None, or NaN as pandas leaves it)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()
