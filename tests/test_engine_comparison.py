"""Engines compared on one sketch (neurochip.engine_comparison), ``neurochip sweep --engines``
and the Arrange page's *Compare engines*. On the tests' tiny random-weight models: the
workflow (rows, batches, times, refusals, files), never the sound."""

from __future__ import annotations

import csv
import dataclasses
import json
import threading
import types

import numpy as np
import pytest
import soundfile as sf

from neurochip.cli import main
from neurochip.engine import Engine
from neurochip.engine_comparison import (
    EngineRow,
    best_engine,
    best_engines,
    compare_engines,
    comparison_csv,
    comparison_summary,
    engine_settings,
    parse_kinds,
)
from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.faithfulness import Faithfulness, sketch_bar_times
from neurochip.model_spec import ModelSpec
from neurochip.settings import RenderSettings
from neurochip.sketch import load_sketch
from tests.test_faithfulness import tune_midi

# Few steps, no Griffin-Lim, all windows in one call: fast, and about plumbing.
FAST = RenderSettings(prompt="a funk band", steps=2, denoise=0.5, phase_iterations=0, batch_size=64)
REGION = (0.5, 2.0)


@pytest.fixture(scope="module")
def sketch(tmp_path_factory):
    """A short MIDI sketch: its notes are what each take is checked against."""
    return load_sketch(tune_midi(tmp_path_factory.mktemp("compare") / "tune.mid"))


@pytest.fixture
def specs(tiny_model_dir, tiny_sa3_dir):
    return [
        ModelSpec(source=str(tiny_model_dir), device="cpu"),
        ModelSpec.for_kind("stable-audio-3", source=str(tiny_sa3_dir), device="cpu"),
    ]


