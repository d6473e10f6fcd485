"""What the pages share: the loaded engine, the take library, the sketch, widget state, jobs.

Pages stay thin: they lay out widgets and call the ``neurochip`` library; anything two pages
need lives here. Heavy objects (the engine, the library) load once per server process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import streamlit as st

from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.jobs import Job
from neurochip.library.store import TakeLibrary
from neurochip.model import DEFAULT_MODEL_ID
from neurochip.settings import RenderSettings, TakeSetOptions, describe
from neurochip.sketch import SKETCH_SUFFIXES, Sketch, load_sketch

UPLOAD_SUFFIXES = list(SKETCH_SUFFIXES)


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
        return Engine.from_pretrained(choice.source, choice.device, choice.dtype), None
    except NeuroChipError as err:
        return None, str(err)


def engine() -> tuple[Engine | None, str | None]:
    """The shared engine (renders from all tabs queue on its device's lock)."""
    with st.spinner("Loading the model (once per server start)..."):
        return _load_engine(model_choice())


def forget_engine() -> None:
    _load_engine.clear()


@st.cache_resource(show_spinner=False)
def _library(root: str | None) -> TakeLibrary:
    return TakeLibrary(root)


def library() -> TakeLibrary:
    return _library(os.environ.get("NEUROCHIP_HOME"))


# --- the sketch -------------------------------------------------------------------------------


DEMO_SKETCH = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"


def demo_sketch() -> Sketch:
    """The demo sketch: Greensleeves as a chip-tune MIDI file (assets/greensleeves.mid)."""
    return load_sketch(DEMO_SKETCH)


def accept_upload(upload: Any) -> None:
    """Load an uploaded file (``name``, ``file_id``, file-like) as the sketch.

    A file that cannot be read leaves the sketch already loaded, with its settings, preview
    and takes, as it was: the composer only sees why the new file was refused.
    """
    st.session_state["upload_id"] = upload.file_id
    try:
        set_sketch(load_sketch(upload, name=upload.name))
        forget("upload_error")
    except NeuroChipError as err:
        current = current_sketch()
        kept = f" {current.name} is still loaded." if current is not None else ""
        st.session_state["upload_error"] = f"{err}{kept}"


def forget(*keys: str) -> None:
    """Drop these keys from the session state, where present."""
    for key in keys:
        if key in st.session_state:
            del st.session_state[key]


def current_sketch() -> Sketch | None:
    return st.session_state.get("sketch")


def set_sketch(sketch: Sketch | None) -> None:
    st.session_state["sketch"] = sketch
    forget("preview_job", "preview_key")


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
    "width": TakeSetOptions,
}
DEFAULT_PROMPT = "a funk band with slap bass, live recording"


def default(name: str) -> Any:
    if name == "prompt":
        return DEFAULT_PROMPT  # an empty prompt is a poor first impression
    return next(f.default for f in fields(SETTINGS[name]) if f.name == name)


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
    common = {
        "key": remembered(name),
        "on_change": remember,
        "args": (name,),
        "help": about.help,
    }
    if isinstance(default(name), str):
        if "options" in options:
            return container.selectbox(about.label, **options, **common)
        return container.text_input(about.label, **options, **common)
    if options.pop("number_input", False):
        return container.number_input(
            about.label, int(about.minimum), int(about.maximum), step=1, **options, **common
        )
    kind = type(default(name))
    return container.slider(
        about.label, kind(about.minimum), kind(about.maximum), step=kind(about.step), **common
    )


def open_settings(settings: RenderSettings) -> None:
    """Load a take's settings into the Arrange page's widgets (from any page)."""
    for name in SETTINGS:
        if hasattr(settings, name):
            st.session_state[name] = getattr(settings, name)
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
    )


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
