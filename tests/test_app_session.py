"""Every field of the composer's session, set through its widget, outlives a trip to another
page, a refresh and a restart (issue 23): the session model is what every widget shows.

Through Streamlit's AppTest, which cannot type into a table: the Sections and Stems tables'
rows are covered in Chromium (tests/test_browser_session.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import state, ui
from neurochip.io.audio import Audio
from neurochip.job_board import stop_all
from neurochip.library.metadata import take_metadata
from neurochip.model_spec import ModelSpec
from neurochip.session import ComposerSession, field_paths
from neurochip.settings import RenderSettings
from neurochip.workspace import Workspace
from tests.chiptune import make_chiptune
from tests.test_app import (
    SR,
    TIMEOUT,
    bar_field,
    field,
    session,
    upload_into,
    wait_for_model,
    wav_bytes,
)

#: Arrange with an audio song: (field, widget, new value), in the order a composer sets them
#: (Auto preview off first, so no preview runs meanwhile; Across before its values).
ARRANGE = [
    ("view.auto_preview", "toggle", False),
    ("settings.prompt", "text_input", "a string quartet"),
    ("settings.negative_prompt", "text_input", "muffled"),
    ("settings.denoise", "slider", 0.6),
    ("settings.guidance", "slider", 9.0),
    ("settings.steps", "slider", 5),
    ("settings.seed", "number_input", 77),
    ("settings.scheduler", "selectbox", "ddim"),
    ("settings.width", "slider", 0.5),
    ("settings.windows", "selectbox", "shifted"),
    ("settings.feature_reuse", "slider", 2),
    ("settings.guidance_until", "slider", 0.5),
    ("view.quick_preview", "toggle", True),
    ("song.preview_start_s", "slider", 2.0),
    ("song.transition_s", "number_input", 1.5),
    ("song.grid_seeds", "text_input", "5, 6"),
    ("song.grid_axis", "selectbox", "guidance"),
    ("song.grid_values", "text_input", "3, 9"),
    ("view.compare_seeds", "slider", 3),
    ("song.start_s", "number_input", 1.0),
    ("song.duration_s", "number_input", 3.0),
    ("view.stereo_pair", "checkbox", False),
    ("view.compare", "checkbox", True),
    ("song.compare_at_s", "number_input", 2.0),
    ("song.loop", "checkbox", True),
    ("view.download_format", "segmented_control", ".flac"),
]
#: Arrange with a MIDI song.
ARRANGE_MIDI = [("song.stems_on", "toggle", True)]
#: The Takes page (two takes in the library; Starred only last: it hides the unstarred one).
TAKES = [
    ("view.takes_search", "text_input", "funk"),
    ("view.takes_song", "selectbox", "b.wav"),
    ("view.takes_sort", "selectbox", "Name"),
    ("view.takes_compare", "toggle", True),
    ("view.pair_width", "slider", 0.5),
    ("view.takes_comp", "toggle", True),
    ("view.takes_format", "segmented_control", ".mp3"),
    ("view.takes_starred_only", "toggle", True),
]
#: The Model & device page's form: label -> (field, new value).
MODEL = {
    "Model": ("model.source", None),  # the same tiny model, spelt with a trailing slash
    "Device": ("model.device", "cpu"),
    "Number format": ("model.dtype", "fp32"),
    "LoRA (optional)": ("model.lora", ""),  # set and checked in tests/test_app.py
    "LoRA strength": ("model.lora_scale", 0.5),
    "Preview VAE (optional)": ("model.preview_vae", ""),  # likewise
}
#: Fields without a widget of their own, and where they are covered.
NO_WIDGET = {
    "settings.overlap": "no widget: a take opened from Takes brings it (test_app.py)",
    "settings.cover_strength": "shown with ACE-Step: tests/test_app_ace_step.py",
    "settings.shift": "shown with ACE-Step: tests/test_app_ace_step.py",
    "song.sections": "a table: tests/test_browser_session.py",
    "song.stems": "a table: tests/test_browser_session.py",
    "song.bar_grid": "three number boxes: checked below",
    "song.bar_grid_source": "said in the Bars title: checked below",
    "model.kind": "the Model page's Engine box: tests/test_app_ace_step.py",
    "view.compare_kinds": "Compare engines' Engines box: tests/test_engine_comparison.py",
    "view.engine_sources": "set by Use this model: tests/test_app_compare_engines.py",
    "view.piano_roll": "shown with a preview's notes: tests/test_app_notes.py",
    "view.takes_piano_roll": "shown with a take's notes: tests/test_app_takes_notes.py",
    "model.compile": "the CLI's --compile: tests/test_session.py keeps it",
    "model.channels_last": "the CLI's --channels-last: tests/test_session.py keeps it",
}


def test_every_field_is_covered_here():
    covered = {path for path, _, _ in ARRANGE + ARRANGE_MIDI + TAKES}
    covered |= {path for path, _ in MODEL.values()} | set(NO_WIDGET)
    assert covered == set(field_paths())


def shown(at: AppTest, path: str, kind: str) -> Any:
    return field(at, kind, path).value


def check(at: AppTest, cases, label: str) -> None:
    assert not at.exception, (label, at.exception)
    for path, kind, value in cases:
        assert shown(at, path, kind) == value, (label, path)
        part, name = path.split(".")
        holder = (
            session(at).song(session(at).song_key) if part == "song" else getattr(session(at), part)
        )
        kept = getattr(holder, name)
        if name == "grid_values":  # typed per axis
            kept = kept.get(holder.grid_axis)
        assert kept == value, (label, path)


def restart() -> None:
    """What a new server process would not have: the cached engine, library, workspace."""
    st.cache_resource.clear()
    st.cache_data.clear()
    state.STARTED_WITH_MODEL.clear()


def fresh(page: str | None = None) -> AppTest:
    """A new browser session (a refresh), reading the workspace; its song loaded again."""
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    job = at.session_state.get("load_job")
    if job is not None:
        assert job.wait(TIMEOUT) and job.state == "done", job.error
        at.run()
    if page:
        at.switch_page(page).run()
    wait_for_model(at)
    return at


def set_through_widgets(at: AppTest, cases) -> None:
    for path, kind, value in cases:
        widget = field(at, kind, path)
        (widget.input(value) if kind == "text_input" else widget.set_value(value)).run()
        assert not at.exception, (path, at.exception)


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    yield tmp_path
    # Previews started while Auto preview was on: a model call cut off by the interpreter's
    # exit aborts the process.
    stop_all()
    restart()


def add_take(song: str, **settings: Any):
    made = RenderSettings(prompt="a funk band", **settings)
    return ui.library().add(Audio(make_chiptune(1.0), SR), take_metadata("take", {"A": made}, song))


def test_arrange_fields_outlive_a_page_trip_a_refresh_and_a_restart(home):
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    upload_into(at, "minuet.wav", wav_bytes(8.0), "u1")
    at.run()
    wait_for_model(at)
    song = at.session_state["sketch"]
    take = add_take("minuet.wav")  # the last render's take, for its download format
    session(at).last_render = {"key": song.key, "result": {"A": take.id}, "seconds": 1.0}
    at.run()
    set_through_widgets(at, ARRANGE)
    bar_field(at, "per_bar", song).set_value(3).run()
    grid = at.session_state["sketch"].bar_grid
    assert grid.beats_per_bar == 3

    def bars_kept(again: AppTest, label: str) -> None:
        assert again.session_state["sketch"].bar_grid == grid, label
        assert bar_field(again, "per_bar", song).value == 3, label
        assert any(e.label.endswith("(typed)") for e in again.expander), label

    for page in ("views/takes.py", "views/model.py", "views/arrange.py"):
        at.switch_page(page).run()
    check(at, ARRANGE, "page trip")
    bars_kept(at, "page trip")
    again = fresh()
    check(again, ARRANGE, "refresh")
    bars_kept(again, "refresh")
    restart()
    after = fresh()
    check(after, ARRANGE, "restart")
    bars_kept(after, "restart")
    assert ComposerSession.from_dict(Workspace().state()) == session(after)


def test_a_midi_songs_fields_outlive_a_page_trip_a_refresh_and_a_restart(home):
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    at.run()
    [demo] = [b for b in at.button if b.label.startswith("Try the demo")]
    demo.click().run()
    set_through_widgets(at, ARRANGE_MIDI)
    at.switch_page("views/takes.py").run()
    at.switch_page("views/arrange.py").run()
    check(at, ARRANGE_MIDI, "page trip")
    check(fresh(), ARRANGE_MIDI, "refresh")
    restart()
    check(fresh(), ARRANGE_MIDI, "restart")


def test_takes_fields_outlive_a_page_trip_a_refresh_and_a_restart(home):
    add_take("a.wav")
    starred = add_take("b.wav", seed=2)
    add_take("b.wav", seed=3)
    ui.library().star(starred.id, True)

    def takes_page() -> AppTest:
        """A new session on Takes, with the starred take's own panel (its download format)
        open: which panel is open is the session's, not the composer's setup."""
        at = fresh("views/takes.py")
        [more] = [b for b in at.button if b.key == f"more_{starred.id}"]
        more.click().run()
        return at

    at = takes_page()
    set_through_widgets(at, TAKES)
    for page in ("views/arrange.py", "views/model.py", "views/takes.py"):
        at.switch_page(page).run()
    check(at, TAKES, "page trip")
    check(takes_page(), TAKES, "refresh")
    restart()
    check(takes_page(), TAKES, "restart")


def test_the_model_choice_outlives_a_page_trip_a_refresh_and_a_restart(
    home, tiny_model_dir, monkeypatch
):
    at = fresh("views/model.py")
    values = {label: value for label, (_, value) in MODEL.items()}
    values["Model"] = f"{tiny_model_dir}/"
    for label, value in values.items():
        [widget] = [
            w
            for kind in ("text_input", "selectbox", "slider")
            for w in getattr(at, kind)
            if w.label == label
        ]
        widget.set_value(value)
    [use] = [b for b in at.button if b.label == "Use this model"]
    use.click().run()
    wait_for_model(at)
    chosen = session(at).model
    expected = {MODEL[label][0].split(".")[1]: value for label, value in values.items()}
    # What the page does not show (kind, compile, channels last) keeps its default.
    assert dataclasses.asdict(chosen) == {**dataclasses.asdict(ModelSpec()), **expected}

    def kept(again: AppTest, label: str) -> None:
        assert session(again).model == chosen, label
        for name, value in values.items():
            [widget] = [
                w
                for kind in ("text_input", "selectbox", "slider")
                for w in getattr(again, kind)
                if w.label == name
            ]
            assert widget.value == value, (label, name)

    at.switch_page("views/arrange.py").run()
    at.switch_page("views/model.py").run()
    kept(at, "page trip")
    kept(fresh("views/model.py"), "refresh")
    monkeypatch.delenv("NEUROCHIP_MODEL")  # started as `make run` does: no --model
    restart()
    kept(fresh("views/model.py"), "restart")


def test_a_server_started_with_a_model_uses_it_whatever_the_workspace_remembers(
    home, tiny_model_dir
):
    """`neurochip app --model DIR` is the model to load, at that server's start; a choice made
    on the Model page after that stays for the refreshes of that server."""
    Workspace().keep_state({"model": {"source": "/some/other/model", "device": "cpu"}})
    at = fresh("views/model.py")
    assert session(at).model.source == str(tiny_model_dir)
    kept = ComposerSession.from_dict(Workspace().state())
    assert kept.model.source == str(tiny_model_dir)  # another tab of this server loads it too
    assert not at.exception and any("Loaded" in s.value for s in at.success)
    session(at).model = dataclasses.replace(session(at).model, source="/yet/another")
    Workspace().keep_state(session(at).to_dict())
    assert session(fresh()).model.source == "/yet/another"  # a refresh: the page's choice


def test_a_server_started_with_a_model_remembers_it_and_the_last_for_their_engines(
    home, tiny_model_dir
):
    """`neurochip app --model DIR` is a model used: Compare engines loads it for its engine
    kind, and the model the workspace had for its own kind (issue 27)."""
    Workspace().keep_state({"model": {"kind": "stable-audio-3", "source": "/models/sa3"}})
    at = fresh("views/model.py")
    remembered = {"stable-audio-3": "/models/sa3", "riffusion": str(tiny_model_dir)}
    assert session(at).view.engine_sources == remembered
    assert ComposerSession.from_dict(Workspace().state()).view.engine_sources == remembered
