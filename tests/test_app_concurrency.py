"""Two people rendering in the app at once (issue 9): both finish, both pages show their takes.

Speed targets (each of two renders ends within about the sum of the lone times) live in
bench/app_sessions.py; these tests check what must always hold, without timing anything.
"""

from __future__ import annotations

import gc

import pytest

from app import ui
from neurochip.workspace import Workspace
from tests.test_app import TIMEOUT, fast, start


@pytest.fixture
def app_env(tmp_path, monkeypatch, tiny_model_dir):
    """As tests/test_app.py's: the tiny model, and one take library for every session."""
    monkeypatch.setenv("NEUROCHIP_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path / "home"))
    return tmp_path


def click_render(at) -> None:
    [render] = [b for b in at.button if b.label == "Render"]
    render.click().run()


def test_a_render_started_in_one_tab_shows_in_every_tab_of_the_workspace(app_env):
    """Jobs belong to the workspace (issue 23): a second tab, a refresh or a page trip finds
    the render running, with its progress, and cannot start a second one over it; when it
    ends, every tab shows its takes."""
    first, second = start(), start()  # two browser sessions, one server, one workspace
    for at in (first, second):
        fast(at)
        at.run()
    click_render(first)
    job = ui.board_for(Workspace().root).job("render")
    assert job is not None
    second.run()  # the other tab's next run
    [render] = [b for b in second.button if b.label == "Render"]
    if not job.finished:  # (a fast machine may have finished it already)
        assert render.disabled  # one render at a time per workspace: it shows this one
    assert job.wait(TIMEOUT) and job.state == "done", job.error
    for at in (first, second):
        at.run()  # the page's next run, as the polling fragment asks for
        assert not at.exception
        assert any("Rendered in" in s.value for s in at.success)
        assert len(at.get("download_button")) == 3  # pair, A, B
        assert at.session_state["render_drawn"] is job
        assert not any("Rendering" in str(p.proto) for p in at.get("progress"))
    assert {t.id for t in ui.library().list()} == set(job.result.values())


def test_the_loaded_model_is_hidden_from_the_collector(app_env):
    """Streamlit collects garbage (generation 2) after every page run, polling ones included:
    with the model's objects in view that took 0.4-0.6 s of the GIL each time and starved the
    renders. Once loaded, the engine is frozen out of the collector's sight."""
    at = start()
    assert not at.exception
    job = ui._engine_job(at.session_state["composer"].model)
    assert job.wait(60) and job.result is not None, job.error
    engine = job.result
    tracked = {id(o) for o in gc.get_objects()}  # every generation, not the frozen objects
    assert id(engine) not in tracked
    assert id(next(engine.model.unet.parameters())) not in tracked


class Rerun(Exception):
    pass


@pytest.fixture
def page_state(monkeypatch):
    """ui's Streamlit calls against a plain dict, st.rerun raising Rerun."""
    state: dict = {}
    monkeypatch.setattr(ui.st, "session_state", state)

    def rerun(*args, **kwargs):
        raise Rerun

    monkeypatch.setattr(ui.st, "rerun", rerun)
    monkeypatch.setattr(ui, "show_job_progress", lambda job, label: None)
    return state


def test_a_finished_job_asks_for_the_page_until_the_page_drew_it(page_state):
    """The polling fragment of a finished job asks for a full page run on every tick until the
    page's full run has drawn the results: one lost request no longer strands the page on
    'Rendering: waiting'."""
    from neurochip.jobs import Job

    job = Job(lambda progress, cancel: {"A": "x"}).start()
    assert job.wait(TIMEOUT)
    ui.board().start("render", job, "the render", start=False)
    for _ in range(3):  # ticks whose full-run requests were lost
        with pytest.raises(Rerun):
            ui.watch_job("render", "Rendering")
    assert ui.poll_every("render", job) is None  # the full run: draws it, stops polling
    assert ui.watch_job("render", "Rendering") is None  # nothing more to ask


def test_a_quiet_job_rearms_its_poll_at_the_slow_rate_once(page_state):
    import threading

    from neurochip.jobs import FAST_POLL_S, SLOW_POLL_S, Job

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock, gate, started = Clock(), threading.Event(), threading.Event()

    def work(progress, cancel):
        started.set()
        assert gate.wait(TIMEOUT)

    job = Job(work, clock=clock).start()
    assert started.wait(TIMEOUT)
    ui.board().start("render", job, "the render", start=False)
    assert ui.poll_every("render", job) == FAST_POLL_S  # the full run arms the timer
    assert ui.watch_job("render", "Rendering") is job  # a tick: progress only
    clock.now = 10.0  # nothing changed for 10 s (queued behind another render)
    with pytest.raises(Rerun):
        ui.watch_job("render", "Rendering")  # re-arm, slower
    assert ui.poll_every("render", job) == SLOW_POLL_S
    assert ui.watch_job("render", "Rendering") is job  # and no more full runs for it
    gate.set()
    assert job.wait(TIMEOUT)
