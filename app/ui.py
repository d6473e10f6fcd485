"""What the pages share: the loaded engine, the take library, the sketch, widget state, jobs.

Pages stay thin: they lay out widgets and call the ``neurochip`` library; anything two pages
need lives here. Heavy objects (the engine, the library) load once per server process.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf
import streamlit as st

from app import push
from app.figures import DRIFTING
from neurochip.bars import BarGrid, estimate_bar_grid
from neurochip.engine import PREVIEW_SECONDS, Engine, stage_words
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import Faithfulness, sketch_bar_times
from neurochip.io.audio import Audio
from neurochip.job_board import JobBoard, board_for
from neurochip.jobs import DONE, FAILED, SLOW_POLL_S, Job
from neurochip.library.store import TakeLibrary
from neurochip.model import DEFAULT_MODEL_ID
from neurochip.preview_vae import use_preview_vae
from neurochip.settings import RenderSettings, Section, TakeSetOptions, default_of, describe
from neurochip.sketch import SKETCH_SUFFIXES, Sketch, load_sketch
from neurochip.stems import Stem, check_stems, default_stems
from neurochip.timeline import ordered_sections, parse_section
from neurochip.workspace import GridPreview, Preview, Workspace

UPLOAD_SUFFIXES = list(SKETCH_SUFFIXES)

log = logging.getLogger(__name__)


# --- heavy objects, once per process ----------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    source: str
    device: str = "auto"
    dtype: str = "auto"
    # The app never downloads 4 GB unasked: it looks in the local cache only (an instant
    # answer offline) until the composer presses Download on the Model page.
    download: bool = False
    lora: str = ""  # a LoRA fused into the UNet (file, folder or hub id), "" for none
    lora_scale: float = 1.0
    preview_vae: str = ""  # a tiny VAE for quick previews (folder or hub id), "" for none


def model_choice() -> ModelChoice:
    """The model this session uses (Model & device page), default from NEUROCHIP_MODEL."""
    default = ModelChoice(os.environ.get("NEUROCHIP_MODEL") or DEFAULT_MODEL_ID)
    return st.session_state.setdefault("model_choice", default)


@st.cache_resource(show_spinner=False)
def _engine_job(choice: ModelChoice) -> Job[Engine]:
    """The model's load, once per choice for the whole server, on a thread of its own.

    Pages never wait for it: they show its progress and keep the sketch's spectrograms
    working. Failures are kept too: retrying a missing 4 GB download on every rerun would
    keep the page busy. The Model page's "Try again" clears this cache.
    """

    def load(progress: Callable[[float, str], None], cancel: Any) -> Engine:
        progress(0.0, "downloading (about 4 GB, once)" if choice.download else "reading it")
        loaded = Engine.from_pretrained(
            choice.source,
            choice.device,
            choice.dtype,
            local_files_only=not choice.download,
            lora=choice.lora or None,
            lora_scale=choice.lora_scale,
        )
        _PREVIEW_VAE_PROBLEMS.pop(choice, None)  # a "Try again" asks afresh
        if choice.preview_vae:
            # Optional: one that cannot be loaded leaves quick previews on the model's own
            # VAE and says why (preview_vae_problem), instead of keeping the model from use.
            try:
                use_preview_vae(loaded.model, choice.preview_vae, not choice.download)
            except NeuroChipError as err:
                _PREVIEW_VAE_PROBLEMS[choice] = str(err)
        freeze_long_lived_objects()
        return loaded

    return Job(load, name="model").start()


#: Why a model choice's preview VAE could not be loaded (by choice, as the engines are kept).
_PREVIEW_VAE_PROBLEMS: dict[ModelChoice, str] = {}


def preview_vae_problem() -> str | None:
    """Why this session's preview VAE is not in use, where it was chosen and failed."""
    return _PREVIEW_VAE_PROBLEMS.get(model_choice())


def freeze_long_lived_objects() -> None:
    """Hide what lives as long as the server (torch, diffusers, the model) from the collector.

    Streamlit runs a full ``gc.collect(2)`` after every page run, fragment runs included. With
    the model loaded that walks half a million objects, 0.4-0.6 s holding the GIL on a small
    CPU: two pages polling render progress spent most of the interpreter on it, and the render
    threads starved (issue 9). Frozen objects are skipped by every collection (they are still
    freed by reference counting when dropped); what pages create later is collected as before.
    """
    gc.collect()
    gc.freeze()


