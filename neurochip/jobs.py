"""Long work in a background thread, with progress, time left and cancellation.

A render takes minutes; a UI must stay responsive, show how far it got, and let the user
cancel. :class:`Job` runs any function that accepts ``(progress, cancel)`` (the engine's own
callback and event) in a thread, and exposes its state for polling. It knows nothing of
Streamlit. A job's work should save its own results (e.g. into the take library) so that they
survive the page that started it being closed or refreshed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from neurochip.errors import NeuroChipError

T = TypeVar("T")
Work = Callable[[Callable[[float, str], None], threading.Event], T]

log = logging.getLogger(__name__)

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"

#: Polling back-off for UIs: poll every ``FAST_POLL_S`` while a job changes, slowing down to
#: ``SLOW_POLL_S`` while nothing does (a render queued behind another one for minutes).
#: ``NEUROCHIP_POLL_S`` sets the fast rate (a remote browser on a slow link may want less
#: chatter; the app's pages are also pushed a rerun when a job ends, see app/push.py).
FAST_POLL_S = float(os.environ.get("NEUROCHIP_POLL_S") or 0.5)
SLOW_POLL_S = max(2.0, 4 * FAST_POLL_S)


def poll_interval(quiet_s: float, fast: float = FAST_POLL_S, slow: float = SLOW_POLL_S) -> float:
    """How often to look at a job that has not changed for ``quiet_s`` seconds.

    ``fast`` while it just changed, doubling for every ``4 * fast`` seconds of quiet, up to
    ``slow``: steps of 0.5, 1 and 2 s by default, so a UI that re-arms its timer only when the
    interval changes does so at most a few times per job.
    """
    interval = fast
    while interval < slow and quiet_s >= 4 * interval:
        interval *= 2
    return min(interval, slow)


class Job(Generic[T]):
    """One piece of work on its own thread.

    Args:
        work: ``work(progress, cancel)``; calls ``progress(fraction, stage)`` and stops soon
            after ``cancel`` is set (the engine raises ``RenderCancelled``).
        delay_s: wait this long before starting, and do not start if cancelled meanwhile
            (debouncing: a preview for settings that changed again is never computed).
        name: shown in UIs.
        clock: seconds from an arbitrary start, for :meth:`elapsed_s` and :meth:`eta_s`
            (tests pass a fake one). The debounce delay always waits in real time.
    """

    def __init__(
        self,
        work: Work[T],
        delay_s: float = 0.0,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._work = work
        self.delay_s = delay_s
        self._clock = clock
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"neurochip-job-{name}", daemon=True)
        self.state = PENDING
        self.fraction = 0.0
        self.stage = "waiting"
        self.result: T | None = None
        self.error: str | None = None
        self.exception: BaseException | None = None  # what failed it, for a caller to raise
        self.started_at: float | None = None
        self.finished_at: float | None = None
        #: How long the whole job is expected to take (a caller's estimate, e.g. from the
        #: engine's previews), for an ETA before its progress gives one; None: no guess.
        self.expected_s: float | None = None
        #: Goes up by one on every change a UI could show (state, stage, progress); a poller
        #: that saw this version has nothing new to draw.
        self.version = 0
        self.changed_at = clock()
        self._on_finish: list[Callable[[Job[T]], None]] = []
        self._finished_event = threading.Event()

    def start(self) -> Job[T]:
        self._thread.start()
        return self

    def run(self) -> None:
        """Run the job on the caller's thread (a :class:`JobQueue` worker's) instead of its own.

        A job cancelled before it ran ends cancelled without running its work.
        """
        if self._cancel.is_set():
            self._finish(CANCELLED, stage="cancelled")
            return
        self._run()

    def cancel(self) -> None:
        self._cancel.set()

    def add_done_callback(self, callback: Callable[[Job[T]], None]) -> None:
        """Call ``callback(job)`` once the job has finished (at once if it already has).

        For a UI that would rather be told than keep asking: the app reruns the page that
        started a preview the moment it is ready, instead of at its next poll. The callback
        runs on the job's thread (or the caller's, if finished) and must not block; what it
        raises is logged, never lost in the thread.
        """
        with self._lock:
            if not self.finished:
                self._on_finish.append(callback)
                return
        self._call(callback)

    def _call(self, callback: Callable[[Job[T]], None]) -> None:
        try:
            callback(self)
        except Exception:
            log.exception("A callback of job %r failed", self.name)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self.state in (DONE, FAILED, CANCELLED)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished (or timeout); True if finished."""
        self._finished_event.wait(timeout)
        return self.finished

    def describe_stage(self, stage: str) -> None:
        """Say what a job that has not started waits for ("2 renders ahead")."""
        with self._lock:
            if self.state == PENDING and stage != self.stage:
                self.stage = stage
                self._changed()

    def elapsed_s(self) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at if self.finished_at is not None else self._clock()
        return end - self.started_at

    def eta_s(self) -> float | None:
        """Seconds left, extrapolated from progress so far (before that, what is left of
        :attr:`expected_s`); None until there is a basis."""
        if self.state != RUNNING:
            return None
        if self.fraction < 0.02:
            expected = self.expected_s
            return max(0.0, expected - self.elapsed_s()) if expected is not None else None
        return self.elapsed_s() * (1 - self.fraction) / self.fraction

    def quiet_s(self) -> float:
        """Seconds since the job last changed (0 once it finished: its end is news)."""
        if self.finished:
            return 0.0
        return max(0.0, self._clock() - self.changed_at)

    def poll_interval(self) -> float:
        """How often a UI should look at this job now (see :func:`poll_interval`)."""
        return poll_interval(self.quiet_s())

    def _changed(self) -> None:  # with self._lock held
        self.version += 1
        self.changed_at = self._clock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self.name,
                "version": self.version,
                "state": self.state,
                "fraction": self.fraction,
                "stage": self.stage,
                "elapsed_s": self.elapsed_s(),
                "eta_s": self.eta_s(),
                "error": self.error,
            }

    def _progress(self, fraction: float, stage: str) -> None:
        with self._lock:
            if (fraction, stage) != (self.fraction, self.stage):
                self.fraction, self.stage = fraction, stage
                self._changed()

    def _run(self) -> None:
        with _UNDER_WAY_CHANGED:
            _UNDER_WAY.add(self)
        try:
            self._run_work()
        finally:  # the work and its callbacks are over: a stopping process need not wait
            with _UNDER_WAY_CHANGED:
                _UNDER_WAY.discard(self)
                _UNDER_WAY_CHANGED.notify_all()

    def _run_work(self) -> None:
        if self.delay_s and self._cancel.wait(self.delay_s):
            self._finish(CANCELLED, stage="superseded")
            return
        self.started_at = self._clock()
        with self._lock:
            self.state = RUNNING
            self._changed()
        try:
            result = self._work(self._progress, self._cancel)
        except NeuroChipError as err:
            self.exception = err
            if self._cancel.is_set():
                self._finish(CANCELLED, stage="cancelled")
            else:
                # The UI shows the one-line message; the log keeps where it came from.
                log.warning("Job %r failed: %s", self.name, err, exc_info=True)
                self._finish(FAILED, error=str(err))
        except Exception as err:  # a UI must show it, not lose it in a thread
            self.exception = err
            log.exception("Job %r failed unexpectedly", self.name)
            self._finish(FAILED, error=f"Unexpected error: {type(err).__name__}: {err}")
        else:
            self.result = result
            self._finish(DONE, stage="done", fraction=1.0)

    def _finish(
        self, state: str, stage: str | None = None, error: str | None = None, fraction=None
    ) -> None:
        with self._lock:
            self.state = state
            self.finished_at = self._clock()
            if stage is not None:
                self.stage = stage
            if fraction is not None:
                self.fraction = fraction
            self.error = error
            self._changed()
            callbacks, self._on_finish = self._on_finish, []
        for callback in callbacks:  # outside the lock: a callback may look at the job
            self._call(callback)
        self._finished_event.set()


