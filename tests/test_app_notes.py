"""Notes kept, counted as notes, on the Arrange page: the meter's line, the grid's cells and
the piano roll (issue 27). The figure and the words are tested on hand-made notes; the page
through Streamlit's AppTest with the tiny model and the demo MIDI sketch."""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import song as songs
from app import ui
from app.arrange.grid import cell_measures
from app.piano_roll import EXTRA, KEPT, LOST, MATCHED, lost_notes_text, piano_roll_figure
from neurochip.faithfulness import Faithfulness, bars_of_span, sketch_bar_times
from neurochip.notes_kept import notes_kept
from neurochip.sketch import load_sketch
from neurochip.transcription import Notes, sketch_notes
from neurochip.variations import best_variations
from tests.test_app import (
    TIMEOUT,
    board_job,
    fast,
    field,
    press_and_wait,
    quiet,
    session,
    wait_for_model,
)
from tests.test_app_compare_engines import with_ceiling

# --- hand-made notes -----------------------------------------------------------------------------

#: C4 E4 G4 in bar 12 (from 0 s), E5 in bar 13 (from 2 s); the take keeps C4 and E4, plays an
#: A#4 of its own, and neither G4 nor E5.
SKETCH = Notes.of([(0.0, 0.5, 60), (0.5, 1.0, 64), (1.0, 1.5, 67), (2.1, 2.5, 76)])
TAKE = Notes.of([(0.01, 0.4, 60), (0.5, 1.1, 64), (1.6, 1.9, 70)])


def found():
    return notes_kept(SKETCH, TAKE, 3.0, [0.0, 2.0], first_bar=12)


def faith_of(strip, notes=None) -> Faithfulness:
    return Faithfulness(
        score=float(np.mean(strip)),
        times_s=np.arange(len(strip), dtype=float),
        strip=np.asarray(strip, dtype=float),
        segment="second",
        duration_s=float(len(strip)),
        counted_s=float(len(strip)),
        notes=notes,
    )


def traces(figure) -> dict:
    return {trace.meta: trace for trace in figure.data}


def test_the_piano_roll_draws_each_kind_of_note_once_in_song_seconds():
    kept = found()
    figure = piano_roll_figure(kept, start_s=10.0, duration_s=3.0)
    by_kind = traces(figure)
    assert set(by_kind) == {KEPT, LOST, MATCHED, EXTRA}  # one trace each, not one per note
    assert {kind: len(trace.y) for kind, trace in by_kind.items()} == {
        KEPT: 2,
        LOST: 2,
        MATCHED: 2,
        EXTRA: 1,
    }
    assert len(by_kind[KEPT].y) + len(by_kind[LOST].y) == len(kept.sketch)
    assert len(by_kind[MATCHED].y) + len(by_kind[EXTRA].y) == len(kept.take)
    # Onsets in the song's seconds, lengths as the notes', pitches as MIDI numbers.
    assert list(by_kind[LOST].base) == pytest.approx([11.0, 12.1])
    assert list(by_kind[LOST].x) == pytest.approx([0.5, 0.4])
    assert list(by_kind[LOST].y) == [67, 76]
    # The hover says the note, its bar and its onset in the song's seconds.
    assert list(by_kind[LOST].hovertext) == [
        "G4 · bar 12 · 11.00 s · lost",
        "E5 · bar 13 · 12.10 s · lost",
    ]
    assert list(by_kind[KEPT].hovertext) == [
        "C4 · bar 12 · 10.00 s · kept",
        "E4 · bar 12 · 10.50 s · kept",
    ]
    assert list(by_kind[EXTRA].hovertext) == ["A#4 · bar 12 · 11.60 s · take · extra"]
    # Lost notes are marked as lost: a red outline and a hatch; the kept ones are solid.
    assert by_kind[LOST].marker.line.color == "rgb(214, 39, 40)"
    assert by_kind[LOST].marker.pattern.shape == "/"
    assert by_kind[KEPT].marker.pattern.shape is None
    assert by_kind[LOST].name == "sketch notes lost (2)" and figure.layout.showlegend is not False
    # The match's own bars, numbered as the song's; time and pitch ranges around the notes.
    assert [s.x0 for s in figure.layout.shapes] == [10.0, 12.0]
    assert [a.text for a in figure.layout.annotations] == ["12", "13"]
    assert list(figure.layout.xaxis.range) == [10.0, 13.0]
    assert list(figure.layout.yaxis.range) == [60 - 3.5, 76 + 3.5]
    assert "C4" in figure.layout.yaxis.ticktext and "E5" in figure.layout.yaxis.ticktext
    assert "#" not in json.dumps(figure.to_plotly_json()["layout"].get("shapes", []))  # rgb()