def engine() -> tuple[Engine | None, str | None]:
    """The shared engine (renders from all tabs queue on its device's lock), or None and why.

    (None, None) while the model loads: call :func:`watch_model_load` to show it.
    """
    job = _engine_job(model_choice())
    if st.session_state.get("model_job") is not job:
        st.session_state["model_job"] = job
        push.rerun_when_finished(job)  # every session watching the load hears of its end
    if job.state == DONE:
        return job.result, None
    if job.state == FAILED:
        return None, job.error
    return None, None


def watch_model_load() -> None:
    """While the model loads: its progress, and a full page run once it is ready."""
    job = st.session_state.get("model_job")

    @st.fragment(run_every=poll_every("model", job))
    def model_progress() -> None:
        if watch_job("model", "Loading the model (once per server start)") is not None:
            st.caption(
                "Previews and renders start once it is ready; the sketch plays and its "
                "spectrogram shows meanwhile."
            )

    model_progress()


def forget_engine() -> None:
    _engine_job.clear()


@st.cache_resource(show_spinner=False)
def _library(root: str | None) -> TakeLibrary:
    return TakeLibrary(root)


def library() -> TakeLibrary:
    return _library(os.environ.get("NEUROCHIP_HOME"))


@st.cache_resource(show_spinner=False)
def _workspace(root: str | None) -> Workspace:
    return Workspace(root)


def workspace() -> Workspace:
    """What the app had open: kept on disk, so a refresh or a restart brings it back."""
    return _workspace(os.environ.get("NEUROCHIP_HOME"))


# --- jobs that outlive a page ------------------------------------------------------------------

#: Jobs that belong to the workspace, not to one page session: a refresh, another tab or a trip
#: to another page finds them running (neurochip.job_board). A sketch's load stays the
#: session's own: the sketch it brings is that session's.
BOARD_KINDS = ("render", "preview", "grid", "reroll")


def board() -> JobBoard:
    return board_for(workspace().root)


def job_of(kind: str) -> Job | None:
    """The ``kind`` job this page should show (the workspace's, or this session's load)."""
    if kind in BOARD_KINDS:
        return board().job(kind)
    return st.session_state.get(f"{kind}_job")


def job_info(kind: str) -> dict[str, Any]:
    """What the page that started the ``kind`` job said of it (its span, its song...)."""
    entry = board().get(kind)
    return entry.info if entry is not None else {}


def interrupted_notice() -> None:
    """What the last server did not live to finish (said until dismissed)."""
    notes = st.session_state.get("interrupted") or []
    if not notes:
        return
    what = join_words([plain(note["label"]) for note in notes])
    with st.container(border=True):
        st.warning(
            f"NeuroChip stopped during {what}: takes that had finished are on the Takes page. "
            "Render again to make the rest.",
            icon=":material/history:",
        )
        st.button("OK", key="interrupted_ok", on_click=forget, args=("interrupted",))


def rendering_now() -> None:
    """The workspace's renders and re-rolls under way, with their progress (Takes page)."""
    running = [e for e in board().running() if e.kind in ("render", "reroll")]
    if not running:
        return

    @st.fragment(run_every=min(e.job.poll_interval() for e in running))
    def progress() -> None:
        for entry in running:
            if entry.job.finished:
                st.rerun()  # its takes are in the list now: draw the whole page
            show_job_progress(entry.job, entry.label[0].upper() + entry.label[1:])

    progress()


def start_job(kind: str, job: Job, label: str, **info: Any) -> Job:
    """Start ``job`` as the workspace's ``kind`` job; ``label`` says what it is ("the render
    of minuet.wav"), ``info`` what a page needs to draw its result."""
    board().start(kind, job, label, **info)
    push.rerun_when_finished(job)
    return job


# --- a session that survives -------------------------------------------------------------------

#: View choices kept with the settings (widget key -> kept as is).
KEPT_VIEW = (
    "preview_start",
    "auto_preview",
    "quick_preview",
    "render_pair",
    "render_compare",
    "render_loop",
    "render_span",  # [song key, start, duration]: brought back through pending_span
    "bar_grid",  # {"key": song key, bpm, downbeat_s, beats_per_bar}: an audio song's bars
    "sections_rows",  # the prompt timeline's table, as typed
    "stems_rows",  # song key -> the instrument map as typed (the last KEPT_STEM_MAPS songs)
    "render_stems_on",
    "last_render",  # {"key": song key, "result": role -> take id, span, seconds}
)


