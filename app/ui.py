"""What the pages share: the loaded model, the take library, the song, widget state, job display.

Pages stay thin: they lay out widgets and call the ``neurochip`` library; anything two pages
need lives here. Heavy objects (the model, the library) load once per server process.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from neurochip.audio import (
    FFMPEG_FORMATS,
    MIDI_SUFFIXES,
    SOUNDFILE_SUFFIXES,
    Audio,
    load_audio,
)
from neurochip.engine import Engine, RenderSettings
from neurochip.errors import NeuroChipError
from neurochip.jobs import Job
from neurochip.midi import TrackInfo, read_midi, render_midi
from neurochip.model import DEFAULT_MODEL_ID, load_model
from neurochip.takes import TakeLibrary

UPLOAD_SUFFIXES = sorted(
    {s.lstrip(".") for s in SOUNDFILE_SUFFIXES | set(FFMPEG_FORMATS) | MIDI_SUFFIXES}
)


# --- heavy objects, once per process ----------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    source: str
    device: str = "auto"
    dtype: str = "auto"


def model_choice() -> ModelChoice:
    """The model this session uses (Model & device page), default from NEUROCHIP_MODEL."""
    default = ModelChoice(os.environ.get("NEUROCHIP_MODEL") or DEFAULT_MODEL_ID)
    return st.session_state.setdefault("model_choice", default)


@st.cache_resource(show_spinner=False)
def _load_engine(choice: ModelChoice) -> tuple[Engine | None, str | None]:
    # Failures are cached too: retrying a missing 4 GB download on every rerun would freeze the
    # page. The Model page's "Try again" clears this cache.
    try:
        return Engine(load_model(choice.source, device=choice.device, dtype=choice.dtype)), None
    except NeuroChipError as err:
        return None, str(err)


def engine() -> tuple[Engine | None, str | None]:
    """The shared engine (one per model and device: renders from all tabs queue on it)."""
    with st.spinner("Loading the model (once per server start)..."):
        return _load_engine(model_choice())


def forget_engine() -> None:
    _load_engine.clear()


@st.cache_resource(show_spinner=False)
def _library(root: str | None) -> TakeLibrary:
    return TakeLibrary(root)


def library() -> TakeLibrary:
    return _library(os.environ.get("NEUROCHIP_HOME"))


# --- the song ---------------------------------------------------------------------------------


DEMO_SKETCH = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


@dataclass
class Song:
    audio: Audio
    name: str  # as the user called it: display only, never a path
    key: str  # content hash: identifies the song in caches and previews
    tracks: tuple[TrackInfo, ...] = ()  # MIDI sketches: the parts and their default voices
    voices: dict[str, str] = field(default_factory=dict)  # MIDI voice overrides by track key
    midi: bytes | None = None  # the MIDI file, to synthesise again with other voices


def safe_suffix(name: str) -> str:
    """The upload's extension if it is one we read, else ''. Nothing else of the name is used."""
    suffix = Path(name).suffix.lower()
    return (
        suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) and suffix[1:] in UPLOAD_SUFFIXES else ""
    )


def read_upload(name: str, data: bytes, voices: dict[str, str] | None = None) -> Song:
    """Decode uploaded bytes. The file name only picks the decoder; it never reaches a path.

    MIDI sketches are synthesised by the chip synth, with ``voices`` overriding track voices.
    """
    if not data:
        raise NeuroChipError(f"{name} is empty: choose another file.")
    suffix = safe_suffix(name)
    if not suffix:
        raise NeuroChipError(
            f"{name} is not a format NeuroChip reads. Use one of: "
            + ", ".join(UPLOAD_SUFFIXES)
            + "."
        )
    voices = dict(voices or {})
    tracks: tuple[TrackInfo, ...] = ()
    with tempfile.TemporaryDirectory(prefix="neurochip-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            if suffix in MIDI_SUFFIXES:
                midi = read_midi(path)
                tracks = midi.tracks
                audio = render_midi(midi, voices=voices)
            else:
                audio = load_audio(path)
        except NeuroChipError as err:
            # The decoder names the temporary file; the composer knows their own file name.
            raise NeuroChipError(str(err).replace(path.name, name)) from err
    digest = hashlib.blake2b(data + repr(sorted(voices.items())).encode(), digest_size=12)
    return Song(
        audio,
        name,
        digest.hexdigest(),
        tracks=tracks,
        voices=voices,
        midi=data if tracks else None,
    )


def demo_song() -> Song:
    """The demo sketch: Greensleeves as a chip-tune MIDI file (assets/greensleeves.mid)."""
    return read_upload(DEMO_SKETCH.name, DEMO_SKETCH.read_bytes())


def current_song() -> Song | None:
    return st.session_state.get("song")


def set_song(song: Song | None) -> None:
    st.session_state["song"] = song
    st.session_state.pop("preview_job", None)
    st.session_state.pop("preview_key", None)


# --- widget values that survive page switches -------------------------------------------------

SETTING_DEFAULTS: dict[str, Any] = {
    "prompt": "a funk band with slap bass, live recording",
    "negative_prompt": "",
    "denoise": RenderSettings.denoise,
    "guidance": RenderSettings.guidance,
    "steps": RenderSettings.steps,
    "seed": RenderSettings.seed,
    "scheduler": RenderSettings.scheduler,
    "overlap": RenderSettings.overlap,
    "width": 1.0,
}


def remembered(name: str) -> str:
    """Widget key for setting ``name``, primed from the value remembered for this session.

    Streamlit forgets the state of widgets that are not on the current page, so each setting
    is also kept under a plain key and copied back before its widget is drawn.
    """
    key = f"w_{name}"
    if key not in st.session_state:
        st.session_state[key] = st.session_state.get(name, SETTING_DEFAULTS[name])
    return key


def remember(name: str) -> None:
    st.session_state[name] = st.session_state[f"w_{name}"]


def open_settings(settings: RenderSettings) -> None:
    """Load a take's settings into the Arrange page's widgets (from any page)."""
    for name in SETTING_DEFAULTS:
        if hasattr(settings, name):
            st.session_state[name] = getattr(settings, name)
            st.session_state.pop(f"w_{name}", None)


# --- jobs -------------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "estimating..."
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}:{secs:02d}"


def show_job_progress(job: Job, label: str) -> None:
    """Progress bar with stage and time left, for a running job."""
    snap = job.snapshot()
    text = f"{label}: {snap['stage']} · {format_seconds(snap['elapsed_s'])} elapsed"
    if snap["state"] == "running":
        text += f" · {format_seconds(snap['eta_s'])} left"
    st.progress(min(1.0, snap["fraction"]), text=text)


@st.cache_data(show_spinner="Preparing the download...", max_entries=32)
def export_take(take_id: str, suffix: str) -> tuple[bytes, str]:
    """A take's file in the chosen format, with a name made from the song and settings."""
    return library().export(take_id, suffix)