class FakeClock:
    """Seconds that pass only where a test says: a load takes 100, each take 7."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def batches(monkeypatch):
    """Every Engine.preview_many / render_many call: (kind, number of takes); the fake clock
    moves 7 s per take inside them."""
    calls: list[tuple[str, int]] = []
    clock = FakeClock()
    real_preview, real_render = Engine.preview_many, Engine.render_many

    def recorded(real):
        def call(self, song, takes, *args, **kwargs):
            calls.append((self.spec.kind if self.spec else "?", len(takes)))
            result = real(self, song, takes, *args, **kwargs)
            clock.now += 7.0 * len(takes)
            return result

        return call

    monkeypatch.setattr(Engine, "preview_many", recorded(real_preview))
    monkeypatch.setattr(Engine, "render_many", recorded(real_render))
    return calls, clock


def loader(clock: FakeClock, loaded: list):
    def load(spec: ModelSpec) -> Engine:
        engine = Engine.from_pretrained(spec, local_files_only=True)
        clock.now += 100.0
        loaded.append(spec.kind)
        return engine

    return load


# --- the library ---------------------------------------------------------------------------------


def test_each_engine_renders_its_seeds_in_one_batch_and_the_clock_times_it(
    sketch, specs, batches, tmp_path
):
    calls, clock = batches
    missing = ModelSpec.for_kind("ace-step", source=str(tmp_path / "no-such-model"), device="cpu")
    loaded: list[str] = []
    seen: list[tuple[float, str]] = []
    rows = compare_engines(
        [specs[0], missing, specs[1]],
        sketch,
        FAST,
        [3, 4, 5],
        region=REGION,
        bar_times_s=sketch_bar_times(sketch),
        progress=lambda f, stage: seen.append((f, stage)),
        load=loader(clock, loaded),
        clock=clock,
    )
    assert [row.kind for row in rows] == ["riffusion", "ace-step", "stable-audio-3"]
    # One batch per engine that rendered, all three seeds in it; the missing one never got one.
    assert calls == [("riffusion", 3), ("stable-audio-3", 3)]
    assert loaded == ["riffusion", "stable-audio-3"]

    riff, ace, sa3 = rows
    assert not ace.ok and ace.cells == [] and ace.seconds is None
    assert "no-such-model" in ace.error or "ACE-Step" in ace.error
    for row in (riff, sa3):
        assert row.ok and row.error is None
        assert [c.settings.seed for c in row.cells] == [3, 4, 5]
        assert row.seconds == 21.0 and row.seconds_per_seed == 7.0 and row.load_s == 100.0
        for cell in row.cells:
            assert isinstance(cell.faithfulness, Faithfulness)
            assert cell.faithfulness.notes is not None  # a MIDI sketch: its notes counted
            assert 0.0 <= cell.faithfulness.kept <= 1.0
            assert cell.render.start_s == pytest.approx(REGION[0], abs=0.01)
            assert cell.render.audio.duration_s == pytest.approx(REGION[1], abs=0.05)
            assert cell.render.info["spec"]["kind"] == row.kind
    # The composer's 2 steps stay for every engine (a chosen value, not a default).
    assert {c.settings.steps for c in riff.cells + sa3.cells} == {2}
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1] == (1.0, "done")
    assert any("Stable Audio 3, engine 3 of 3" in stage for _, stage in seen)

    # Kept in the workspace, as the app keeps it for a refresh: every row back as it was.
    from neurochip.workspace import ComparisonPreview, Workspace

    Workspace().keep_comparison(ComparisonPreview("song", ("song", 0.5), rows))
    back = Workspace().comparison()
    assert back.key == ("song", 0.5) and [r.kind for r in back.rows] == [r.kind for r in rows]
    for kept, row in zip(back.rows, rows, strict=True):
        assert (kept.error, kept.seconds, kept.load_s, kept.spec) == (
            row.error,
            row.seconds,
            row.load_s,
            row.spec,
        )
        assert kept.kept == row.kept and kept.settings == row.settings
        for a, b in zip(kept.cells, row.cells, strict=True):
            assert np.array_equal(a.render.audio.samples, b.render.audio.samples)
            assert a.settings == b.settings and a.region == b.region


def test_the_best_engine_is_the_one_that_keeps_the_most_notes():
    def row(kind: str, *kept: float) -> EngineRow:
        cells = [_cell(k) for k in kept]
        return EngineRow(kind, kind, cells=cells, seconds=1.0)

    rows = [row("riffusion", 0.5, 0.7), EngineRow("ace-step", "x", error="no"), row("sa3", 0.9)]
    assert rows[0].kept == pytest.approx(0.6) and best_engine(rows) == 2
    assert best_engines(rows) == [2]
    rows.append(row("again", 0.899))  # the same as shown: both marked
    assert best_engines(rows) == [2, 3] and best_engine(rows) == 2
    assert best_engine([rows[1]]) is None and best_engines([rows[1]]) == []
    assert best_engines([rows[0]]) == []  # one engine: nothing to compare it with
    assert best_engines([row("a", 0.0), row("b", 0.0)]) == []  # all the same: no best
    assert [r["best"] for r in csv.DictReader(comparison_csv(rows).splitlines())] == [
        "False",
        "False",
        "False",
        "True",
        "False",
    ]


def _cell(kept: float):
    """A take whose note measure says ``kept`` (chroma half of it)."""
    faith = Faithfulness(
        score=kept / 2,
        times_s=np.zeros(1),
        strip=np.zeros(1),
        segment="second",
        duration_s=1.0,
        counted_s=1.0,
        notes=types.SimpleNamespace(score=kept),
    )
    return types.SimpleNamespace(faithfulness=faith, settings=RenderSettings(prompt="x", seed=1))


def test_each_engine_takes_its_own_default_steps_and_ace_step_hears_the_song(sketch):
    at_default = RenderSettings(prompt="x")  # Riffusion's 50 steps
    assert engine_settings(at_default, "riffusion").steps == 50
    assert engine_settings(at_default, "stable-audio-3").steps == 8
    assert engine_settings(at_default.replace(steps=8), "riffusion").steps == 50
    chosen = at_default.replace(steps=12)
    assert {engine_settings(chosen, k).steps for k in ("riffusion", "ace-step")} == {12}
    ace = engine_settings(at_default, "ace-step", sketch)
    assert ace.steps == 8 and ace.bpm == 132 and ace.time_signature == 4
    assert engine_settings(at_default.replace(bpm=90), "ace-step", sketch).bpm == 90
    assert engine_settings(at_default, "riffusion", sketch).bpm is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "at least one engine"),
        ("riffusion,suno", "Unknown engine 'suno'"),
        ("riffusion, riffusion", "named twice"),
    ],
)
def test_bad_engine_lists_are_said(text, message):
    with pytest.raises(NeuroChipError, match=message):
        parse_kinds(text)
    assert parse_kinds(" stable-audio-3 ,riffusion") == ["stable-audio-3", "riffusion"]


def test_a_span_too_long_for_an_engine_is_its_row_and_the_others_render(
    sketch, engine, sa3_engine, monkeypatch
):
    """Engines handed in are used as they are (never loaded, never let go); one that refuses
    the span says why in its row."""
    caps = dataclasses.replace(sa3_engine.backend.capabilities, longest_s=1.0)
    monkeypatch.setattr(sa3_engine.backend, "capabilities", caps)

    def never(spec):
        raise AssertionError("an engine handed in was loaded again")

    rows = compare_engines(
        [engine, sa3_engine], sketch, FAST.replace(duration_s=2.0), [1], load=never
    )
    assert rows[0].ok and rows[0].kind == "riffusion" and rows[0].load_s is None
    assert not rows[1].ok and "at most 1 s in one piece" in rows[1].error
    assert best_engine(rows) == 0


def test_cancel_stops_the_comparison(sketch, specs):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(RenderCancelled):
        compare_engines(specs, sketch, FAST, [1], region=REGION, cancel=cancel)


def test_bad_seeds_are_said_before_any_model_loads(sketch, specs):
    def never(spec):
        raise AssertionError("loaded")

    with pytest.raises(NeuroChipError, match="at most 4 seeds"):
        compare_engines(specs, sketch, FAST, [1, 2, 3, 4, 5], load=never)


# --- neurochip sweep --engines -------------------------------------------------------------------

SWEEP_FAST = ["--steps", "2", "--iterations", "0", "--batch-size", "64", "--device", "cpu"]


def test_sweep_engines_writes_a_take_per_engine_and_seed_and_a_summary(
    sketch, tmp_path, tiny_model_dir, tiny_sa3_dir, capsys, private_take_library
):
    from neurochip.library.metadata import settings_from_take
    from neurochip.library.store import TakeLibrary

    source = tmp_path / "tune.mid"
    source.write_bytes(sketch.midi)
    out = tmp_path / "compared"
    argv = ["sweep", str(source), "-o", str(out), "--prompt", "a funk band", *SWEEP_FAST]
    argv += ["--seeds", "1,2", "--start", "0.5", "--duration", "2"]
    argv += ["--engines", "riffusion,ace-step,stable-audio-3"]
    argv += ["--model", f"riffusion={tiny_model_dir}", "--model", f"stable-audio-3={tiny_sa3_dir}"]
    argv += ["--model", f"ace-step={tmp_path / 'no-such-model'}"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out

    rows = list(csv.DictReader((out / "summary.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["engine"], r["seed"]) for r in rows] == [
        ("riffusion", "1"),
        ("riffusion", "2"),
        ("ace-step", ""),
        ("stable-audio-3", "1"),
        ("stable-audio-3", "2"),
    ]
    assert rows[2]["error"] and not rows[2]["file"]
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 4 and {r["file"] for r in rows if r["file"]} == {w.name for w in wavs}
    for row in rows:
        if not row["file"]:
            continue
        path = out / row["file"]
        assert sf.info(path).frames == 2 * sf.info(path).samplerate
        settings = settings_from_take(path)
        assert str(settings.seed) == row["seed"] and settings.start_s == 0.5
        made = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        assert made["model_spec"]["kind"] == row["engine"]
        assert 0.0 <= float(row["notes_kept"]) <= 1.0 and float(row["seconds"]) > 0
    # The best engine's takes are marked, and only its.
    assert len({r["engine"] for r in rows if r["best"] == "True"}) == 1
    assert {r["engine"] for r in rows if r["best"] == "True"} < {"riffusion", "stable-audio-3"}

    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [e["engine"] for e in data["engines"]] == ["riffusion", "ace-step", "stable-audio-3"]
    assert data["engines"][1]["error"] and data["engines"][1]["cells"] == []
    assert data["best"]["engine"] in ("riffusion", "stable-audio-3")

    # The table: engine, seed, notes kept, chroma, seconds, file; the refusal said in it.
    lines = printed.splitlines()
    assert any("ace-step" in line and "no-such-model" in line for line in lines)
    assert sum(line.strip().endswith(".wav") for line in lines) == 4
    assert sum(" best " in f"{line} " for line in lines) >= 1
    assert len(TakeLibrary(private_take_library).list()) == 4


def test_sweep_engines_fails_when_no_engine_renders(sketch, tmp_path, capsys):
    source = tmp_path / "tune.mid"
    source.write_bytes(sketch.midi)
    argv = ["sweep", str(source), "-o", str(tmp_path / "out"), "--prompt", "x", *SWEEP_FAST]
    argv += ["--seeds", "1", "--engines", "stable-audio-3", "--no-library"]
    argv += ["--model", f"stable-audio-3={tmp_path / 'nothing'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "No engine rendered" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--engines", "riffusion,suno"], "Unknown engine 'suno'"),
        (["--engines", "riffusion", "--denoise", "0.3,0.5"], "one value"),
        (["--engines", "riffusion", "--model", "suno=/x"], "--model KIND=SOURCE"),
        (["--engines", "riffusion", "--model", "/a/folder"], "--model KIND=SOURCE"),
    ],
)
def test_sweep_engines_refuses_bad_options_before_loading_a_model(
    extra, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(Engine, "from_pretrained", classmethod(lambda *a, **k: 1 / 0))
    song = tmp_path / "tune.wav"
    sf.write(song, [[0.0, 0.0]] * 44100, 44100)
    argv = ["sweep", str(song), "-o", str(tmp_path / "out"), "--prompt", "x", "--seeds", "1"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_single_model_still_takes_a_bare_source(tiny_model_dir):
    from neurochip.cli import build_parser
    from neurochip.cli.common import model_spec

    args = build_parser().parse_args(
        ["sweep", "x.wav", "-o", "o", "--prompt", "p", "--seeds", "1", "--model", "/m"]
    )
    assert model_spec(args).source == "/m"
    args = build_parser().parse_args(["render", "x.wav", "-o", "o.wav", "--prompt", "p"])
    assert model_spec(args) == ModelSpec(source=ModelSpec().source)


def test_summaries_say_each_engine_and_its_refusal():
    row = EngineRow("ace-step", "ACE-Step 1.5 x", error="Its weights are not here.")
    data = comparison_summary([row], source_name="tune.mid")
    assert data["best"] is None and data["engines"][0]["error"] == "Its weights are not here."
    assert "ace-step" in comparison_csv([row])


# --- the app: Arrange's Compare engines ----------------------------------------------------------


@pytest.mark.slow
def test_the_app_compares_two_engines_and_a_refresh_brings_the_rows_back(
    tmp_path, monkeypatch, tiny_model_dir, tiny_sa3_dir
):
    from neurochip import model_spec
    from tests.test_app import board_job, fast, field, session, start

    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    # Stable Audio 3's default model is the tiny one here; ACE-Step's is not on this machine.
    monkeypatch.setitem(model_spec.DEFAULT_SOURCES, "stable-audio-3", str(tiny_sa3_dir))
    at = start()
    fast(at)
    field(at, "slider", "view.compare_seeds").set_value(1).run()
    [engines] = [m for m in at.multiselect if m.label == "Engines"]
    assert engines.value == ["riffusion", "stable-audio-3"] and engines.options == [
        "Riffusion",
        "Stable Audio 3",
    ]
    assert any("Not on this machine: ACE-Step 1.5" in c.value for c in at.caption)

    [button] = [b for b in at.button if b.label == "Compare engines"]
    button.click().run()
    job = board_job("compare")
    assert job.wait(120) and job.state == "done", job.error
    at.run()
    assert not at.exception
    rows = job.result.rows
    assert [r.kind for r in rows] == ["riffusion", "stable-audio-3"]
    assert all(r.ok and len(r.cells) == 1 for r in rows)
    assert {c.settings.seed for r in rows for c in r.cells} == {session(at).settings.seed}

    def shown_rows(page) -> list[str]:
        return [m.value for m in page.markdown if " · notes kept " in m.value]

    lines = shown_rows(at)
    assert [line.split("**")[1] for line in lines] == ["Riffusion", "Stable Audio 3"]
    assert sum("best" in line for line in lines) == len(best_engines(rows))  # ties: none
    for i in best_engines(rows):
        assert "best" in lines[i]
    assert session(at).view.compare_seeds == 1

    # A restart (the board forgotten): the rows come back from the workspace.
    from neurochip.job_board import board_for
    from neurochip.workspace import Workspace

    board_for(Workspace().root).forget("compare")
    again = start()
    assert shown_rows(again) == lines
    assert session(again).view.compare_seeds == 1
    # The engines picked outlive a refresh too.
    [engines] = [m for m in again.multiselect if m.label == "Engines"]
    engines.set_value(["stable-audio-3"]).run()
    assert session(again).view.compare_kinds == "stable-audio-3"
    [engines] = [m for m in start().multiselect if m.label == "Engines"]
    assert engines.value == ["stable-audio-3"]