#: Widgets whose choice outlives the page they are on (Streamlit drops a widget's state on a
#: run of another page), besides KEPT_VIEW's (kept for the next session as well): their
#: keys, and key prefixes (per song or span). Tables (data editors) keep their rows in
#: KEPT_VIEW instead: their state cannot be set.
STICKY_WIDGETS = (
    "render_start",
    "grid_seeds",  # (they follow the settings until typed in: see follow())
    "grid_axis",
    "download_format",
    "takes_search",
    "takes_song",
    "takes_sort",
    "takes_starred_only",
    "takes_compare",
    "takes_comp",
    "takes_format",
    "pair_width",
)
STICKY_PREFIXES = ("render_duration_", "grid_values_")


def kept(key: str, default: Any) -> Any:
    """A widget's value as the session holds it (``default`` where it holds none): give it
    to the widget as its default too.

    Streamlit tells the browser a value set through the session state (a refresh's
    restore, Open, Use this) once, in the run that set it. When that run is cut short (a
    rerun pushed as the model finishes loading), the browser falls back to the widget's
    default and sends that with its next rerun, overwriting what was restored: a refresh
    turned every setting into its slider's minimum that way.
    """
    return st.session_state.get(key, default)


def follow(key: str, default: Any) -> None:
    """Text field ``key`` shows ``default`` (made from other settings, so it moves with them)
    until the composer types in it, or the page puts something else there."""
    state = st.session_state
    slot = f"_follows_{key}"
    if key not in state or state[key] == state.get(slot):
        state[key] = default
    state[slot] = default


def clamp_kept(key: str, highest: float) -> None:
    """Bring a kept number down to ``highest`` before its widget is drawn: a value kept for a
    longer song is over the widget's maximum for this one, which Streamlit refuses (an
    exception in place of the page)."""
    value = st.session_state.get(key)
    if isinstance(value, (int, float)) and value > highest:
        st.session_state[key] = highest


def keep_widget_state() -> None:
    """Before any page runs: hand each sticky widget's value back to the session state.

    A value set through the session state is the session's own, not the widget's, so it
    stays when a run of another page does not draw the widget (Streamlit's documented way to
    keep widget state across pages); without this, a trip to Takes or Model & device turned
    Quick previews, the stereo pair and the preview region back to their defaults.
    """
    state = st.session_state
    for key in list(state.keys()):
        # KEPT_VIEW's plain keys (not widgets) are set to what they are: nothing changes.
        if key in KEPT_VIEW or key in STICKY_WIDGETS or key.startswith(STICKY_PREFIXES):
            state[key] = state[key]


def restore_session() -> None:
    """Once per browser session: bring back the sketch, settings, model, last preview and
    last variation grid.

    A refresh starts a new session, and so does a restart of the server: both find the
    workspace as the last session left it. The sketch is loaded again as a job (a MIDI file
    is synthesised again), with its progress at the top of Arrange.
    """
    if st.session_state.get("_restored"):
        return
    st.session_state["_restored"] = True
    # Said once, to the first page of a new server: what the last one did not live to finish.
    st.session_state["interrupted"] = board().interrupted()
    kept = workspace()
    state = kept.state()
    for name, value in dict(state.get("settings") or {}).items():
        if name in SETTINGS and type(value) is type(default(name)):
            st.session_state[name] = value
    for name in KEPT_VIEW:
        if name in state:
            st.session_state[name] = state[name]
    span = state.get("render_span")
    spans = (
        isinstance(span, list) and len(span) == 3 and all(isinstance(v, float) for v in span[1:])
    )
    if spans and kept.sketch() is not None:  # its song comes back: set the span once it has
        st.session_state["pending_span"] = (span[1], span[2])
    model = state.get("model")
    if isinstance(model, dict) and isinstance(model.get("source"), str):
        scale = model.get("lora_scale", 1.0)
        st.session_state["model_choice"] = ModelChoice(
            model["source"],
            str(model.get("device", "auto")),
            str(model.get("dtype", "auto")),
            lora=str(model.get("lora") or ""),
            lora_scale=float(scale) if isinstance(scale, (int, float)) else 1.0,
            preview_vae=str(model.get("preview_vae") or ""),
        )  # never a download: that waits for the composer's click
    preview = kept.preview()
    if preview is not None:
        st.session_state["last_preview"] = preview
    grid = kept.grid()
    if grid is not None:
        st.session_state["last_grid"] = grid
    sketch_file = kept.sketch()
    if sketch_file is not None and current_sketch() is None:
        reopen(sketch_file.data, sketch_file.name, sketch_file.voices, sketch_file.decode_as)


