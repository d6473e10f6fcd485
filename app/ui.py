"""What the pages share: the loaded engine, the take library, jobs, settings widgets.

Pages stay thin: they lay out widgets and call the ``neurochip`` library; anything two pages
need lives here. Heavy objects (the engine, the library) load once per server process.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import soundfile as sf
import streamlit as st

from app import push, state
from app.figures import DRIFTING
from app.state import workspace
from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import Faithfulness
from neurochip.io.audio import Audio
from neurochip.job_board import JobBoard, board_for
from neurochip.jobs import DONE, FAILED, SLOW_POLL_S, Job
from neurochip.library.store import TakeLibrary
from neurochip.model_spec import ModelSpec
from neurochip.session import Settings
from neurochip.settings import RenderSettings, describe
from neurochip.stage_words import stage_words
from neurochip.workspace import GridPreview, Preview

log = logging.getLogger(__name__)


# --- heavy objects, once per process ----------------------------------------------------------


def model_choice() -> ModelSpec:
    """The model this session uses (Model & device page)."""
    return state.composer().model


def other_model_note(metadata: dict[str, Any]) -> str | None:
    """Where a take was made with other weights than this session's model: says which, for
    what renders from its settings now (None where they are the same, or not known)."""
    made = ModelSpec.of_take_if_known(metadata)
    if made is None or made.same_model(model_choice()):
        return None
    return (
        f"It was made with {made.describe()}; renders use {model_choice().describe()} "
        "(the Model page) and sound different."
    )


def download_allowed() -> bool:
    """Whether the composer pressed Download on the Model page (this browser session).

    The app never downloads 4 GB unasked: it looks in the local cache only (an instant
    answer offline) until then.
    """
    return bool(st.session_state.get("model_download"))


@st.cache_resource(show_spinner=False)
def _engine_job(choice: ModelSpec, download: bool = False) -> Job[Engine]:
    """The model's load, once per choice for the whole server, on a thread of its own.

    Pages never wait for it: they show its progress and keep the sketch's spectrograms
    working. Failures are kept too: retrying a missing 4 GB download on every rerun would
    keep the page busy. The Model page's "Try again" clears this cache.
    """

    def load(progress: Callable[[float, str], None], cancel: Any) -> Engine:
        progress(0.0, "downloading (about 4 GB, once)" if download else "reading it")
        _PREVIEW_VAE_PROBLEMS.pop(choice, None)  # a "Try again" asks afresh

        def preview_vae_failed(err: NeuroChipError) -> None:
            # Optional: one that cannot be loaded leaves quick previews on the model's own
            # VAE and says why (preview_vae_problem), instead of keeping the model from use.
            _PREVIEW_VAE_PROBLEMS[choice] = str(err)

        loaded = Engine.from_pretrained(
            choice, local_files_only=not download, on_preview_vae_error=preview_vae_failed
        )
        freeze_long_lived_objects()
        return loaded

    return Job(load, name="model").start()


#: Why a model choice's preview VAE could not be loaded (by choice, as the engines are kept).
_PREVIEW_VAE_PROBLEMS: dict[ModelSpec, str] = {}


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
    job = _engine_job(model_choice(), download_allowed())
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


def engine_knobs() -> tuple[str, ...] | None:
    """The render settings the chosen engine reads (None: all of them, Riffusion's)."""
    from neurochip.model_spec import KIND_KNOBS

    kind = model_choice().kind
    if kind == "riffusion":
        return None
    loaded, _ = engine()
    if loaded is not None:
        return loaded.backend.capabilities.knobs
    return KIND_KNOBS[kind]  # until it has loaded


def song_facts(song: Any, bars_s: list[float]) -> dict[str, Any]:
    """What ACE-Step is told of the open song: tempo, beats per bar, key (computed once)."""
    from neurochip.song_facts import facts_of

    grid = getattr(song, "bar_grid", None)
    facts = memo("song_facts", (song.key, grid), lambda: facts_of(song, grid))
    return {"bpm": facts.bpm, "time_signature": facts.beats_per_bar, "key": facts.key or ""}


def forget_engine() -> None:
    _engine_job.clear()


@st.cache_resource(show_spinner=False)
def _library(root: str | None) -> TakeLibrary:
    return TakeLibrary(root)


def library() -> TakeLibrary:
    return _library(os.environ.get("NEUROCHIP_HOME"))


# --- jobs that outlive a page ------------------------------------------------------------------

#: Jobs that belong to the workspace, not to one page session: a refresh, another tab or a trip
#: to another page finds them running (neurochip.job_board). A sketch's load stays the
#: session's own: the sketch it brings is that session's.
BOARD_KINDS = ("render", "preview", "grid", "reroll", "compare")


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


def forget(*keys: str) -> None:
    """Drop these keys from the session state, where present."""
    for key in keys:
        if key in st.session_state:
            del st.session_state[key]


# --- the preview -------------------------------------------------------------------------------


def keep_preview(preview: Preview) -> None:
    """Remember the newest finished preview: it stays on the page while the next renders,
    and in the workspace for after a refresh or a restart."""
    _keep_shown("last_preview", preview, workspace().keep_preview, "preview")


def last_preview(song_key: str) -> Preview | None:
    """The last finished preview of this song, if any (an older song's is not shown)."""
    return _shown("last_preview", song_key)


def notes_kept_line(faith: Faithfulness, start_s: float = 0.0) -> str:
    """ "**Notes kept: 86%** · 4 notes lost in bar 12 (E5, G5, A5...) · 2 extra · chroma 0.91
    (lowest around 12.5 s)": notes counted, and the chroma score with where to listen first
    in the song's seconds (the strip's times count from ``start_s``). Without the note measure
    (basic-pitch missing) the chroma line, saying so."""
    low = ", ".join(f"{spot.start_s + start_s:.1f} s" for spot in faith.low_spots()[:2])
    if low:
        where = f"lowest around {low}"
    elif faith.score < DRIFTING:  # the strip is red all along: not "no low spots"
        where = "low all through"
    else:
        where = "no place much lower than the rest"
    if faith.notes is None:
        return (
            f"**Chroma match: {faith.score:.2f}** · {where} · notes not counted "
            "(basic-pitch is not installed: `make install`)"
        )
    return f"{notes_headline(faith.notes)} · chroma {faith.score:.2f} ({where})"


def notes_headline(notes: Any) -> str:
    """A ``NotesKept``'s headline with its number in bold: "**Notes kept: 86%** (the sketch
    itself: 92%) · 4 notes lost in bar 12 (E5, G5, A5...) · 2 extra"."""
    head, *rest = notes.headline().split(" · ")
    number, space, said = head.partition(" (")
    return " · ".join([f"**{number}**{space}{said}", *rest])


#: From this share of the sketch's own notes heard in the sketch, its ceiling goes unsaid.
CEILING_SAID_BELOW = 0.995


def ceiling_of(notes: Any) -> float | None:
    """The share of the sketch's own notes the transcriber hears in the sketch itself over
    the span (``NotesKept.ceiling``, or ``"ceiling"`` of a take's ``faithfulness["notes"]``):
    about the most notes kept a take can score there. None where it was not counted (an audio
    sketch, a NeuroChip before it, a damaged record) or is about all of them."""
    ceiling = notes.get("ceiling") if isinstance(notes, dict) else getattr(notes, "ceiling", None)
    if isinstance(ceiling, bool) or not isinstance(ceiling, (int, float)):
        return None
    return float(ceiling) if 0.0 <= ceiling < CEILING_SAID_BELOW else None  # NaN: None


def sketch_ceiling(notes: Any) -> str:
    """ " (sketch 79%)" after a notes-kept number (:func:`ceiling_of`), else ""."""
    ceiling = ceiling_of(notes)
    return f" (sketch {ceiling:.0%})" if ceiling is not None else ""


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


# --- settings ---------------------------------------------------------------------------------

#: The settings Arrange shows (the session model's; each described by its settings class).
SETTING_NAMES = tuple(Settings.__dataclass_fields__)


def setting_widget(container, name: str, **options: Any) -> Any:
    """The widget of one setting: label, help and range from the settings dataclass."""
    about = describe(Settings.owner(name), name)
    path = f"settings.{name}"
    kind = type(getattr(Settings(), name))
    if kind is str:
        if "options" in options:
            choices = list(options.pop("options"))
            return state.select(container, path, about.label, choices, help=about.help, **options)
        return state.text(container, path, about.label, help=about.help, **options)
    if options.pop("number_input", False):
        low, high = int(about.minimum), int(about.maximum)
        return state.number(container, path, about.label, low, high, 1, help=about.help, **options)
    low, high, step = kind(about.minimum), kind(about.maximum), kind(about.step)
    return state.slider(container, path, about.label, low, high, step, help=about.help)


def current_settings() -> RenderSettings:
    """The Arrange page's settings as they stand (raises NeuroChipError if one is invalid)."""
    return state.composer().settings.render_settings()


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


def job_progress(kind: str, label: str, cancel: str = "Cancel") -> None:
    """The ``kind`` job's progress and its cancel button, polled by a fragment of their own
    (see :func:`watch_job`); the page's full run draws the job's results."""

    @st.fragment(run_every=poll_every(kind, job_of(kind)))
    def progress() -> None:
        running = watch_job(kind, label)
        if running is not None:
            st.button(
                cancel, key=f"cancel_{kind}", icon=":material/close:", on_click=running.cancel
            )

    progress()


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
