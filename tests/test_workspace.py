"""The workspace: the open sketch, the page's state and the last preview, kept on disk."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from neurochip.faithfulness import note_faithfulness
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings
from neurochip.variations import render_variations, variation_grid
from neurochip.workspace import MAX_SKETCH_BYTES, GridPreview, Preview, Workspace
from tests.chiptune import make_chiptune

SR = 44100
FAST = RenderSettings(prompt="a brass band", steps=4, denoise=0.5, phase_iterations=0)


def test_an_empty_workspace_has_nothing(tmp_path):
    kept = Workspace(tmp_path)
    assert kept.sketch() is None and kept.preview() is None and kept.state() == {}


def test_the_sketch_and_state_come_back_from_another_instance(tmp_path):
    Workspace(tmp_path).keep_sketch(b"MThd-bytes", "tune (v2).mid", {"1": "saw"})
    Workspace(tmp_path).keep_state({"settings": {"denoise": 0.22}, "preview_start": 3.5})
    again = Workspace(tmp_path)  # a restarted server
    sketch = again.sketch()
    assert (sketch.data, sketch.name, sketch.voices) == (
        b"MThd-bytes",
        "tune (v2).mid",
        {"1": "saw"},
    )
    assert again.state() == {"settings": {"denoise": 0.22}, "preview_start": 3.5}


def test_a_preview_comes_back_equal(tmp_path, engine):
    audio = Audio(make_chiptune(8.0), SR)
    render = engine.preview(audio, FAST, 1.0, 2.0)
    key = ("songkey", FAST.to_json(), 1.0)
    preview = Preview("songkey", key, render, note_faithfulness(render.source, render.audio))
    Workspace(tmp_path).keep_preview(preview)
    back = Workspace(tmp_path).preview()
    assert back.song_key == "songkey" and back.key == key
    assert back.render.settings == FAST and back.render.start_s == render.start_s
    np.testing.assert_array_equal(back.render.audio.samples, render.audio.samples)
    np.testing.assert_array_equal(back.render.source.samples, render.source.samples)
    np.testing.assert_allclose(back.render.output_image, render.output_image, atol=1e-3)
    assert back.faithfulness.score == preview.faithfulness.score
    np.testing.assert_array_equal(back.faithfulness.strip, preview.faithfulness.strip)


def test_a_variation_grid_comes_back_equal_keeping_the_shared_region_once(tmp_path, engine):
    audio = Audio(make_chiptune(8.0), SR)
    grid = variation_grid(FAST, [3, 4], guidance=[5.0, 9.0])
    variations = render_variations(engine, audio, grid, region=(1.0, 2.0))
    key = ("songkey", 1.0, False)
    kept = Workspace(tmp_path)
    kept.keep_grid(GridPreview("songkey", key, grid, variations))
    with np.load(kept.root / "grid.npz") as arrays:  # the sketch's region once, not per cell
        assert "source" in arrays.files and "0_source" not in arrays.files
        assert "0_audio" in arrays.files and "3_audio" in arrays.files
    back = Workspace(tmp_path).grid()
    assert back.song_key == "songkey" and back.key == key
    assert back.grid == grid
    assert [v.label for v in back.variations] == [v.label for v in variations]
    for was, now in zip(variations, back.variations, strict=True):
        assert now.settings == was.settings and now.region == was.region == (1.0, 2.0)
        np.testing.assert_array_equal(now.render.audio.samples, was.render.audio.samples)
        np.testing.assert_array_equal(now.render.source.samples, was.render.source.samples)
        np.testing.assert_allclose(now.render.output_image, was.render.output_image, atol=1e-3)
        assert now.render.start_s == was.render.start_s
        assert now.faithfulness.score == was.faithfulness.score
        np.testing.assert_array_equal(now.faithfulness.strip, was.faithfulness.strip)
    # A new sketch forgets the old song's grid with its preview.
    kept.forget_sketch()
    assert Workspace(tmp_path).grid() is None


def test_a_grid_whose_cells_do_not_match_it_is_set_aside(tmp_path, engine):
    audio = Audio(make_chiptune(6.0), SR)
    grid = variation_grid(FAST, [3, 4])
    kept = Workspace(tmp_path)
    kept.keep_grid(
        GridPreview("k", "k", grid, render_variations(engine, audio, grid, region=(0.0, 2.0)))
    )
    meta = json.loads((kept.root / "grid.json").read_text())
    meta["grid"]["rows"] = [3, 5]  # edited by hand, or half of another grid
    (kept.root / "grid.json").write_text(json.dumps(meta))
    assert kept.grid() is None and (kept.root / "grid.json.damaged").exists()


@pytest.mark.parametrize(
    "name", ["sketch.json", "state.json", "preview.json", "preview.npz", "grid.json", "grid.npz"]
)
def test_a_damaged_file_is_set_aside_never_fatal(tmp_path, engine, name):
    kept = Workspace(tmp_path)
    kept.keep_sketch(b"data", "a.wav")
    kept.keep_state({"settings": {}})
    render = engine.preview(Audio(make_chiptune(6.0), SR), FAST, 0.0, 2.0)
    kept.keep_preview(Preview("k", "k", render, note_faithfulness(render.source, render.audio)))
    grid = variation_grid(FAST, [1])
    audio = Audio(make_chiptune(6.0), SR)
    kept.keep_grid(
        GridPreview("k", "k", grid, render_variations(engine, audio, grid, region=(0.0, 2.0)))
    )
    (kept.root / name).write_bytes(b"\x00garbage{")
    assert kept.state() == {} if name == "state.json" else kept.state() == {"settings": {}}
    if name.startswith("preview"):
        assert kept.preview() is None and kept.sketch() is not None
        assert kept.grid() is not None
    if name.startswith("grid"):
        assert kept.grid() is None and kept.preview() is not None
    if name == "sketch.json":
        assert kept.sketch() is None and kept.preview() is not None
    assert (kept.root / f"{name}.damaged").exists()


def test_a_sketch_whose_bytes_do_not_match_is_not_reopened(tmp_path):
    kept = Workspace(tmp_path)
    kept.keep_sketch(b"0123456789", "a.wav")
    (kept.root / "sketch.bin").write_bytes(b"01234")  # cut short by a crash
    assert kept.sketch() is None


def test_a_huge_sketch_is_not_copied(tmp_path, monkeypatch):
    monkeypatch.setattr("neurochip.workspace.MAX_SKETCH_BYTES", 4)
    Workspace(tmp_path).keep_sketch(b"12345", "big.wav")
    assert Workspace(tmp_path).sketch() is None
    assert MAX_SKETCH_BYTES >= 200 * 1024 * 1024  # the app's upload limit fits


def test_settings_round_trip_through_the_state_json(tmp_path):
    settings = dataclasses.replace(FAST, seed=2**32 - 1)
    Workspace(tmp_path).keep_state({"settings": settings.to_dict()})
    assert RenderSettings.from_dict(Workspace(tmp_path).state()["settings"]) == settings