def reopen(data: bytes, name: str, voices: dict[str, str], decode_as: str, verb="Reopening"):
    """Load a kept sketch file as the load job; ``decode_as`` names it for its decoder.

    An audio sketch gets its bar grid: the one the composer set for this song, else a guess
    by beat tracking (MIDI knows its own bars).
    """
    kept_grid = st.session_state.get("bar_grid")

    def load(progress, cancel) -> Sketch:
        sketch = load_sketch(data, name=decode_as, voices=voices, progress=progress, cancel=cancel)
        sketch = dataclasses.replace(sketch, name=name)
        if sketch.midi is None:
            progress(0.97, "finding the beat")
            sketch = sketch.with_bar_grid(bar_grid_for(sketch, kept_grid))
        return sketch

    start_loading(load, f"{verb} {name}", source=(data, name, decode_as))


def bar_grid_for(sketch: Sketch, kept: Any) -> BarGrid | None:
    """The grid kept for this song (``{"key": song key, **grid}``), else beat tracking's guess
    (None where it finds no steady beat: bars are a nicety, never worth a failed load)."""
    if isinstance(kept, dict) and kept.get("key") == sketch.key:
        grid = BarGrid.from_dict(kept)
        if grid is not None:
            return grid
    try:
        return estimate_bar_grid(sketch.audio)
    except Exception as err:  # noqa: BLE001
        log.warning("No bar grid for %s: %s", sketch.name, err)
        return None


def set_bar_grid(grid: BarGrid | None, source: str = "typed") -> None:
    """The composer's bar grid for the open (audio) sketch: its takes and pictures follow.
    ``source``: "typed", or "detected" (Detect again)."""
    song = current_sketch()
    if song is None or song.midi is not None:
        return
    st.session_state["sketch"] = song.with_bar_grid(grid)
    kept = {"key": song.key, **grid.to_dict(), "source": source} if grid else None
    st.session_state["bar_grid"] = kept


def bar_grid_source(song: Sketch) -> str:
    """Where the open song's bars come from, as the page says it: "from the MIDI file",
    "typed" or "detected"."""
    if song.midi is not None:
        return "from the MIDI file"
    kept = st.session_state.get("bar_grid")
    mine = isinstance(kept, dict) and kept.get("key") == song.key
    if mine and BarGrid.from_dict(kept) == song.bar_grid:
        return str(kept.get("source") or "typed")
    return "detected"


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
            numbers = {k: row.get(k) for k in ("denoise", "guidance")}
            numbers = {k: float(v) for k, v in numbers.items() if v is not None and v == v}
            sections.append(dataclasses.replace(found, **numbers))
        except (NeuroChipError, ValueError) as err:
            raise NeuroChipError(f"Section {number}: {err}") from None
    return ordered_sections(sections)


def stem_rows(song: Sketch) -> list[dict]:
    """The instrument map's rows for this song: as last edited (kept with the song), else a
    stem per part with its default instrument."""
    kept = st.session_state.get("stems_rows")
    rows = kept.get(song.key) if isinstance(kept, dict) else None
    if isinstance(rows, list) and rows:
        return list(rows)
    return [
        {"name": s.name, "parts": "+".join(s.parts), "prompt": s.prompt}
        for s in default_stems(song)
    ]


#: How many songs' instrument maps are kept (the most recently edited).
KEPT_STEM_MAPS = 20


def keep_stem_rows(song: Sketch, rows: list[dict]) -> None:
    """Keep this song's instrument map as typed (with the session: a refresh, or coming back
    to the song later, finds it)."""
    kept = st.session_state.get("stems_rows")
    maps = {k: v for k, v in kept.items() if k != song.key} if isinstance(kept, dict) else {}
    maps[song.key] = rows
    st.session_state["stems_rows"] = dict(list(maps.items())[-KEPT_STEM_MAPS:])


