"""The Takes page says notes kept (issue 27): the headline with chroma beside it, "Notes kept"
as a sort, and *Count notes* for a take kept before notes were counted."""

from __future__ import annotations

import pytest

from app import ui
from neurochip.library.notes import count_notes
from tests.test_app import field, start
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
    assert f"Notes kept: {now.notes_kept:.0%}" in markdown(at)  # the headline
    assert "· chroma :" in markdown(at)  # the chroma badge beside it
    assert not [b for b in at.button if b.key == f"count_notes_{old.id}"]
    assert [t for t in at.toggle if t.key == f"roll_{old.id}_toggle"]  # the piano roll

    # Sorted by notes kept: the counted takes, most kept first.
    field(at, "selectbox", "view.takes_sort").set_value("Notes kept").run()
    assert not at.exception
    listed = [b.key.removeprefix("star_") for b in at.button if b.key.startswith("star_")]
    assert set(listed) == {old.id, counted.id}


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