def test_the_piano_roll_draws_the_bar_lines_it_is_given():
    figure = piano_roll_figure(found(), start_s=10.0, bar_times_s=[0.0, 5.0, 9.5, 11.0, 12.5, 14])
    # Only those within the span (10-13 s), numbered from the song's first bar.
    assert [s.x0 for s in figure.layout.shapes] == [11.0, 12.5]
    assert [a.text for a in figure.layout.annotations] == ["4", "5"]
    assert all(s.line.dash == "dot" for s in figure.layout.shapes)
    # The hover follows those bars too: E5 at 12.1 s is in bar 4 (11.0-12.5).
    assert "E5 · bar 4 · 12.10 s · lost" in list(traces(figure)[LOST].hovertext)


def test_the_piano_roll_without_bars_or_notes_says_seconds_or_nothing():
    per_second = notes_kept(SKETCH, TAKE, 3.0)
    figure = piano_roll_figure(per_second, start_s=1.0)
    assert not figure.layout.shapes
    assert list(traces(figure)[LOST].hovertext) == ["G4 · 2.00 s · lost", "E5 · 3.10 s · lost"]
    empty = piano_roll_figure(notes_kept(Notes.of([]), Notes.of([]), 2.0))
    assert all(len(trace.y) == 0 for trace in empty.data)
    assert [a.text for a in empty.layout.annotations] == ["No notes here"]


def test_a_long_song_s_notes_stay_four_traces():
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 300, 2000))
    sketch = Notes(starts, starts + 0.3, rng.integers(40, 90, 2000))
    take = Notes(starts + 0.01, starts + 0.3, sketch.pitches)
    figure = piano_roll_figure(notes_kept(sketch, take, 300.0, list(np.arange(0, 300, 2.0))))
    assert len(figure.data) == 4
    assert len(traces(figure)[KEPT].y) == 2000 and len(traces(figure)[LOST].y) == 0


def test_the_lost_notes_are_listed_in_words_with_bar_and_song_seconds():
    text = lost_notes_text(found(), start_s=10.0)
    assert text.startswith("**2 lost**")
    assert "- bar 12 · G4 · 11.00 s" in text and "- bar 13 · E5 · 12.10 s" in text
    everything = notes_kept(SKETCH, SKETCH, 3.0)
    assert lost_notes_text(everything) == "No sketch notes lost."


def test_the_meter_line_counts_notes_first_with_chroma_beside():
    line = ui.notes_kept_line(faith_of([0.9, 0.9, 0.5, 0.9], found()), start_s=10.0)
    assert line.startswith("**Notes kept: 50%** · 2 notes lost, most in bar 12 (G4) · 1 extra")
    assert line.endswith("chroma 0.80 (lowest around 12.0 s)")
    calm = ui.notes_kept_line(faith_of([0.9, 0.88, 0.92], found()))
    assert "chroma 0.90 (no place much lower than the rest)" in calm


def test_the_meter_line_without_a_transcriber_says_notes_were_not_counted():
    line = ui.notes_kept_line(faith_of([0.9, 0.9, 0.5, 0.9]), start_s=10.0)
    assert line.startswith("**Chroma match: 0.80** · lowest around 12.0 s")
    assert "notes not counted" in line and "basic-pitch" in line
    assert "Notes kept" not in line  # chroma is not called a count of notes


def test_a_grid_cell_says_both_measures():
    assert cell_measures(faith_of([0.91], found())) == "notes kept 50% · chroma 0.91"
    assert cell_measures(faith_of([0.91])) == "chroma 0.91 (notes not counted)"
    none = notes_kept(Notes.of([]), TAKE, 3.0)
    assert cell_measures(faith_of([0.91], none)) == "notes kept: none to keep · chroma 0.91"


def test_a_grid_cell_says_how_much_the_sketch_itself_keeps_where_less_than_all():
    ceiled = faith_of([0.91], with_ceiling(found(), 0.79))
    assert cell_measures(ceiled) == "notes kept 50% (sketch 79%) · chroma 0.91"
    heard = faith_of([0.91], with_ceiling(found(), 0.996))
    assert cell_measures(heard) == "notes kept 50% · chroma 0.91"
    # The Arrange meter's line bolds the number, not what the headline says after it.
    line = ui.notes_kept_line(ceiled)
    assert line.startswith("**Notes kept: 50%** (the sketch itself: 79%) · ")


# --- the page ------------------------------------------------------------------------------------