def stems_from_rows(rows: list[dict], song: Sketch) -> list[Stem]:
    """The instrument map's rows (name, parts "2+3", prompt, denoise, guidance) as stems.

    Raises:
        NeuroChipError: Saying which row is wrong and how.
    """
    stems = []
    for number, row in enumerate(rows, start=1):
        name = cell_text(row.get("name")) or f"Stem {number}"
        parts = tuple(p for p in re.split(r"[+,\s]+", cell_text(row.get("parts"))) if p)
        numbers = {k: row.get(k) for k in ("denoise", "guidance")}
        numbers = {k: float(v) for k, v in numbers.items() if v is not None and v == v}
        try:
            stems.append(Stem(name, parts, cell_text(row.get("prompt")), **numbers))
        except (NeuroChipError, ValueError) as err:
            raise NeuroChipError(f"Stem row {number}: {err}") from None
    check_stems(song, stems)
    return stems


def cell_text(value: Any) -> str:
    """A table cell as text: "" for an empty one (None, or NaN as pandas leaves it)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def song_bars(song: Sketch) -> list[float] | None:
    """Where the open song's bars start (MIDI: its tempo map; audio: its grid), or None."""
    return memo("song_bars", (song.key, song.bar_grid), lambda: sketch_bar_times(song))


def apply_pending_span(song: Sketch) -> None:
    """Set the render span an opened take (or a refresh) asked for, once its song is loaded;
    for an opened take the preview region moves to the take's start too. Call it before the
    preview region's slider is drawn."""
    job = st.session_state.get("load_job")
    pending = st.session_state.get("pending_span")
    # Not while a song loads, nor once it has finished but this run began before it did (the
    # song on the page is still the old one: adopt_loaded_sketch takes the new one next run).
    if pending is None or (job is not None and st.session_state.get("load_adopted") is not job):
        return
    start_s, duration_s = pending
    del st.session_state["pending_span"]
    if st.session_state.pop("pending_preview", False):
        # Where the take starts: the preview is then of the part the composer opened.
        latest = max(0.0, song.audio.duration_s - PREVIEW_SECONDS)
        st.session_state["preview_start"] = round(min(start_s, latest), 1)
    start_s = min(start_s, max(0.0, song.audio.duration_s - 0.5))
    st.session_state["render_start"] = start_s
    if duration_s is not None:
        longest = max(0.5, song.audio.duration_s - start_s)
        st.session_state[f"render_duration_{song.key}_{start_s}"] = min(duration_s, longest)


def open_take(take: Any) -> None:
    """Arrange with a take's settings and span and, where the library kept it, its sketch."""
    settings = take.settings()
    open_settings(settings)
    until = "the end" if settings.duration_s is None else f"{settings.duration_s:g} s"
    key = take.metadata.get("sketch_key")
    st.session_state["opened_take"] = {
        "text": f"Opened {take.name}: its settings (seed {settings.seed}), from "
        f"{settings.start_s:g} s for {until}. Render makes it again; change anything to go "
        "on from it.",
        "look": take_look(settings),
        "song_key": key,  # said while its song is the one open
    }
    # Applied by Arrange once the take's song is the one open (see apply_pending_span).
    st.session_state["pending_span"] = (float(settings.start_s), settings.duration_s)
    st.session_state["pending_preview"] = True
    current = current_sketch()
    if key and (current is None or current.key != key):
        kept = library().source(key)
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


def save_session() -> None:
    """Keep the settings, view choices and model for the next session (when they changed)."""
    state = {
        "settings": {name: st.session_state[name] for name in SETTINGS if name in st.session_state},
        "model": dataclasses.asdict(model_choice()),
        **{name: st.session_state[name] for name in KEPT_VIEW if name in st.session_state},
    }
    if state == st.session_state.get("_saved_state"):
        return
    try:
        workspace().keep_state(state)
        st.session_state["_saved_state"] = state
    except OSError as err:
        st.toast(f"Could not keep the settings for next time: {err}", icon=":material/warning:")


# --- the sketch -------------------------------------------------------------------------------


