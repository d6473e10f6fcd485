"""The app with ACE-Step chosen (issue 25): the Model page switches engine, Arrange shows that
engine's knobs (and keeps them), a preview and a render come from it, and its takes say so.
On the tests' tiny random-weight pipeline: the workflow, never the sound."""

from __future__ import annotations

import pytest

from neurochip.model_spec import ModelSpec
from tests.test_app import TIMEOUT, field, press_and_wait, session, start


@pytest.fixture
def ace_env(tmp_path, monkeypatch, tiny_model_dir, tiny_ace_step_dir):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    return tiny_ace_step_dir


def choose_engine(at, kind: str, folder) -> None:
    """The Model page's form: Engine to ``kind``, its folder, Use this model."""
    at.switch_page("views/model.py").run()
    engine_box = [s for s in at.selectbox if s.label == "Engine"][0]
    engine_box.set_value(kind)
    [source] = [t for t in at.text_input if t.label == "Model"]
    source.set_value(str(folder))
    [use] = [b for b in at.button if b.label == "Use this model"]
    use.click().run()


def test_with_ace_step_chosen_arrange_shows_its_knobs_and_renders_with_it(ace_env):
    at = start()
    assert [s for s in at.slider if s.label == "Denoise"]  # Riffusion's knobs first
    choose_engine(at, "ace-step", ace_env)
    spec = session(at).model
    assert spec == ModelSpec.for_kind("ace-step", source=str(ace_env))
    assert session(at).settings.steps == 8  # ACE-Step's published turbo default
    at.switch_page("views/arrange.py").run()
    if "model_job" in at.session_state:
        assert at.session_state["model_job"].wait(TIMEOUT)
        at.run()
    labels = {s.label for s in at.slider}
    assert {"Cover strength", "Shift", "Steps"} <= labels
    assert not labels & {"Denoise", "Guidance for the first"}  # not ACE-Step's
    assert not [s for s in at.selectbox if s.label == "Scheduler"]
    field(at, "slider", "settings.cover_strength").set_value(0.7).run()
    field(at, "slider", "settings.steps").set_value(2).run()
    assert session(at).settings.cover_strength == 0.7

    job = press_and_wait(at, "Preview now", "preview")
    render = job.result.render
    assert render.info["engine"] == "ace-step" and render.audio.sample_rate == 48000
    assert render.settings.cover_strength == 0.7 and render.settings.steps == 2
    assert render.settings.bpm is None or 30 <= render.settings.bpm <= 300
    assert any(m.value.startswith("**Notes kept:") for m in at.markdown)

    # A refresh (a new page session) keeps the engine and its knob.
    again = start()
    assert session(again).model.kind == "ace-step"
    assert session(again).settings.cover_strength == 0.7
