"""The composer's session model (neurochip.session): kept whole, read back safely."""

from __future__ import annotations

import dataclasses
import json

import pytest

from neurochip.bars import BarGrid
from neurochip.errors import NeuroChipError
from neurochip.model_spec import ModelSpec
from neurochip.session import (
    KEPT_SONGS,
    ComposerSession,
    Settings,
    SongSetup,
    View,
    field_paths,
)
from neurochip.workspace import Workspace


def a_session() -> ComposerSession:
    session = ComposerSession(
        settings=Settings(prompt="a brass band", denoise=0.6, seed=77, width=0.5),
        model=ModelSpec(source="some/model", device="cpu", lora_scale=0.5, compile="default"),
        view=View(quick_preview=True, stereo_pair=False, takes_search="funk"),
        song_key="abc",
        last_render={"key": "abc", "result": {"A": "t1"}, "start_s": 0.0},
    )
    setup = session.song("abc")
    setup.start_s, setup.duration_s, setup.loop = 2.0, 3.0, True
    setup.sections = [{"start": "bar 5", "prompt": "full band", "denoise": 0.5, "guidance": None}]
    setup.stems = [{"name": "Bass", "parts": "4", "prompt": "slap bass"}]
    setup.bar_grid, setup.bar_grid_source = BarGrid(152.0, 0.53, 3), "typed"
    setup.grid_seeds, setup.grid_values = "5, 6", {"guidance": "3, 9"}
    return session


def test_a_session_comes_back_whole_from_its_json(tmp_path):
    session = a_session()
    workspace = Workspace(tmp_path)
    workspace.keep_state(session.to_dict())
    again = ComposerSession.from_dict(json.loads(json.dumps(workspace.state())))
    assert again == session
    assert again.songs["abc"].bar_grid == BarGrid(152.0, 0.53, 3)


def test_a_damaged_field_takes_its_default_and_the_rest_are_kept():
    data = a_session().to_dict()
    data["settings"]["denoise"] = "loud"
    data["settings"]["steps"] = 3.5  # not a whole number
    data["view"]["quick_preview"] = "yes"
    data["songs"]["abc"]["bar_grid"] = {"bpm": 9000}
    data["songs"]["abc"]["sections"] = "not rows"
    data["songs"]["abc"]["bar_grid_source"] = "guessed"
    data["songs"]["broken"] = ["not", "a", "setup"]
    data["model"] = None
    again = ComposerSession.from_dict(data)
    assert again.settings.denoise == Settings().denoise and again.settings.steps == Settings().steps
    assert again.settings.seed == 77 and again.settings.prompt == "a brass band"
    assert again.view.quick_preview is False and again.view.takes_search == "funk"
    setup = again.songs["abc"]
    assert setup.bar_grid is None and setup.sections == [] and setup.loop is True
    assert setup.bar_grid_source == "detected"
    assert "broken" not in again.songs and again.model == ModelSpec()
    for nothing in (None, [], "text", {"songs": 3}):
        assert ComposerSession.from_dict(nothing) == ComposerSession()


def test_the_state_of_the_app_before_the_session_model_is_read_into_it():
    """What the app kept in state.json before: the same fields under its widgets' names."""
    old = {
        "settings": {"prompt": "a string quartet", "denoise": 0.45, "seed": 6},
        "model": {"source": "/models/tiny", "device": "cpu", "dtype": "auto"},
        "auto_preview": False,
        "quick_preview": True,
        "render_pair": False,
        "render_compare": True,
        "render_loop": True,
        "preview_start": 2.5,
        "render_span": ["song1", 1.0, 3.0],
        "render_stems_on": True,
        "sections_rows": [{"start": "0", "prompt": "strings"}],
        "stems_rows": {"song2": [{"name": "Bass", "parts": "4", "prompt": "slap bass"}]},
        "bar_grid": {"key": "song1", "bpm": 152, "downbeat_s": 0.53, "beats_per_bar": 4},
        "last_render": {"key": "song1", "result": {"A": "t1"}},
    }
    session = ComposerSession.from_dict(old)
    assert (session.settings.prompt, session.settings.denoise, session.settings.seed) == (
        "a string quartet",
        0.45,
        6,
    )
    assert session.model == ModelSpec(source="/models/tiny", device="cpu")
    assert (session.view.auto_preview, session.view.quick_preview) == (False, True)
    assert (session.view.stereo_pair, session.view.compare) == (False, True)
    song = session.songs["song1"]
    assert (song.start_s, song.duration_s, song.loop, song.stems_on) == (1.0, 3.0, True, True)
    assert song.preview_start_s == 2.5 and song.sections == [{"start": "0", "prompt": "strings"}]
    assert song.bar_grid == BarGrid(152.0, 0.53, 4) and song.bar_grid_source == "typed"
    assert session.songs["song2"].stems[0]["prompt"] == "slap bass"
    assert session.song_key == "song1" and session.last_render["result"] == {"A": "t1"}