DEMO_SKETCH = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


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
    forget("upload_error", "upload_error_look")


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
    if job.state == DONE:
        before = current_sketch()
        set_sketch(job.result, source=st.session_state.get("load_source"))
        last = st.session_state.get("last_preview")
        voice_change = st.session_state.get("load_voices") is not None
        if voice_change and before is not None and last is not None and last.song_key == before.key:
            # The same song with other voices: its last preview stays on the page, marked out
            # of date (no key matches it), until the new voices' preview is ready.
            st.session_state["last_preview"] = dataclasses.replace(
                last, song_key=job.result.key, key=None
            )
        return
    current = current_sketch()
    if job.state == FAILED:
        kept = f" {current.name} is still loaded." if current is not None else ""
        st.session_state["upload_error"] = f"{job.error}{kept}"
        shown = st.session_state.get("last_settings")
        if shown is not None:  # said until a setting moves on (arrange.py)
            st.session_state["upload_error_look"] = take_look(shown)
        if st.session_state.get("load_voices") is None:  # a file, not a voice change
            st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
    if current is not None and st.session_state.get("load_voices") is not None:
        forget(*[k for k in st.session_state if str(k).startswith(f"voice_{current.key}_")])
        st.session_state["load_voices"] = None


def forget(*keys: str) -> None:
    """Drop these keys from the session state, where present."""
    for key in keys:
        if key in st.session_state:
            del st.session_state[key]


def current_sketch() -> Sketch | None:
    return st.session_state.get("sketch")


def set_sketch(sketch: Sketch | None, source: tuple | None = None) -> None:
    """Open ``sketch``; ``source`` (its file's bytes and name) is kept to reopen it later."""
    previous = board().get("preview")
    asked = previous.info.get("key") if previous is not None else None
    if previous is not None and (sketch is None or not asked or asked[0] != sketch.key):
        previous.job.cancel()  # the old song's preview would only delay the new one's
        board().forget("preview")
    before = st.session_state.get("sketch")
    st.session_state["sketch"] = sketch
    forget("preview_key")
    if before is not None and sketch is not None and before.key != sketch.key:
        # Another song starts at its beginning (an opened take's span is set after this).
        st.session_state["preview_start"] = 0.0
        st.session_state["render_start"] = 0.0
        st.session_state["render_loop"] = False  # a seamless loop is one song's choice
    opened = st.session_state.get("opened_take")
    if opened is not None and (sketch is None or opened.get("song_key") != sketch.key):
        forget("opened_take")  # another song: Render would not make that take again
    finished = job_of("render")
    if finished is not None and finished.finished:
        board().forget("render")  # the last song's results (its takes stay on Takes)
    last = st.session_state.get("last_preview")
    if sketch is not None and last is not None and last.song_key == sketch.key:
        # This song's last preview is on screen: with the same settings it is not stale,
        # so reopening the song (a refresh) renders nothing new.
        st.session_state["preview_key"] = last.key
    if sketch is not None and source is not None:
        try:
            workspace().keep_sketch(*source[:2], sketch.voices, *source[2:])
        except OSError as err:
            st.toast(
                f"Could not keep {sketch.name} for next time: {err}", icon=":material/warning:"
            )


# --- the preview -------------------------------------------------------------------------------


def keep_preview(preview: Preview) -> None:
    """Remember the newest finished preview: it stays on the page while the next renders,
    and in the workspace for after a refresh or a restart."""
    _keep_shown("last_preview", preview, workspace().keep_preview, "preview")


def last_preview(song_key: str) -> Preview | None:
    """The last finished preview of this song, if any (an older song's is not shown)."""
    return _shown("last_preview", song_key)


def notes_kept_line(faith: Faithfulness, start_s: float = 0.0) -> str:
    """ "**Notes kept: 0.82** · lowest around 3.5 s": the score and where to listen first, in
    the song's seconds (the strip's times count from ``start_s``)."""
    low = ", ".join(f"{spot.start_s + start_s:.1f} s" for spot in faith.low_spots()[:3])
    if low:
        where = f"lowest around {low}"
    elif faith.score < DRIFTING:  # the strip is red all along: not "no low spots"
        where = "low all through, no one place lower than the rest"
    else:
        where = "no place much lower than the rest"
    return f"**Notes kept: {faith.score:.2f}** · {where}"


def keep_grid(grid: GridPreview) -> None:
    """Remember the newest finished variation grid, as :func:`keep_preview` does a preview."""
    _keep_shown("last_grid", grid, workspace().keep_grid, "grid")


def last_grid(song_key: str) -> GridPreview | None:
    """The last finished variation grid of this song, if any."""
    return _shown("last_grid", song_key)


def _keep_shown(slot: str, result: Any, keep: Callable[[Any], None], what: str) -> None:
    if st.session_state.get(slot) is result:
        return  # kept already: the page draws it on every run
    st.session_state[slot] = result
    try:
        keep(result)
    except OSError as err:  # the page goes on; only the reopening loses it
        st.toast(f"Could not keep the {what} for next time: {err}", icon=":material/warning:")