@pytest.fixture
def app_env(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    return tmp_path


def start_midi() -> tuple[AppTest, object]:
    at = AppTest.from_file("../app/main.py", default_timeout=TIMEOUT)
    song = load_sketch(songs.DEMO_SKETCH.read_bytes(), name="greensleeves.mid")
    at.session_state["sketch"] = song
    at.session_state["upload_id"] = "test"
    quiet(at)
    assert os.environ["NEUROCHIP_MODEL"]
    at.run()
    wait_for_model(at)
    assert not at.exception
    return at, song


def chart_figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def values(trace: dict, name: str) -> list:
    """A trace's array as sent: a list, or Plotly's typed array (base64 with its dtype)."""
    sent = trace.get(name, [])
    if isinstance(sent, dict):
        return np.frombuffer(base64.b64decode(sent["bdata"]), dtype=sent["dtype"]).tolist()
    return list(sent)


@pytest.mark.slow
def test_the_preview_counts_the_midi_sketch_s_notes_by_its_bars(app_env):
    at, song = start_midi()
    fast(at)
    field(at, "slider", "song.preview_start_s").set_value(4.0).run()
    job = press_and_wait(at, "Preview now", "preview")
    faith = job.result.faithfulness
    notes = faith.notes
    assert notes is not None  # basic-pitch is a test dependency
    # Counted against the MIDI file's own notes over the region, by the song's bars: the
    # region starts in bar 3 (3.6-5.4 s).
    start = job.result.render.start_s
    expected = sketch_notes(song).span(start, job.result.render.source.duration_s)
    assert len(notes.sketch) == len(expected) > 0
    np.testing.assert_array_equal(notes.sketch.pitches, expected.pitches)
    bars, first = bars_of_span(sketch_bar_times(song), start)
    assert (notes.segment, notes.first_bar) == ("bar", first) and first == 3
    np.testing.assert_allclose(notes.times_s, bars[: len(notes.times_s)])

    [line] = [m.value for m in at.markdown if m.value.startswith("**Notes kept:")]
    assert line.startswith(f"**Notes kept: {notes.score:.0%}**")
    assert f"chroma {faith.score:.2f}" in line
    # The strip shows notes kept per bar; the piano roll waits for its toggle.
    assert len(at.get("plotly_chart")) == 2
    strip = chart_figures(at)[0]
    assert strip["layout"]["yaxis"]["title"]["text"] == "notes kept"

    [roll] = [t for t in at.toggle if t.label == "Piano roll"]
    roll.set_value(True).run()
    assert not at.exception
    figures = chart_figures(at)
    assert len(figures) == 3
    drawn = {trace["meta"]: trace for trace in figures[2]["data"]}
    sketch_drawn = len(values(drawn[KEPT], "y")) + len(values(drawn[LOST], "y"))
    assert sketch_drawn == len(notes.sketch)
    assert len(values(drawn[LOST], "y")) == int((~notes.kept).sum())
    assert len(values(drawn[LOST], "hovertext")) == len(values(drawn[LOST], "y"))
    # x in the song's seconds: the first sketch note where the MIDI file has it.
    onsets = sorted([*values(drawn[KEPT], "base"), *values(drawn[LOST], "base")])
    assert onsets[0] == pytest.approx(start + float(expected.starts_s[0]))
    lost = [m.value for m in at.markdown if "lost**" in m.value or "No sketch notes" in m.value]
    assert lost, "the lost notes are listed beside the roll"

    # Shown or not is the composer's choice: it outlives a trip to Takes and a refresh.
    assert session(at).view.piano_roll is True
    at.switch_page("views/takes.py").run()
    at.switch_page("views/arrange.py").run()
    assert not at.exception
    [roll] = [t for t in at.toggle if t.label == "Piano roll"]
    assert roll.value is True and len(chart_figures(at)) == 3
    again, _ = start_midi()
    [roll] = [t for t in again.toggle if t.label == "Piano roll"]
    assert roll.value is True and len(chart_figures(again)) == 3
    roll.set_value(False).run()
    assert session(again).view.piano_roll is False and len(chart_figures(again)) == 2


@pytest.mark.slow
def test_grid_cells_show_notes_kept_and_chroma_and_the_best_follows_notes(app_env):
    at, song = start_midi()
    fast(at)
    field(at, "text_input", "song.grid_seeds").input("11")
    field(at, "text_input", "song.grid_values").input("0.3, 0.6")
    job = press_and_wait(at, "Render the grid", "grid")
    variations = job.result.variations
    assert all(v.faithfulness.notes is not None for v in variations)
    cells = [m.value for m in at.markdown if "notes kept" in m.value and "chroma" in m.value]
    assert len(cells) == 2
    for cell, variation in zip(cells, variations, strict=True):
        faith = variation.faithfulness
        assert cell_measures(faith) in cell
        assert f"notes kept {faith.notes.score:.0%}" in cell and f"chroma {faith.score:.2f}" in cell
        ceiling = faith.notes.ceiling  # the MIDI file's notes the transcriber hears in its audio
        if ceiling is not None and ceiling < 0.995:
            assert f"(sketch {ceiling:.0%})" in cell
        # Counted against the MIDI file's notes, by the song's bars.
        assert faith.notes.segment == "bar" and len(faith.notes.sketch) > 0
    # The best as neurochip.variations picks it (notes kept, chroma breaking a tie).
    best = best_variations(variations)
    assert [("best" in c) for c in cells] == [i in best for i in range(2)]
    assert board_job("grid").state == "done"
