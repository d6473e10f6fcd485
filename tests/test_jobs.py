from __future__ import annotations

import logging
import threading

import pytest

from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    FAST_POLL_S,
    RUNNING,
    SLOW_POLL_S,
    Job,
    poll_interval,
)

# Only a guard against a hung test: every wait below ends on an event long before this.
HANG_S = 30


class FakeClock:
    """A clock that only moves when the test moves it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_job_runs_in_the_background_and_reports_progress():
    halfway, gate = threading.Event(), threading.Event()

    def work(progress, cancel):
        progress(0.5, "halfway")
        halfway.set()
        assert gate.wait(HANG_S)
        return 42

    job = Job(work, name="demo").start()
    assert halfway.wait(HANG_S)
    snap = job.snapshot()
    assert snap["state"] == RUNNING and snap["stage"] == "halfway" and snap["fraction"] == 0.5
    assert snap["name"] == "demo" and not job.finished and job.result is None
    gate.set()
    assert job.wait(HANG_S)
    assert job.state == DONE and job.result == 42 and job.fraction == 1.0


def test_eta_extrapolates_from_progress():
    clock = FakeClock(100.0)
    steps = [threading.Event() for _ in range(3)]
    go = [threading.Event() for _ in range(2)]

    def work(progress, cancel):
        progress(0.01, "warming up")
        steps[0].set()
        assert go[0].wait(HANG_S)
        progress(0.25, "step")
        steps[1].set()
        assert go[1].wait(HANG_S)
        progress(0.5, "step")
        steps[2].set()
        assert cancel.wait(HANG_S)
        raise RenderCancelled("stop")

    job = Job(work, clock=clock)
    assert job.eta_s() is None and job.elapsed_s() == 0.0  # not started
    job.start()

    assert steps[0].wait(HANG_S)
    clock.now = 101.0
    assert job.eta_s() is None  # 1 % done is no basis for a guess
    go[0].set()

    assert steps[1].wait(HANG_S)
    clock.now = 110.0
    assert job.elapsed_s() == pytest.approx(10.0)
    assert job.eta_s() == pytest.approx(30.0)  # a quarter took 10 s: three more quarters
    go[1].set()

    assert steps[2].wait(HANG_S)
    clock.now = 140.0
    assert job.snapshot()["eta_s"] == pytest.approx(40.0)  # half took 40 s

    job.cancel()
    assert job.wait(HANG_S)
    assert job.state == CANCELLED and job.eta_s() is None


def test_before_progress_gives_a_basis_the_eta_is_what_is_left_of_the_expected_time():
    clock = FakeClock(100.0)
    started = threading.Event()

    def work(progress, cancel):
        progress(0.0, "reading the sketch")
        started.set()
        assert cancel.wait(HANG_S)
        raise RenderCancelled("stop")

    job = Job(work, clock=clock)
    job.expected_s = 60.0
    assert job.eta_s() is None  # not started: nothing is left of anything yet
    job.start()
    assert started.wait(HANG_S)
    clock.now = 110.0
    assert job.eta_s() == pytest.approx(50.0)  # 10 s of the expected minute gone
    clock.now = 200.0
    assert job.eta_s() == 0.0  # longer than expected: not a negative time
    job.cancel()
    assert job.wait(HANG_S)


def test_elapsed_time_stops_when_the_job_finishes():
    clock = FakeClock(0.0)  # a clock may well read 0 at the finish
    job = Job(lambda p, c: "done", clock=clock).start()
    assert job.wait(HANG_S) and job.state == DONE
    clock.now = 50.0
    assert job.elapsed_s() == 0.0


def test_cancel_before_the_debounce_delay_never_starts_the_work():
    started = threading.Event()
    # The delay is far longer than the test: only the cancel can end it.
    job = Job(lambda p, c: started.set(), delay_s=10 * HANG_S).start()
    job.cancel()
    assert job.wait(HANG_S)
    assert job.state == CANCELLED and job.stage == "superseded" and not started.is_set()


def test_errors_are_kept_as_messages():
    def bad(progress, cancel):
        raise NeuroChipError("The clip is too short.")

    def broken(progress, cancel):
        raise ZeroDivisionError("oops")

    job = Job(bad).start()
    assert job.wait(HANG_S)
    assert job.state == FAILED and job.error == "The clip is too short."
    job = Job(broken).start()
    assert job.wait(HANG_S)
    assert job.state == FAILED and job.error == "Unexpected error: ZeroDivisionError: oops"


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (NeuroChipError("The clip is too short."), logging.WARNING),
        (ZeroDivisionError("oops"), logging.ERROR),
    ],
    ids=["user-error", "unexpected"],
)
def test_failures_log_their_traceback_and_show_one_line(caplog, error, level):
    def work(progress, cancel):
        raise error

    caplog.set_level(logging.WARNING, logger="neurochip.jobs")
    job = Job(work, name="render").start()
    assert job.wait(HANG_S) and job.state == FAILED
    assert "\n" not in job.error and "Traceback" not in job.error and str(error) in job.error
    [record] = [r for r in caplog.records if r.name == "neurochip.jobs"]
    assert record.levelno == level and "'render'" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is error
    assert "Traceback" in caplog.text and "in work" in caplog.text  # where it came from


def test_cancelled_work_is_not_logged_as_a_failure(caplog):
    def work(progress, cancel):
        assert cancel.wait(HANG_S)
        raise RenderCancelled("stop")

    caplog.set_level(logging.DEBUG, logger="neurochip.jobs")
    job = Job(work).start()
    job.cancel()
    assert job.wait(HANG_S)
    assert job.state == CANCELLED and job.error is None
    assert not [r for r in caplog.records if r.name == "neurochip.jobs"]


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_results_survive_the_caller(delay):
    """A job finished while nobody watched (the tab was closed) still holds its result."""
    registry: dict[str, Job[str]] = {}  # outlives the page, as a per-process job list does
    gate = threading.Event()

    def page_that_starts_a_render_and_is_closed():
        def work(progress, cancel):
            assert gate.wait(HANG_S)
            return "saved"

        registry["render"] = Job(work, delay_s=delay, name="render").start()

    page_that_starts_a_render_and_is_closed()
    gate.set()  # the work finishes with nobody polling it

    job = registry["render"]  # a later page looks it up
    assert job.wait(HANG_S)
    assert job.state == DONE and job.result == "saved" and job.snapshot()["fraction"] == 1.0


# --- polling: a change counter and back-off for UIs --------------------------------------------


@pytest.mark.parametrize(
    ("quiet_s", "interval"),
    [(0.0, 0.5), (1.9, 0.5), (2.0, 1.0), (3.9, 1.0), (4.0, 2.0), (600.0, 2.0)],
)
def test_poll_interval_backs_off_while_nothing_changes(quiet_s, interval):
    assert poll_interval(quiet_s) == interval
    assert FAST_POLL_S <= poll_interval(quiet_s) <= SLOW_POLL_S


def test_version_counts_changes_and_quiet_time_drives_the_back_off():
    clock = FakeClock(0.0)
    reported, go, done = threading.Event(), threading.Event(), threading.Event()
    again = threading.Event()

    def work(progress, cancel):
        progress(0.25, "step 1")
        progress(0.25, "step 1")  # the same again: nothing new to draw
        reported.set()
        assert go.wait(HANG_S)
        progress(0.5, "step 2")
        again.set()
        assert done.wait(HANG_S)
        return "ok"

    job = Job(work, clock=clock)
    assert job.version == 0 and job.poll_interval() == FAST_POLL_S
    job.start()
    assert reported.wait(HANG_S)
    seen = job.snapshot()["version"]
    assert seen == 2  # running, then step 1 once
    clock.now = 3.0
    assert job.quiet_s() == 3.0 and job.poll_interval() == 1.0
    clock.now = 10.0
    assert job.poll_interval() == SLOW_POLL_S  # queued or stuck: look every 2 s
    go.set()
    assert again.wait(HANG_S)
    assert job.version == seen + 1 and job.quiet_s() == 0.0
    assert job.poll_interval() == FAST_POLL_S  # it moves again: look often
    done.set()
    assert job.wait(HANG_S) and job.state == DONE
    assert job.version == seen + 2  # finishing is a change too
    clock.now = 100.0
    assert job.quiet_s() == 0.0 and job.poll_interval() == FAST_POLL_S


def test_done_callbacks_run_once_the_job_finishes_and_at_once_after():
    gate, seen = threading.Event(), []
    job = Job(lambda p, c: gate.wait(HANG_S) and "take", name="preview").start()
    job.add_done_callback(lambda j: seen.append(("early", j.state, j.result)))
    assert seen == []  # still running: nothing yet
    gate.set()
    assert job.wait(HANG_S)
    assert seen == [("early", DONE, "take")]
    job.add_done_callback(lambda j: seen.append(("late", j.state, j.result)))
    assert seen[-1] == ("late", DONE, "take")  # already finished: called at once


def test_done_callbacks_hear_of_cancels_and_failures_and_their_errors_are_logged(caplog):
    seen = []
    job = Job(lambda p, c: None, delay_s=10 * HANG_S, name="preview")
    job.add_done_callback(lambda j: seen.append(j.state))
    job.add_done_callback(lambda j: 1 / 0)  # a broken callback stops neither job nor others
    job.add_done_callback(lambda j: seen.append("after the broken one"))
    job.start().cancel()
    assert job.wait(HANG_S)
    assert seen == [CANCELLED, "after the broken one"]
    assert "A callback of job 'preview' failed" in caplog.text


# --- JobQueue: a fixed number of workers, a bounded wait ---------------------------------------


def held_work(started: threading.Event, release: threading.Event, seen: list[str]):
    def work(progress, cancel):
        started.set()
        for _ in range(HANG_S * 100):  # until released, or cancelled (as the engine checks)
            if cancel.is_set():
                raise RenderCancelled("cancelled")
            if release.wait(0.01):
                break
        seen.append(threading.current_thread().name)
        return "made"

    return work


def test_a_job_queue_runs_one_job_at_a_time_and_refuses_past_its_depth():
    from neurochip.jobs import JobQueue, QueueFull

    queue = JobQueue(workers=1, depth=1, name="renders")
    started, release, seen = threading.Event(), threading.Event(), []
    first = queue.submit(Job(held_work(started, release, seen), name="first"))
    assert started.wait(HANG_S) and first.state == RUNNING
    second = queue.submit(Job(held_work(threading.Event(), release, seen), name="second"))
    assert second.stage == "queued (1 ahead)"  # it says what it waits for
    with pytest.raises(QueueFull, match="try again") as full:
        queue.submit(Job(lambda progress, cancel: None))
    assert full.value.retry_after_s >= 1
    assert queue.counts() == {"running": 1, "waiting": 1}

    release.set()
    assert first.wait(HANG_S) and second.wait(HANG_S)
    assert (first.result, second.result) == ("made", "made")
    assert set(seen) == {"neurochip-renders-0"}  # the queue's one worker ran both
    assert queue.close(HANG_S)


def test_a_waiting_job_cancelled_ends_at_once_and_close_cancels_the_rest():
    from neurochip.jobs import JobQueue

    queue = JobQueue(workers=1, depth=2)
    started, release, seen = threading.Event(), threading.Event(), []
    running = queue.submit(Job(held_work(started, release, seen)))
    assert started.wait(HANG_S)
    waiting = queue.submit(Job(held_work(threading.Event(), release, seen)))
    never = queue.submit(Job(held_work(threading.Event(), release, seen)))
    queue.cancel(waiting)
    assert waiting.state == CANCELLED and waiting.wait(0)  # without waiting for the worker
    assert queue.counts() == {"running": 1, "waiting": 1}

    assert queue.close(HANG_S)  # cancels the running job and the one still waiting
    assert running.state == CANCELLED and never.state == CANCELLED and seen == []
    with pytest.raises(NeuroChipError, match="stopping"):
        queue.submit(Job(lambda progress, cancel: None))
