"""Arrange's *Compare engines* after the walkthrough of issue 27: each engine kind loads the
model the composer last used with it (two local folders compare), rows say notes kept in
percent with the sketch's own ceiling, and a cancelled comparison says so.

The page's full comparison is in tests/test_engine_comparison.py."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from app import state
from app.arrange import compare_engines as page
from neurochip import model_spec
from neurochip.engine_comparison import EngineRow
from neurochip.errors import RenderCancelled
from neurochip.faithfulness import Faithfulness
from neurochip.model_spec import ModelSpec
from neurochip.notes_kept import notes_kept
from neurochip.session import ComposerSession
from neurochip.transcription import Notes

# --- which model each engine kind offers ----------------------------------------------------------


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """Model folders here, and every kind's default and small model not on this machine."""
    made = {}
    for name in ("riffusion", "sa3", "sa3-small"):
        made[name] = tmp_path / name
        made[name].mkdir()
    for kind in model_spec.KINDS:
        monkeypatch.setitem(model_spec.DEFAULT_SOURCES, kind, str(tmp_path / f"no-{kind}"))
    monkeypatch.setitem(model_spec.SMALL_SOURCES, "stable-audio-3", str(tmp_path / "no-small"))
    return made


def offered(monkeypatch, session: ComposerSession) -> dict:
    monkeypatch.setattr(state, "composer", lambda: session)
    return page.candidates()


def test_each_kind_offers_its_last_used_source_so_two_local_folders_compare(folders, monkeypatch):
    session = ComposerSession()
    session.use_model(ModelSpec.for_kind("stable-audio-3", source=str(folders["sa3"])))
    session.use_model(ModelSpec(source=str(folders["riffusion"]), device="cpu", dtype="fp32"))
    found = offered(monkeypatch, session)
    assert found["riffusion"] == (session.model, None)  # the Model page's choice itself
    spec, why = found["stable-audio-3"]
    assert why is None  # on this machine: offered
    assert spec == ModelSpec.for_kind(
        "stable-audio-3", source=str(folders["sa3"]), device="cpu", dtype="fp32"
    )
    spec, why = found["ace-step"]  # nothing remembered: its default, not here
    assert spec.source == model_spec.DEFAULT_SOURCES["ace-step"] and "no such file" in why


def test_a_kinds_small_model_is_offered_when_it_is_here_and_nothing_is_remembered(
    folders, monkeypatch
):
    monkeypatch.setitem(model_spec.SMALL_SOURCES, "stable-audio-3", str(folders["sa3-small"]))
    session = ComposerSession(model=ModelSpec(source=str(folders["riffusion"])))
    spec, why = offered(monkeypatch, session)["stable-audio-3"]
    assert (spec.source, why) == (str(folders["sa3-small"]), None)
    # A source remembered but gone (a folder moved away): what is here instead, else why not.
    session.view.engine_sources["stable-audio-3"] = str(folders["sa3"] / "moved")
    spec, why = offered(monkeypatch, session)["stable-audio-3"]
    assert (spec.source, why) == (str(folders["sa3-small"]), None)
    monkeypatch.setitem(model_spec.SMALL_SOURCES, "stable-audio-3", str(folders["sa3"] / "no"))
    spec, why = offered(monkeypatch, session)["stable-audio-3"]
    assert spec.source == str(folders["sa3"] / "moved") and "no such file" in why


# --- the rows ------------------------------------------------------------------------------------

SKETCH = Notes.of([(0.0, 0.5, 60), (0.5, 1.0, 64), (1.0, 1.5, 67), (2.1, 2.5, 76)])
TAKE = Notes.of([(0.01, 0.4, 60), (0.5, 1.1, 64), (1.6, 1.9, 70)])


def with_ceiling(notes, ceiling: float):
    """``notes`` whose sketch's own audio the transcriber hears ``ceiling`` of
    (``NotesKept.ceiling``)."""

    class Heard(type(notes)):
        @property
        def ceiling(self) -> float:
            return ceiling

    return Heard(**{f.name: getattr(notes, f.name) for f in dataclasses.fields(notes)})