def _shown(slot: str, song_key: str) -> Any:
    result = st.session_state.get(slot)
    return result if result is not None and result.song_key == song_key else None


# --- widget values that survive page switches -------------------------------------------------

#: The settings the Arrange page shows, with the class that owns each.
SETTINGS: dict[str, type] = {
    "prompt": RenderSettings,
    "negative_prompt": RenderSettings,
    "denoise": RenderSettings,
    "guidance": RenderSettings,
    "steps": RenderSettings,
    "seed": RenderSettings,
    "scheduler": RenderSettings,
    "overlap": RenderSettings,
    "windows": RenderSettings,
    "feature_reuse": RenderSettings,
    "guidance_until": RenderSettings,
    "width": TakeSetOptions,
}
DEFAULT_PROMPT = "a funk band with slap bass, live recording"


def default(name: str) -> Any:
    if name == "prompt":
        return DEFAULT_PROMPT  # an empty prompt is a poor first impression
    return default_of(SETTINGS[name], name)


def remembered(name: str) -> str:
    """Widget key for setting ``name``, primed from the value remembered for this session.

    Streamlit forgets the state of widgets that are not on the current page, so each setting
    is also kept under a plain key and copied back before its widget is drawn.
    """
    key = f"w_{name}"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(name, default(name))
    return key


def remember(name: str) -> None:
    st.session_state[name] = st.session_state[f"w_{name}"]


def setting_widget(container, name: str, **options: Any) -> Any:
    """The widget of one setting: label, help and range from the settings dataclass."""
    about = describe(SETTINGS[name], name)
    key = remembered(name)
    value = kept(key, default(name))  # its default too: see kept()
    common = {"key": key, "on_change": remember, "args": (name,), "help": about.help}
    if isinstance(default(name), str):
        if "options" in options:
            choices = list(options.pop("options"))
            index = choices.index(value) if value in choices else 0
            return container.selectbox(about.label, choices, index=index, **options, **common)
        return container.text_input(about.label, value=value, **options, **common)
    if options.pop("number_input", False):
        return container.number_input(
            about.label,
            int(about.minimum),
            int(about.maximum),
            value=int(value),
            step=1,
            **options,
            **common,
        )
    kind = type(default(name))
    return container.slider(
        about.label,
        kind(about.minimum),
        kind(about.maximum),
        value=kind(value),
        step=kind(about.step),
        **common,
    )


def open_settings(settings: RenderSettings) -> None:
    """Load a take's settings into the Arrange page's widgets (from any page)."""
    set_settings(**{name: getattr(settings, name) for name in SETTINGS if hasattr(settings, name)})


def set_settings(**values: Any) -> None:
    """Set these of the Arrange page's settings (the others stay as they are)."""
    for name, value in values.items():
        st.session_state[name] = value
        st.session_state.pop(f"w_{name}", None)


def current_settings() -> RenderSettings:
    """The Arrange page's settings as they stand (raises NeuroChipError if one is invalid)."""
    state = st.session_state
    for name in SETTINGS:
        # Kept under the plain key too, every run: Streamlit drops a widget's state on any run
        # that does not draw it, and remembered() restores it from here.
        if f"w_{name}" in state:
            state[name] = state[f"w_{name}"]
    return RenderSettings(
        prompt=state[remembered("prompt")],
        negative_prompt=state[remembered("negative_prompt")],
        denoise=float(state[remembered("denoise")]),
        guidance=float(state[remembered("guidance")]),
        steps=int(state[remembered("steps")]),
        seed=int(state[remembered("seed")]),
        scheduler=state[remembered("scheduler")],
        overlap=float(state.get("overlap", default("overlap"))),
        windows=state[remembered("windows")],
        feature_reuse=int(state[remembered("feature_reuse")]),
        guidance_until=float(state[remembered("guidance_until")]),
    )


# --- jobs -------------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def join_words(words: list[str]) -> str:
    """ "a", "a and b", "a, b and c": a list as a sentence says it."""
    if len(words) < 2:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def memo(name: str, key: Any, build: Callable[[], Any]) -> Any:
    """``build()``, kept in this session for as long as ``key`` stays the same.

    For what a page draws on every run but only changes with its input (a job's figures, the
    sketch's audio): a page run then costs what drawing it costs, not making it again.
    Keys are compared with ``is`` first (jobs), then ``==``.
    """
    slot = f"_memo_{name}"
    kept = st.session_state.get(slot)
    if kept is not None and (kept[0] is key or kept[0] == key):
        return kept[1]
    value = build()
    st.session_state[slot] = (key, value)
    return value


