from __future__ import annotations

import threading
import time

import pytest

from neurochip.engine import RenderCancelled
from neurochip.errors import NeuroChipError
from neurochip.jobs import CANCELLED, DONE, FAILED, Job


def test_job_runs_in_the_background_and_reports_progress():
    gate = threading.Event()

    def work(progress, cancel):
        progress(0.5, "halfway")
        gate.wait(5)
        return 42

    job = Job(work, name="demo").start()
    deadline = time.monotonic() + 5
    while job.snapshot()["stage"] != "halfway" and time.monotonic() < deadline:
        time.sleep(0.01)
    snap = job.snapshot()
    assert snap["state"] == "running" and snap["fraction"] == 0.5 and not job.finished
    gate.set()
    assert job.wait(5) and job.state == DONE and job.result == 42 and job.fraction == 1.0


def test_eta_extrapolates_from_progress():
    def work(progress, cancel):
        progress(0.25, "step")
        time.sleep(0.2)
        progress(0.5, "step")
        cancel.wait(5)
        raise RenderCancelled("stop")

    job = Job(work).start()
    time.sleep(0.35)
    eta = job.eta_s()
    assert eta is not None and 0.1 < eta < 2.0
    job.cancel()
    job.wait(5)
    assert job.state == CANCELLED


def test_cancel_before_the_debounce_delay_never_starts_the_work():
    started = []
    job = Job(lambda p, c: started.append(1), delay_s=0.3).start()
    job.cancel()
    assert job.wait(5) and job.state == CANCELLED and not started


def test_errors_are_kept_as_messages():
    def bad(progress, cancel):
        raise NeuroChipError("The clip is too short.")

    def broken(progress, cancel):
        raise ZeroDivisionError("oops")

    job = Job(bad).start()
    job.wait(5)
    assert job.state == FAILED and job.error == "The clip is too short."
    job = Job(broken).start()
    job.wait(5)
    assert job.state == FAILED and "ZeroDivisionError" in job.error


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_results_survive_the_caller(delay):
    """The work finishes even when nobody polls it (e.g. the browser tab was closed)."""
    done = threading.Event()
    job = Job(lambda p, c: done.set() or "saved", delay_s=delay).start()
    del job
    assert done.wait(5)
