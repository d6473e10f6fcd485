"""The app with Stable Audio 3 chosen (issue 26): the Model page switches engine and tells its
licence, Arrange shows that engine's knobs, a preview and a render come from it. On the
tests' tiny random-weight pipeline: the workflow, never the sound."""

from __future__ import annotations

import pytest

from neurochip.model_spec import ModelSpec
from tests.test_app import TIMEOUT, field, press_and_wait, session, start
from tests.test_app_ace_step import choose_engine


@pytest.fixture
def sa3_env(tmp_path, monkeypatch, tiny_model_dir, tiny_sa3_dir):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    return tiny_sa3_dir


def test_with_stable_audio_3_chosen_arrange_shows_its_knobs_and_renders_with_it(sa3_env):
    at = start()
    at.switch_page("views/model.py").run()
    [engine_box] = [s for s in at.selectbox if s.label == "Engine"]
    engine_box.set_value("stable-audio-3").run()  # chosen, not yet used: said as it is chosen
    told = " ".join(c.value for c in at.caption)
    assert "Stability AI Community License" in told and "Press Use this model" in told
    assert session(at).model.kind == "riffusion"
    choose_engine(at, "stable-audio-3", sa3_env)
    assert session(at).model == ModelSpec.for_kind("stable-audio-3", source=str(sa3_env))
    assert session(at).settings.steps == 8  # the distilled checkpoint's published count
    if "model_job" in at.session_state:
        assert at.session_state["model_job"].wait(TIMEOUT)
        at.run()
    shown = " ".join(c.value for c in at.caption)
    assert "Stability AI Community License" in shown and "44.1 kHz" in shown
    # On a CPU the page says what to pick, from the bench's measured times.
    assert any(
        "choose Stable Audio 3 with stabilityai/stable-audio-3-small" in i.value for i in at.info
    )
    at.switch_page("views/arrange.py").run()
    labels = {s.label for s in at.slider}
    assert {"Denoise", "Steps"} <= labels
    assert not labels & {"Cover strength", "Shift", "Guidance for the first"}
    assert not [s for s in at.selectbox if s.label == "Scheduler"]
    assert any("Riffusion's 0.35 keeps about as much" in c.value for c in at.caption)
    field(at, "slider", "settings.denoise").set_value(0.5).run()
    field(at, "slider", "settings.steps").set_value(2).run()

    job = press_and_wait(at, "Preview now", "preview")
    render = job.result.render
    assert render.info["engine"] == "stable-audio-3" and render.audio.sample_rate == 44100
    assert render.settings.denoise == 0.5 and render.settings.steps == 2
    assert any(m.value.startswith("**Notes kept:") for m in at.markdown)

    again = start()  # a refresh keeps the engine and its settings
    assert session(again).model.kind == "stable-audio-3"
    assert session(again).settings.denoise == 0.5
