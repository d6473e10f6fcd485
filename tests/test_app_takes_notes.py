"""The Takes page says notes kept (issue 27): the headline with chroma beside it, "Notes kept"
as a sort, and *Count notes* for a take kept before notes were counted."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from app import ui
from app.takes import badge, kept_badge, list_help, scores_text
from neurochip.library.notes import count_notes
from tests.test_app import field, start
from tests.test_app_notes import values
from tests.test_library_notes import old_take

pytestmark = pytest.mark.slow


@pytest.fixture
def app_env(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture
def sketch(tmp_path_factory):
    from neurochip.sketch import load_sketch
    from tests.test_faithfulness import tune_midi

    return load_sketch(tune_midi(tmp_path_factory.mktemp("tune") / "tune.mid"))


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_an_old_take_counts_its_notes_and_shows_the_headline(app_env, sketch):
    library = ui.library()
    library.keep_source(sketch)
    counted = count_notes(library, old_take(library, sketch).id)
    old = old_take(library, sketch)  # newer: first in the list
    assert old.notes_kept is None

    at = start("views/takes.py", song=False)
    assert not at.exception
    text = markdown(at)
    assert f":green-badge[{counted.notes_kept:.0%}]" in text  # the list: notes kept
    assert "chroma" in text  # the old take's row: its chroma score, said as such
    assert any(c.value == "Notes kept" for c in at.caption)

    [more] = [b for b in at.button if b.key == f"more_{old.id}"]
    more.click().run()
    assert not at.exception
    assert "Notes kept: not counted · chroma" in markdown(at)
    [button] = [b for b in at.button if b.key == f"count_notes_{old.id}"]
    assert button.label == "Count notes"
    button.click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]

    now = ui.library().get(old.id)
    assert now.notes_kept is not None and now.notes_kept > 0.8
    assert now.metadata["faithfulness"]["notes"]["score"] == now.notes_kept
    assert f"**Notes kept: {now.notes_kept:.0%}**" in markdown(at)  # the headline, bold
    assert "· chroma :" in markdown(at)  # the chroma badge beside it
    assert not [b for b in at.button if b.key == f"count_notes_{old.id}"]
    assert field(at, "toggle", "view.takes_piano_roll")  # the piano roll
    # The strip is of the headline's measure: notes kept per bar, not chroma.
    [strip] = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert strip["layout"]["yaxis"]["title"]["text"] == "notes kept"
    counted_strip = now.metadata["faithfulness"]["notes"]["strip"]
    assert len(values(strip["data"][0], "y")) == len(counted_strip)

    # Sorted by notes kept: the counted takes, most kept first.
    field(at, "selectbox", "view.takes_sort").set_value("Notes kept").run()
    assert not at.exception
    listed = [b.key.removeprefix("star_") for b in at.button if b.key.startswith("star_")]
    assert set(listed) == {old.id, counted.id}


def test_the_piano_roll_toggle_outlives_a_trip_and_a_refresh(app_env, sketch):
    library = ui.library()
    library.keep_source(sketch)
    take = count_notes(library, old_take(library, sketch).id)

    def opened(at):
        [more] = [b for b in at.button if b.key == f"more_{take.id}"]
        more.click().run()
        assert not at.exception
        return at

    at = opened(start("views/takes.py", song=False))
    field(at, "toggle", "view.takes_piano_roll").set_value(True).run()
    assert len(at.get("plotly_chart")) == 2  # the strip and the roll
    at.switch_page("views/arrange.py").run()
    at.switch_page("views/takes.py").run()
    assert field(at, "toggle", "view.takes_piano_roll").value is True
    assert len(at.get("plotly_chart")) == 2
    again = opened(start("views/takes.py", song=False))  # a refresh
    assert field(again, "toggle", "view.takes_piano_roll").value is True
    assert len(again.get("plotly_chart")) == 2


def test_a_take_without_notes_counted_charts_its_chroma(app_env, sketch):
    library = ui.library()
    old = old_take(library, sketch)
    at = start("views/takes.py", song=False)
    [more] = [b for b in at.button if b.key == f"more_{old.id}"]
    more.click().run()
    assert not at.exception
    assert not at.get("plotly_chart")  # no notes to chart: the chroma bar chart
    assert at.get("vega_lite_chart")


def test_a_take_whose_song_was_not_kept_says_so_when_counting(app_env, sketch):
    library = ui.library()
    old = old_take(library, sketch, key="0123456789abcdef")  # its song never kept
    at = start("views/takes.py", song=False)
    [more] = [b for b in at.button if b.key == f"more_{old.id}"]
    more.click().run()
    [button] = [b for b in at.button if b.key == f"count_notes_{old.id}"]
    button.click().run()
    assert not at.exception
    assert any("was not kept with it" in e.value for e in at.error)
    assert ui.library().get(old.id).notes_kept is None


def test_the_list_and_scores_say_the_sketchs_own_ceiling_where_less_than_all():
    def take(ceiling):
        notes = {"score": 0.5} if ceiling is None else {"score": 0.5, "ceiling": ceiling}
        return SimpleNamespace(notes_kept=0.5, metadata={"faithfulness": {"notes": notes}})

    said = list_help(take(0.79))
    assert said.startswith("Notes kept 50% (sketch 79%): ") and "79% of the sketch's" in said
    assert list_help(take(None)) is None  # an audio sketch, a take counted before
    assert list_help(take(0.999)) is None  # heard whole: nothing to say
    assert list_help(take("damaged")) is None
    measured = {"score": 0.9, "notes": {"score": 0.5, "ceiling": 0.79}}
    expected = f"notes kept {kept_badge(0.5)} (sketch 79%) · chroma {badge(0.9)}"
    assert scores_text(measured) == expected
    measured["notes"]["ceiling"] = None
    assert "(sketch" not in scores_text(measured)