def cell(seed: int, ceiling: float | None = None, counted: bool = True):
    notes = notes_kept(SKETCH, TAKE, 3.0) if counted else None
    if notes is not None and ceiling is not None:
        notes = with_ceiling(notes, ceiling)
    faith = Faithfulness(
        score=0.91,
        times_s=np.arange(3.0),
        strip=np.full(3, 0.91),
        segment="second",
        duration_s=3.0,
        counted_s=3.0,
        notes=notes,
    )
    return SimpleNamespace(settings=SimpleNamespace(seed=seed), faithfulness=faith)


def row(*cells) -> EngineRow:
    return EngineRow("stable-audio-3", "Stable Audio 3 /m", cells=list(cells), seconds=4.2)


def test_a_row_says_notes_kept_in_percent_with_the_sketchs_own_ceiling():
    line = page.row_line(row(cell(5), cell(6)), best=True, tied=False)
    assert line.startswith("**Stable Audio 3** · notes kept 50% · chroma 0.91 · ")
    assert line.split("  \n")[0].endswith(" · best")
    assert "0.50" not in line
    assert page.seed_text(cell(5)) == "seed 5: notes kept 50%, chroma 0.91"
    with_ceiling = page.row_line(row(cell(5, 0.79), cell(6, 0.79)), best=False, tied=False)
    assert "· notes kept 50% (sketch 79%) · chroma 0.91 ·" in with_ceiling
    heard_whole = page.row_line(row(cell(5, 0.999)), best=False, tied=False)
    assert "(sketch" not in heard_whole
    # basic-pitch missing: the chroma score is not called notes kept.
    uncounted = page.row_line(row(cell(5, counted=False)), best=False, tied=False)
    assert "notes not counted · chroma 0.91" in uncounted
    assert page.seed_text(cell(5, counted=False)) == "seed 5: chroma 0.91"


# --- the page ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_local_folder_engines_are_offered_after_using_each_on_the_model_page(
    tmp_path, monkeypatch, tiny_model_dir, tiny_sa3_dir
):
    from tests.test_app import session, start
    from tests.test_app_ace_step import choose_engine

    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(model_spec.DEFAULT_SOURCES, "stable-audio-3", str(tmp_path / "no-sa3"))
    monkeypatch.setitem(model_spec.SMALL_SOURCES, "stable-audio-3", str(tmp_path / "no-small"))
    at = start()
    choose_engine(at, "stable-audio-3", tiny_sa3_dir)
    choose_engine(at, "riffusion", tiny_model_dir)
    assert session(at).model == ModelSpec(source=str(tiny_model_dir))
    assert session(at).view.engine_sources["stable-audio-3"] == str(tiny_sa3_dir)
    at.switch_page("views/arrange.py").run()
    assert not at.exception
    [engines] = [m for m in at.multiselect if m.label == "Engines"]
    assert engines.options == ["Riffusion", "Stable Audio 3"]
    assert any("Get one on the Model page" in c.value for c in at.caption)  # ACE-Step's
    # A refresh (a new browser session): still both.
    again = start()
    [engines] = [m for m in again.multiselect if m.label == "Engines"]
    assert engines.options == ["Riffusion", "Stable Audio 3"]


@pytest.mark.slow
def test_a_cancelled_comparison_says_so(tmp_path, monkeypatch, tiny_model_dir):
    from tests.test_app import board_job, start

    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    entered = threading.Event()

    def held(*args, cancel, **kwargs):
        entered.set()
        cancel.wait(60)
        raise RenderCancelled("Cancelled.")

    monkeypatch.setattr(page, "compare_engines", held)
    at = start()
    [button] = [b for b in at.button if b.label == "Compare engines"]
    button.click().run()
    job = board_job("compare")
    assert entered.wait(60)
    job.cancel()
    assert job.wait(60) and job.state == "cancelled"
    at.run()
    assert not at.exception
    assert any(i.value.startswith("Comparison cancelled.") for i in at.info), [
        i.value for i in at.info
    ]