# What makes inline markdown (and Streamlit's :colour[...] directives) of text.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>:~$|])")


def plain(text: str) -> str:
    """User text (names, notes) shown as typed, not as markdown."""
    return _MARKDOWN.sub(r"\\\1", text)


def wav_bytes(audio: Audio) -> bytes:
    """16-bit WAV of ``audio`` for st.audio (which would otherwise encode it on every run)."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.samples.T, audio.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# How a page watches a job: a fragment polls it (only the progress is drawn, with back-off), and
# the page's full run, which always draws a finished job's results, marks it as drawn. Until
# then the fragment keeps asking for a full run, so a finished job always reaches its page even
# if one such request is lost.


#: How long a preview waits after a settings change that follows another within this time, so
#: a burst of changes (clicks on a number's +) renders once; the first change of a burst starts
#: at once (sliders send their value only on release). A finished preview reruns its page at
#: once (app/push.py); polling is the fallback. (Polling a running preview faster than
#: jobs.FAST_POLL_S was tried: on a 2-core machine every page poll takes CPU from the render,
#: 0.2 s made the preview 0.8 s slower and the wait longer; bench/app_sessions.py --scenarios
#: preview.)
PREVIEW_DEBOUNCE_S = 0.25

#: The app's clock for debouncing (tests replace it).
clock = time.monotonic


def preview_delay(now_asked: bool) -> float:
    """How long the preview for the settings changed in this run waits before it starts.

    No wait for "Preview now" and for the first change in a while (why wait for a burst that
    may never come: the model work starts at once); the debounce delay for a change that
    follows another closely, whose preview is cancelled by the next change before it starts.
    """
    now = clock()
    last = st.session_state.get("_preview_asked_at")
    st.session_state["_preview_asked_at"] = now
    if now_asked or last is None or now - last >= PREVIEW_DEBOUNCE_S:
        return 0.0
    return PREVIEW_DEBOUNCE_S


def poll_every(key: str, job: Job | None) -> float | None:
    """The ``run_every`` of the fragment that watches ``job``, for the page's full run.

    Call it where the page draws the job's results (a full run draws a finished job's results,
    so it is marked as drawn here). None when there is nothing to watch.
    """
    if job is None or job.finished:
        st.session_state[f"{key}_drawn"] = job
        interval = None
    else:
        interval = job.poll_interval()
    st.session_state[f"{key}_poll_s"] = interval
    return interval


def watch_job(key: str, label: str) -> Job | None:
    """The body of a job's polling fragment: the job's progress, and nothing else.

    Returns the job while it runs (the caller may add a cancel button), else None. Asks for a
    full page run when the job finished and its results are not drawn yet, or to re-arm the
    timer at the slow rate once the job has been quiet for a while.
    """
    job = job_of(key)
    if job is None:
        return None
    if job.finished:
        if st.session_state.get(f"{key}_drawn") is not job:
            st.rerun()  # the full run draws the results (and marks them drawn)
        return None
    show_job_progress(job, label)
    armed = st.session_state.get(f"{key}_poll_s")
    if armed is not None and armed < SLOW_POLL_S <= job.poll_interval():
        st.rerun()  # nothing changed for a while: poll slowly from now on
    return job


def show_job_progress(job: Job, label: str) -> None:
    """Progress bar with stage and time left, for a running job."""
    snap = job.snapshot()
    stage = stage_words(snap["stage"])
    if snap["stage"] == "waiting":
        stage = f"waiting for {board().waits_for(job) or 'its turn'}"
    text = f"{label}: {stage} · {format_seconds(snap['elapsed_s'])} elapsed"
    if snap["state"] == "running" and snap["eta_s"] is not None:
        text += f" · {format_seconds(snap['eta_s'])} left"
    st.progress(min(1.0, snap["fraction"]), text=text)


@st.cache_data(show_spinner="Preparing the download...", max_entries=32)
def export_take(take_id: str, suffix: str) -> tuple[bytes, str]:
    """A take's file in the chosen format, with a name made from the song and settings."""
    return library().export(take_id, suffix)