def test_a_model_choice_kept_before_model_spec_is_read_as_a_spec():
    """state.json of the app before ModelSpec: its ModelChoice, without kind, compile and
    channels_last; a kind this NeuroChip does not know, or a damaged field, takes its default."""
    kept = {
        "source": "/models/tiny",
        "device": "cpu",
        "dtype": "fp32",
        "lora": "/loras/style.safetensors",
        "lora_scale": 0.8,
        "preview_vae": "madebyollin/taesd",
    }
    session = ComposerSession.from_dict({"songs": {}, "model": kept})
    assert session.model == ModelSpec(**kept)
    assert session.model.kind == "riffusion" and session.model.compile == ""
    data = session.to_dict()
    assert data["model"] == {**kept, "kind": "riffusion", "compile": "", "channels_last": False}
    odd = {**kept, "kind": "musicgen", "lora_scale": "strong", "channels_last": "yes"}
    again = ComposerSession.from_dict({"songs": {}, "model": odd})
    assert again.model == ModelSpec(**{**kept, "lora_scale": 1.0})


def test_the_most_recent_songs_setups_are_kept():
    session = ComposerSession()
    for n in range(KEPT_SONGS + 5):
        session.song(f"song{n}").loop = True
    session.song("song7")  # opened again: recent now
    assert len(session.songs) == KEPT_SONGS
    assert "song0" not in session.songs and session.songs["song7"].loop
    assert list(session.songs)[-1] == "song7"
    assert len(ComposerSession.from_dict(session.to_dict()).songs) == KEPT_SONGS


def test_the_settings_become_render_settings_or_say_what_is_wrong():
    assert Settings(seed=5).render_settings().seed == 5
    with pytest.raises(NeuroChipError, match="(?i)denoise"):
        Settings(denoise=7.0).render_settings()


def test_field_paths_name_every_field_once():
    paths = field_paths()
    assert len(paths) == len(set(paths))
    for part, kind in (("settings", Settings), ("model", ModelSpec), ("view", View)):
        assert {f"{part}.{f.name}" for f in dataclasses.fields(kind)} <= set(paths)
    assert {f"song.{f.name}" for f in dataclasses.fields(SongSetup)} <= set(paths)


def test_using_a_model_remembers_each_engine_kinds_last_source(tmp_path):
    """Compare engines loads each kind's last-used model (issue 27): a local folder used with
    Stable Audio 3, then Riffusion's, are both remembered, and come back from the file."""
    session = ComposerSession()
    sa3 = ModelSpec.for_kind("stable-audio-3", source="/models/sa3")
    session.use_model(sa3)
    session.use_model(ModelSpec(source="/models/riffusion"))
    assert session.model == ModelSpec(source="/models/riffusion")
    assert session.view.engine_sources == {
        "riffusion": "/models/riffusion",
        "stable-audio-3": "/models/sa3",
    }
    # The model in use before is its kind's last-used one too (a session kept before this).
    older = ComposerSession(model=ModelSpec.for_kind("ace-step", source="/models/ace"))
    older.use_model(sa3)
    assert older.view.engine_sources == {"ace-step": "/models/ace", "stable-audio-3": "/models/sa3"}
    workspace = Workspace(tmp_path)
    workspace.keep_state(session.to_dict())
    assert ComposerSession.from_dict(workspace.state()) == session


@pytest.mark.parametrize(
    "kept, read",
    [
        ({"stable-audio-3": "/a", "suno": "/b", "ace-step": ""}, {"stable-audio-3": "/a"}),
        ({"stable-audio-3": 3}, {}),  # a value that is not a source: the field's default
        ("not a table", {}),
        (None, {}),
    ],
)
def test_remembered_engine_sources_are_read_leniently(kept, read):
    data = a_session().to_dict()
    data["view"]["engine_sources"] = kept
    again = ComposerSession.from_dict(data)
    assert again.view.engine_sources == read
    assert again.view.takes_search == "funk"  # the rest of the view kept
