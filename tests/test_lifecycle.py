"""A stopping app process stops its jobs first (app/lifecycle.py; issue 23).

The end-to-end case (the real server, SIGTERM and Ctrl+C mid-render) is tests/test_app_stop.py;
here the parts, fast: the jobs a process has under way, the function that runs at exit, and a
real process that exits while a job's thread is inside torch.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from app import lifecycle
from neurochip.errors import RenderCancelled
from neurochip.job_board import JobBoard, board_for
from neurochip.jobs import Job, under_way, wait_under_way

ROOT = Path(__file__).resolve().parents[1]
HANG_S = 30


def held(started: threading.Event, stubborn: threading.Event | None = None):
    """Work that waits until cancelled (or, while ``stubborn`` is not set, even then)."""

    def work(progress, cancel):
        progress(0.5, "denoising")
        started.set()
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            if cancel.is_set() and (stubborn is None or stubborn.is_set()):
                raise RenderCancelled("cancelled")
            time.sleep(0.01)
        raise AssertionError("never cancelled")

    return work


def test_the_jobs_under_way_are_those_in_their_work(tmp_path):
    started = threading.Event()
    job = Job(held(started), name="render")
    assert job not in under_way()
    job.start()
    assert started.wait(HANG_S)
    assert job in under_way()
    assert job in wait_under_way(0.05)  # not cancelled: still at it
    job.cancel()
    assert job not in wait_under_way(HANG_S)
    assert job.state == "cancelled"


def test_a_debounced_job_is_under_way_while_it_waits_and_leaves_when_cancelled():
    job = Job(lambda progress, cancel: None, delay_s=HANG_S, name="preview").start()
    assert job in under_way()
    job.cancel()
    assert job not in wait_under_way(HANG_S)
    assert job.stage == "superseded"


def test_at_exit_every_job_is_cancelled_and_the_render_is_said_at_the_next_start(tmp_path, capsys):
    render_started, other_started = threading.Event(), threading.Event()
    board = board_for(tmp_path / "workspace")
    render = board.start("render", Job(held(render_started), name="render"), "the render of a.mid")
    loading = Job(held(other_started), name="model").start()  # on no board: the model loading
    assert render_started.wait(HANG_S) and other_started.wait(HANG_S)

    lifecycle.stop_jobs(HANG_S)

    assert render.state == loading.state == "cancelled"
    assert render not in under_way() and loading not in under_way()
    assert "Stopped the render of a.mid" in capsys.readouterr().err
    notes = JobBoard(tmp_path / "workspace").interrupted()  # the next start's board
    assert [note["label"] for note in notes] == ["the render of a.mid"]


def test_a_job_that_will_not_stop_ends_a_stopped_server_at_once(monkeypatch, capsys):
    started, stubborn = threading.Event(), threading.Event()
    job = Job(held(started, stubborn), name="render").start()
    assert started.wait(HANG_S)
    exits: list[int] = []

    class Exited(Exception):
        pass

    def exit_now(status: int) -> None:
        exits.append(status)
        raise Exited

    monkeypatch.setattr(lifecycle.os, "_exit", exit_now)
    monkeypatch.setattr(lifecycle.logging, "shutdown", lambda: None)
    try:
        # Not a Streamlit server (a test's process): it waits, and leaves the rest to Python.
        lifecycle.stop_jobs(0.05)
        assert exits == []
        # A server that stopped: it ends at once rather than abort in the finalization.
        monkeypatch.setattr(lifecycle, "_server_stopped", lambda: True)
        with pytest.raises(Exited):
            lifecycle.stop_jobs(0.05)
        assert exits == [0]
        assert "Not stopped within 0.05 s (render" in capsys.readouterr().err
    finally:
        stubborn.set()
        assert job not in wait_under_way(HANG_S)


def test_only_a_stopped_streamlit_server_counts_as_one():
    assert not lifecycle._server_stopped()  # pytest's process: no Streamlit runtime


def test_it_is_registered_once_however_often_the_page_runs(monkeypatch):
    registered = []
    monkeypatch.setattr(lifecycle, "_registered", False)
    monkeypatch.setattr(lifecycle.atexit, "register", lambda *args: registered.append(args))
    for _ in range(3):
        lifecycle.stop_jobs_at_exit()
    assert registered == [(lifecycle.stop_jobs, lifecycle.STOP_WAIT_S)]


#: A process that exits while a job's thread is inside torch (which releases the GIL), as
#: Streamlit's does once its server stopped. Without the function at exit, Python 3.11 ends
#: that daemon thread as it comes back from torch mid-finalization, and the unwinding through
#: torch's C++ frames aborts the process: "terminate called without an active exception".
EXIT_MID_TORCH = textwrap.dedent(
    """
    import sys, threading
    import torch
    from neurochip.jobs import Job
    from app import lifecycle

    started = threading.Event()

    def work(progress, cancel):
        x = torch.randn(1, 256, 256)
        while not cancel.is_set():
            started.set()
            x = torch.nn.functional.scaled_dot_product_attention(x, x, x)

    Job(work, name="render").start()
    assert started.wait(30)
    if sys.argv[1] == "stop":
        lifecycle.stop_jobs_at_exit()
    sys.exit(0)
    """
)


def test_a_process_that_exits_mid_torch_stops_its_job_and_exits_cleanly():
    done = subprocess.run(
        [sys.executable, "-c", EXIT_MID_TORCH, "stop"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "terminate called" not in done.stderr
