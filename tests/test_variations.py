"""Variation grids (neurochip.variations) and ``neurochip sweep``."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neurochip.cli import main
from neurochip.engine import Engine
from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.faithfulness import bars_of_span
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings
from neurochip.variations import (
    MAX_CELLS,
    VariationGrid,
    best_variation,
    best_variations,
    keep_variations,
    render_variations,
    summary,
    summary_csv,
    variation_grid,
)
from tests.chiptune import make_chiptune

SR = 44100
# Few steps, no Griffin-Lim, every cell's windows in one UNet call: fast, and about plumbing.
FAST = RenderSettings(
    prompt="a string quartet", steps=4, denoise=0.5, phase_iterations=0, batch_size=64
)


def song(seconds: float) -> Audio:
    return Audio(make_chiptune(seconds), SR)


@contextlib.contextmanager
def unet_calls(model):
    """A list that gets the batch size of each UNet call made inside the block."""
    sizes: list[int] = []
    handle = model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: sizes.append(int(args[0].shape[0])), with_kwargs=True
    )
    try:
        yield sizes
    finally:
        handle.remove()


# --- the grid ------------------------------------------------------------------------------------


def test_a_grid_is_seeds_by_one_other_setting_row_by_row():
    grid = variation_grid(FAST, [1, 2, 3], denoise=[0.25, 0.35, 0.45])
    assert grid.shape == (3, 3) and len(grid) == len(grid.cells) == 9
    assert (grid.row_axis, grid.column_axis) == ("seed", "denoise")
    assert grid.rows == (1, 2, 3) and grid.columns == (0.25, 0.35, 0.45)
    assert [(c.seed, c.denoise) for c in grid.cells[:4]] == [
        (1, 0.25),
        (1, 0.35),
        (1, 0.45),
        (2, 0.25),
    ]
    assert grid.label(4) == "seed 2 · denoise 0.35"
    assert grid.position(5) == (1, 2) and grid.index(1, 2) == 5
    assert grid.row_label(0) == "seed 1" and grid.column_label(2) == "denoise 0.45"
    # Everything else is the base's.
    assert grid.cells[8] == dataclasses.replace(FAST, seed=3, denoise=0.45)
    assert grid.base == FAST

    guided = variation_grid(FAST, [7], guidance=[5, 7.5])
    assert guided.shape == (1, 2) and guided.label(1) == "seed 7 · guidance 7.5"
    assert [c.guidance for c in guided.cells] == [5.0, 7.5]
    assert all(c.denoise == FAST.denoise for c in guided.cells)

    seeds_only = variation_grid(FAST, [5, 6])
    assert seeds_only.shape == (2, 1) and seeds_only.column_axis is None
    assert seeds_only.columns == () and seeds_only.column_label(0) == ""
    assert [seeds_only.label(i) for i in range(2)] == ["seed 5", "seed 6"]
    assert seeds_only.cells[1] == dataclasses.replace(FAST, seed=6)

    biggest = variation_grid(FAST, [1, 2, 3, 4], guidance=[1, 3, 5, 7])
    assert len(biggest) == MAX_CELLS == 16
    with pytest.raises(IndexError):
        biggest.position(16)


def test_a_grid_says_which_settings_moved_on_from_it_and_round_trips():
    grid = variation_grid(FAST, [1, 2], denoise=[0.25, 0.45])
    # A cell's settings (Use this) are the grid's: its seed and denoise are the grid's own.
    assert grid.changed_settings(grid.cells[3]) == []
    assert grid.changed_settings(dataclasses.replace(FAST, seed=99, denoise=0.7)) == []
    moved = dataclasses.replace(grid.cells[0], prompt="a choir", steps=8, guidance=9.0)
    assert grid.changed_settings(moved) == ["Prompt", "Guidance", "Steps"]
    guided = variation_grid(FAST, [1], guidance=[5, 9])
    assert guided.changed_settings(dataclasses.replace(FAST, guidance=12.0)) == []
    assert guided.changed_settings(dataclasses.replace(FAST, denoise=0.3)) == ["Denoise"]

    assert grid.chosen(3) == {"seed": 2, "denoise": 0.45}
    assert guided.chosen(1) == {"seed": 1, "guidance": 9.0}
    assert variation_grid(FAST, [4, 5]).chosen(1) == {"seed": 5}
    for each in (grid, guided, variation_grid(FAST, [4, 5])):
        data = json.loads(json.dumps(each.to_dict()))  # as the workspace keeps it
        assert VariationGrid.from_dict(data) == each
    with pytest.raises(NeuroChipError, match="cannot vary 'steps'"):
        VariationGrid.from_dict(grid.to_dict() | {"column_axis": "steps"})


def scored(*scores, notes=None):
    """Cells with these chroma scores and, where given, these notes-kept shares."""
    notes = notes or scores
    return [
        types.SimpleNamespace(faithfulness=types.SimpleNamespace(score=s, kept=k))
        for s, k in zip(scores, notes, strict=True)
    ]


def test_cells_tied_as_shown_are_all_best():
    assert best_variations(scored(0.931, 0.934, 0.9, 0.926)) == [0, 1, 3]  # all read 93%
    assert best_variations(scored(0.931, 0.936)) == [1]  # 93% and 94%
    assert best_variations(scored(0.5)) == [0]
    assert best_variations(scored(0.5, 0.5, 0.5)) == []  # nothing to choose between
    # Notes kept tie (0% each); the chroma score breaks it.
    assert best_variations(scored(0.57, 0.56, 0.57, notes=(0.0, 0.0, 0.0))) == [0, 2]
    assert best_variation(scored(0.931, 0.934, 0.9)) == 1  # the single best is still exact
    with pytest.raises(ValueError):
        best_variations([])


def test_the_best_cells_are_those_that_keep_the_most_notes_not_the_best_chroma():
    # A chord pad of the right key scores high on chroma and keeps few notes: the app's
    # "best" follows the notes counted (Faithfulness.kept), as its cells show them.
    pad_then_cover = scored(0.95, 0.90, 0.80, notes=(0.20, 0.86, 0.861))
    assert best_variations(pad_then_cover) == [1]  # both read 86%: chroma breaks the tie
    assert best_variations(scored(0.95, 0.90, notes=(0.20, 0.70))) == [1]


@pytest.mark.parametrize(
    ("seeds", "axes", "message"),
    [
        ([1], {"denoise": [0.3], "guidance": [7]}, "denoise or guidance, not both"),
        ([1, 2, 3, 4, 5], {}, "at most 4 seeds, not 5"),
        ([1], {"denoise": [0.1, 0.2, 0.3, 0.4, 0.5]}, "at most 4 denoise values"),
        ([], {}, "at least one seed"),
        ([1], {"guidance": []}, "at least one guidance"),
        ([1, 2, 1], {}, "seeds of a variation grid must differ: 1 is there twice"),
        ([1], {"denoise": [0.35, 0.350]}, "0.35 is there twice"),
        ([1], {"denoise": [0.3, 1.5]}, "Denoise must be between 0 and 1, not 1.5"),
        ([1], {"guidance": [7, 99]}, "Guidance must be 0-50"),
        ([-1], {}, "Seed must be a whole number from 0"),
        ([1.5], {}, "Seed must be a whole number"),
        (["x"], {}, "Seed must be a whole number"),
        ([1], {"denoise": [float("nan")]}, "Denoise must be a finite number"),
        ("12", {}, "list of numbers"),
    ],
)
def test_a_bad_grid_is_refused_with_what_to_change(seeds, axes, message):
    with pytest.raises(NeuroChipError) as err:
        variation_grid(FAST, seeds, **axes)
    assert message.lower() in str(err.value).lower()


def test_bar_times_become_bars_of_the_span():
    def _bars_from(bar_times_s, start_s):  # the strip's bars, as render_variations uses them
        return bars_of_span(bar_times_s, start_s)[0]

    assert _bars_from(None, 3.0) is None and _bars_from([], 3.0) is None
    # The span starts in the bar of 2.0 s: that bar is the strip's first, from 0.
    assert _bars_from([0.0, 2.0, 4.0, 6.0], 3.0) == [0.0, 1.0, 3.0]
    assert _bars_from([0.0, 2.0, 4.0], 2.0) == [0.0, 2.0]
    assert _bars_from([5.0, 7.0], 1.0) == [4.0, 6.0]


# --- rendering -----------------------------------------------------------------------------------


def test_a_preview_grid_is_each_preview_made_in_one_loop(engine, tiny_model):
    audio = song(8.0)
    grid = variation_grid(FAST, [1, 2], denoise=[0.25, 0.5])
    steps = [c.denoise_steps for c in grid.cells]
    assert len(set(steps)) > 1  # cells with fewer steps finish early, inside the same loop
    most = grid.cells[steps.index(max(steps))]
    with unet_calls(tiny_model) as alone:
        engine.preview(audio, most, 3.0, 2.0)
    stages: list[tuple[float, str]] = []
    with unet_calls(tiny_model) as together:
        variations = render_variations(
            engine,
            audio,
            grid,
            region=(3.0, 2.0),
            bar_times_s=[0.0, 2.0, 4.0, 6.0],
            progress=lambda f, s: stages.append((f, s)),
        )
    assert len(together) == len(alone) == max(steps)  # one UNet call per step, for all cells

    assert len(variations) == len(grid)
    for i, (variation, cell) in enumerate(zip(variations, grid.cells, strict=True)):
        assert variation.settings == variation.render.settings == cell
        assert variation.label == grid.label(i)
        assert variation.region == (3.0, 2.0) and variation.render.start_s == 3.0
        if i in (0, 3):  # both seeds, both denoise values (test_engine checks every take)
            expected = engine.preview(audio, cell, 3.0, 2.0)
            np.testing.assert_allclose(
                variation.render.audio.samples, expected.audio.samples, atol=1e-4
            )
        np.testing.assert_allclose(
            variation.render.source.samples, audio.span(3.0, 2.0).samples, atol=1e-6
        )
        faith = variation.faithfulness
        assert 0.0 <= faith.score <= 1.0
        # Bars of the song, from the region's start: the bar of 2 s, then 4 s.
        assert faith.segment == "bar" and list(faith.times_s) == [0.0, 1.0]
    assert not np.allclose(variations[0].render.audio.samples, variations[2].render.audio.samples)

    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(s.startswith("denoise") for _, s in stages)
    assert any(s == "note faithfulness" for _, s in stages)
    assert best_variation(variations) == int(np.argmax([v.faithfulness.kept for v in variations]))


def test_a_sweep_renders_the_base_span_as_full_takes(engine, tiny_model):
    audio = song(4.0)
    base = dataclasses.replace(FAST, start_s=0.5, duration_s=2.5)
    grid = variation_grid(base, [3], guidance=[1.0, 7.0])  # one unguided, one guided
    with unet_calls(tiny_model) as sizes:
        variations = render_variations(engine, audio, grid)
    assert sizes == [3] * base.denoise_steps  # 1 + a guidance pair, in one call a step
    frames = round(2.5 * SR)
    for variation in variations:
        assert variation.region is None and variation.render.start_s == 0.5
        assert variation.render.audio.frames == frames
        assert variation.faithfulness.segment == "second"
    alone = engine.render(audio, grid.cells[1])
    np.testing.assert_allclose(variations[1].render.audio.samples, alone.audio.samples, atol=1e-4)


def test_a_grid_can_be_cancelled(engine):
    cancel = threading.Event()
    cancel.set()
    grid = variation_grid(FAST, [1, 2])
    with pytest.raises(RenderCancelled):
        render_variations(engine, song(3.0), grid, region=(0.0, 2.0), cancel=cancel)


def test_variations_are_kept_and_summed_up(engine, private_take_library):
    from neurochip.library.metadata import settings_in
    from neurochip.library.store import TakeLibrary

    grid = variation_grid(FAST, [1, 2], denoise=[0.3, 0.5])
    variations = render_variations(engine, song(4.0), grid, region=(1.0, 2.0))
    library = TakeLibrary(private_take_library)
    ids = keep_variations(library, variations, "tune.mid")
    assert len(ids) == 4
    take = library.get(ids[3])
    assert take.kind == "variation" and take.source_name == "tune.mid"
    assert "denoise 0.5" in take.name and take.metadata["variation"] == "seed 2 · denoise 0.5"
    score = take.metadata["faithfulness"]["score"]
    assert score == round(variations[3].faithfulness.score, 4)
    kept = settings_in(take.metadata, None, take.name)
    # A preview's span is its region: rendering that span again makes that take.
    assert (kept.seed, kept.denoise, kept.start_s) == (2, 0.5, 1.0)
    assert kept.duration_s == pytest.approx(2.0, abs=1e-3)

    names = [f"cell{i}.wav" for i in range(4)]
    data = summary(grid, variations, names, "tune.mid")
    assert data["columns"] == "denoise" and data["seeds"] == [1, 2]
    assert data["values"] == [0.3, 0.5] and data["start_s"] == 1.0
    assert [c["file"] for c in data["cells"]] == names
    assert sum(c["best"] for c in data["cells"]) == 1
    assert "strip" in data["cells"][0]["faithfulness_detail"]
    json.dumps(data, allow_nan=False)
    rows = list(csv.DictReader(summary_csv(grid, variations, names).splitlines()))
    assert [(r["seed"], r["denoise"]) for r in rows] == [
        ("1", "0.3"),
        ("1", "0.5"),
        ("2", "0.3"),
        ("2", "0.5"),
    ]


# --- neurochip sweep -----------------------------------------------------------------------------

SWEEP_FAST = ["--steps", "4", "--iterations", "0", "--batch-size", "64"]


@pytest.fixture
def sketch(tmp_path: Path) -> Path:
    path = tmp_path / "tune.wav"
    sf.write(path, make_chiptune(3.0, stereo=True).T, SR, subtype="PCM_16")
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: what is checked must be checked before."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Engine, "from_pretrained", classmethod(fail))


def test_sweep_writes_a_take_per_cell_and_a_summary(
    sketch, tmp_path, tiny_model_dir, capsys, private_take_library
):
    from neurochip.library.metadata import settings_from_take
    from neurochip.library.store import TakeLibrary

    out = tmp_path / "grid"
    argv = ["sweep", str(sketch), "-o", str(out), "--prompt", "a funk band", *SWEEP_FAST]
    argv += ["--seeds", "1,2", "--denoise", "0.3, 0.5", "--start", "0.5", "--duration", "2"]
    assert main([*argv, "--model", str(tiny_model_dir)]) == 0
    printed = capsys.readouterr().out

    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 4 and (out / "summary.csv").is_file() and (out / "summary.json").is_file()
    rows = list(csv.DictReader((out / "summary.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["cell"], r["seed"], r["denoise"]) for r in rows] == [
        ("1", "1", "0.3"),
        ("2", "1", "0.5"),
        ("3", "2", "0.3"),
        ("4", "2", "0.5"),
    ]
    assert {r["prompt"] for r in rows} == {"a funk band"} and {r["steps"] for r in rows} == {"4"}
    assert [r["best"] for r in rows].count("True") == 1
    for row in rows:
        path = out / row["file"]
        assert path.name.startswith("tune_variation_funk-band_d")
        assert sf.info(path).frames == 2 * SR
        settings = settings_from_take(path)
        assert (str(settings.seed), f"{settings.denoise:g}") == (row["seed"], row["denoise"])
        assert settings.start_s == 0.5 and settings.prompt == "a funk band"
        assert 0.0 <= float(row["faithfulness"]) <= 1.0
        assert 0.0 <= float(row["notes_kept"]) <= 1.0  # counted: basic-pitch is installed
    best = max(rows, key=lambda r: float(r["notes_kept"]))
    assert best["best"] == "True" or float(best["notes_kept"]) == max(
        float(r["notes_kept"]) for r in rows if r["best"] == "True"
    )
    assert "notes kept" in printed and "chroma" in printed
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert data["source"] == "tune.wav" and data["columns"] == "denoise"
    assert [c["file"] for c in data["cells"]] == [r["file"] for r in rows]
    assert data["cells"][0]["faithfulness_detail"]["segment"] == "second"
    assert len(data["cells"][0]["faithfulness_detail"]["strip"]) == 2

    # The table: the grid's order, the best marked.
    lines = [line for line in printed.splitlines() if line.strip().endswith(".wav")]
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4"]
    assert sum(" best " in line for line in lines) == 1
    kept = TakeLibrary(private_take_library).list()
    assert len(kept) == 4 and {t.kind for t in kept} == {"variation"}


def test_sweep_replaces_files_only_with_overwrite(
    sketch, tmp_path, tiny_model_dir, capsys, monkeypatch, private_take_library
):
    from neurochip.library.store import TakeLibrary

    out = tmp_path / "grid"
    out.mkdir()
    (out / "summary.csv").write_text("my own notes\n")
    argv = ["sweep", str(sketch), "-o", str(out), "--prompt", "x", "--seeds", "4", *SWEEP_FAST]
    argv += ["--guidance", "1", "--duration", "1", "--model", str(tiny_model_dir)]
    with monkeypatch.context() as patch:
        patch.setattr(Engine, "from_pretrained", classmethod(lambda *a, **k: 1 / 0))
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "summary.csv" in err and "--overwrite" in err and err.count("\n") == 1
    assert (out / "summary.csv").read_text() == "my own notes\n"
    assert main([*argv, "--overwrite", "--no-library"]) == 0
    assert (out / "summary.csv").read_text().startswith("cell,")
    assert len(list(out.glob("*.wav"))) == 1 and not TakeLibrary(private_take_library).list()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "1,x"], "--seeds takes whole numbers separated by commas"),
        (["--seeds", "1.5"], "--seeds takes whole numbers"),
        (["--seeds", "1,,2"], "--seeds takes whole numbers"),
        (["--seeds", "1", "--denoise", "0.3;0.4"], "--denoise takes numbers"),
        (["--seeds", "1", "--denoise", "0.3,1.5"], "denoise must be between 0 and 1"),
        (["--seeds", "1,2,3,4,5"], "at most 4 seeds"),
        (["--seeds", "1,1"], "1 is there twice"),
        (["--seeds", "1", "--denoise", "0.3,0.4", "--guidance", "5,7"], "not both"),
        (["--seeds", "1", "--guidance", "5,100"], "guidance must be 0-50"),
        (["--seeds", "1", "--steps", "0"], "steps must be"),
        (["--seeds", "1", "--start", "2.99"], "at least"),
        (["--seeds", "1", "-o", "{sketch}"], "is a file, not a folder"),
        (["--seeds", "1", "-o", "{tmp}", "--denoise", "0.3,0.3000000001"], "same file name"),
    ],
)
def test_sweep_refuses_bad_options_before_loading_a_model(
    extra, message, sketch, tmp_path, capsys, no_model
):
    names = {"sketch": str(sketch), "tmp": str(tmp_path)}
    argv = ["sweep", str(sketch), "-o", str(tmp_path / "out"), "--prompt", "x"]
    code = main([*argv, *[e.format(**names) for e in extra]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("neurochip: ") and err.count("\n") == 1
    assert message.lower() in err.lower() and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_sweep_never_writes_over_its_input(tmp_path, capsys, no_model):
    out = tmp_path / "grid"
    out.mkdir()
    sketch = out / "summary.json"  # a sketch whose name a summary would take
    sketch.write_bytes(b"not read: refused before")
    argv = ["sweep", str(sketch), "-o", str(out), "--prompt", "x", "--seeds", "1", "--overwrite"]
    assert main(argv) == 2
    assert "replace your input" in capsys.readouterr().err
    assert sketch.read_bytes() == b"not read: refused before"


def test_a_single_denoise_value_sets_every_cell_of_a_guidance_sweep():
    from neurochip.cli import build_parser
    from neurochip.cli.sweep import _grid

    args = build_parser().parse_args(
        ["sweep", "x.wav", "-o", "out", "--prompt", "p", "--seeds", "1,2"]
        + ["--denoise", "0.6", "--guidance", "5,9"]
    )
    grid = _grid(args)
    assert grid.column_axis == "guidance" and grid.shape == (2, 2)
    assert {c.denoise for c in grid.cells} == {0.6}
