"""The job board: a workspace's jobs, found by any page session, and renders a stop cut short
said at the next start."""

from __future__ import annotations

import threading

from neurochip.errors import RenderCancelled
from neurochip.job_board import JobBoard, board_for, stop_all
from neurochip.jobs import Job

HANG_S = 30


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def held(started: threading.Event, release: threading.Event, at: float = 0.0):
    """Work that reports ``at`` of its progress, then waits to be released or cancelled."""

    def work(progress, cancel):
        progress(at, "denoising")
        started.set()
        for _ in range(HANG_S * 100):
            if cancel.is_set():
                raise RenderCancelled("cancelled")
            if release.wait(0.01):
                return {"A": "take-id"}
        raise AssertionError("never released")

    return work


def test_every_page_of_a_workspace_finds_its_jobs(tmp_path):
    started, release = threading.Event(), threading.Event()
    board = board_for(tmp_path / "workspace")
    job = board.start(
        "render", Job(held(started, release)), "the render of minuet.wav", span=[0, 5]
    )
    assert started.wait(HANG_S)
    # A refresh, another tab, another page: a new page session asks the same board.
    again = board_for(str(tmp_path / "workspace" / ".." / "workspace"))
    assert again is board and again.job("render") is job
    assert again.get("render").info == {"span": [0, 5]}
    assert [e.kind for e in again.running()] == ["render"]
    assert board_for(tmp_path / "other").job("render") is None  # another workspace: its own
    release.set()
    assert job.wait(HANG_S) and job.result == {"A": "take-id"}
    assert again.running() == []


def test_a_waiting_preview_says_what_it_waits_for(tmp_path):
    board = JobBoard(tmp_path)
    clock = FakeClock()
    started, release = threading.Event(), threading.Event()
    render = Job(held(started, release, at=0.25), clock=clock)
    board.start("render", render, "the render of minuet.wav")
    assert started.wait(HANG_S)
    clock.now = 30.0  # a quarter done in 30 s: 90 s left
    preview = Job(lambda progress, cancel: None)  # not started: it waits for the device
    board.start("preview", preview, "the preview", start=False)
    assert board.waits_for(preview) == "the render of minuet.wav (1 min 30 s left)"
    assert board.waits_for(render) is None  # it waits for nothing: it runs
    release.set()
    assert render.wait(HANG_S)
    assert board.waits_for(preview) is None


def test_a_render_cut_short_by_a_stop_is_said_at_the_next_start(tmp_path):
    board = board_for(tmp_path / "stopped")
    started, release = threading.Event(), threading.Event()
    job = board.start("render", Job(held(started, release)), "the render of minuet.wav", seed=42)
    assert started.wait(HANG_S)
    cancelled = stop_all(timeout_s=HANG_S)  # SIGTERM
    assert job in [entry.job for entry in cancelled] and job.state == "cancelled"

    restarted = JobBoard(tmp_path / "stopped")  # the next server process
    [note] = restarted.interrupted()
    assert note["label"] == "the render of minuet.wav" and note["info"] == {"seed": 42}
    assert restarted.interrupted() == []  # said once


def test_a_render_that_finished_leaves_nothing_to_say(tmp_path):
    board = JobBoard(tmp_path)
    started, release = threading.Event(), threading.Event()
    job = board.start("render", Job(held(started, release)), "the render of minuet.wav")
    assert started.wait(HANG_S)
    assert (tmp_path / "jobs.json").is_file()  # under way: noted
    release.set()
    assert job.wait(HANG_S)
    assert JobBoard(tmp_path).interrupted() == []