#: The jobs of this process whose thread is in their work (or its callbacks), for a process
#: that stops: it must not finalize while one is inside native code (see app/lifecycle.py).
_UNDER_WAY: set[Job[Any]] = set()
_UNDER_WAY_CHANGED = threading.Condition()


def under_way() -> list[Job[Any]]:
    """Every job of this process that is running its work (or waiting out its delay)."""
    with _UNDER_WAY_CHANGED:
        return list(_UNDER_WAY)


def wait_under_way(timeout_s: float) -> list[Job[Any]]:
    """Wait up to ``timeout_s`` until no job of this process is running its work (callbacks
    included); returns those still under way (none: every thread is out of its work)."""
    deadline = time.monotonic() + timeout_s
    with _UNDER_WAY_CHANGED:
        while _UNDER_WAY and (left := deadline - time.monotonic()) > 0:
            _UNDER_WAY_CHANGED.wait(left)
        return list(_UNDER_WAY)


class QueueFull(NeuroChipError):
    """A :class:`JobQueue` holds as many jobs as it may: try again later."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobQueue:
    """Jobs run by a fixed number of worker threads, at most ``depth`` waiting.

    A server must never start a thread (and hold a song in memory) per request: what waits
    here is a :class:`Job` that has not loaded anything yet, and a full queue says so at once
    (:class:`QueueFull`) instead of piling work up.

    Args:
        workers: How many jobs run at once.
        depth: How many may wait beyond those.
        name: Said in the full queue's message ("renders").
    """

    def __init__(self, workers: int = 1, depth: int = 8, name: str = "jobs") -> None:
        if workers < 1 or depth < 0:
            raise NeuroChipError("A job queue needs 1 or more workers and a depth of 0 or more.")
        self.name = name
        self.depth = depth
        self._waiting: deque[Job[Any]] = deque()
        self._running: set[Job[Any]] = set()
        self._lock = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"neurochip-{name}-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job[T]) -> Job[T]:
        """Queue ``job``; raises :class:`QueueFull` (with a time to retry) when full."""
        with self._lock:
            if self._closed:
                raise NeuroChipError("The server is stopping: send it again once it is back.")
            if len(self._waiting) >= self.depth:
                raise QueueFull(
                    f"{len(self._waiting) + len(self._running)} {self.name} are already queued "
                    "or running: try again in a little while.",
                    self._retry_after_s(),
                )
            self._waiting.append(job)
            self._say_positions()
            self._lock.notify()
        return job

    def cancel(self, job: Job[Any]) -> None:
        """Cancel ``job``; one still waiting leaves the queue and ends cancelled at once."""
        job.cancel()
        with self._lock:
            if job not in self._waiting:
                return
            self._waiting.remove(job)
            self._say_positions()
        job.run()  # it is cancelled: this only marks it so, with its callbacks

    def counts(self) -> dict[str, int]:
        """How many jobs run and how many wait, for a health check."""
        with self._lock:
            return {"running": len(self._running), "waiting": len(self._waiting)}

    def jobs(self) -> list[Job[Any]]:
        """Those running, then those waiting in order."""
        with self._lock:
            return [*self._running, *self._waiting]

    def close(self, wait_s: float = 5.0) -> bool:
        """Cancel everything, waiting or running, and wait up to ``wait_s`` for the workers.

        Returns whether every worker ended in time (a running job stops at its next step).
        """
        with self._lock:
            self._closed = True
            waiting, self._waiting = list(self._waiting), deque()
            running = list(self._running)
            self._lock.notify_all()
        for job in running:
            job.cancel()
        for job in waiting:
            job.cancel()
            job.run()
        deadline = time.monotonic() + wait_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self._running.add(job)
                self._say_positions()
            try:
                job.run()
            finally:
                with self._lock:
                    self._running.discard(job)
                release_memory()

    def _say_positions(self) -> None:  # with self._lock held
        busy = len(self._running) >= len(self._threads)
        for ahead, job in enumerate(self._waiting):
            ahead += busy
            job.describe_stage(f"queued ({ahead} ahead)" if ahead else "queued")

    def _retry_after_s(self) -> float:  # with self._lock held
        left = [job.eta_s() for job in self._running]
        known = [s for s in left if s is not None]
        return max(1.0, min(known)) if known else 10.0


def release_memory() -> None:
    """Give freed memory back to the system after a big job (glibc keeps it otherwise, and a
    server's memory would creep up render by render). Nothing to do elsewhere."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()
