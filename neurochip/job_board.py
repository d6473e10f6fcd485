"""The jobs of a workspace, process-wide: whatever a page started, any page finds.

A browser tab is not where a render lives: a refresh, a second tab or a trip to another page
starts a new page session, and a job kept in that session's state was lost to all of them
(the render ran on, invisibly). A :class:`JobBoard` holds the jobs started for one workspace
(one composer's), by kind ("render", "preview", "grid", "load", "reroll"), with what a page
needs to show them; every page session of that workspace looks its jobs up here.

The board also keeps, on disk, the renders under way (``jobs.json`` beside the workspace's
other files): one the server did not live to finish is said at the next start
(:meth:`JobBoard.interrupted`), with what it was, so the composer can start it again.
Nothing here knows a UI.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurochip.io.audio import format_duration
from neurochip.io.write import write_text_atomically
from neurochip.jobs import Job

log = logging.getLogger(__name__)

#: Kinds of job whose interruption is worth saying at the next start.
KEPT_KINDS = ("render", "reroll")


@dataclass
class Entry:
    """One job on the board: what it is and what its page needs to show its result."""

    kind: str
    job: Job[Any]
    label: str  # what it is, for "waiting for the render of minuet.wav"
    info: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


class JobBoard:
    """The jobs started for one workspace (folder ``root``), by kind: the latest of each."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._stopping = False  # cancelled by a stop: their note stays for the next start

    def start(
        self, kind: str, job: Job[Any], label: str, *, start: bool = True, **info: Any
    ) -> Job[Any]:
        """Put ``job`` on the board as the ``kind`` job (in place of the last one) and start
        it (unless ``start`` is False: the caller starts it). ``info``: plain values a page
        needs to draw its result (the span it renders...)."""
        entry = Entry(kind, job, label, dict(info))
        with self._lock:
            self._entries[kind] = entry
        if kind in KEPT_KINDS:
            self._keep_running()
            job.add_done_callback(lambda _: self._keep_running())
        if start:
            job.start()
        return job

    def get(self, kind: str) -> Entry | None:
        with self._lock:
            return self._entries.get(kind)

    def job(self, kind: str) -> Job[Any] | None:
        entry = self.get(kind)
        return entry.job if entry is not None else None

    def running(self) -> list[Entry]:
        """The jobs not finished, oldest first."""
        with self._lock:
            entries = list(self._entries.values())
        return sorted((e for e in entries if not e.job.finished), key=lambda e: e.started)

    def forget(self, kind: str) -> None:
        with self._lock:
            self._entries.pop(kind, None)

    def waits_for(self, job: Job[Any]) -> str | None:
        """What a job that has not started yet waits for, in words ("the render of
        minuet.wav (2:10 left)"); None when it is not waiting on another job here."""
        if job.state != "pending" and job.stage != "waiting":
            return None
        for entry in self.running():
            if entry.job is job or entry.job.state != "running":
                continue
            left = entry.job.eta_s()
            return entry.label + (f" ({format_duration(left)} left)" if left else "")
        return None

    def cancel_all(self) -> list[Entry]:
        """Cancel every job not finished (a server stopping); returns them."""
        self._stopping = True
        running = self.running()
        for entry in running:
            entry.job.cancel()
        return running

    def wait_all(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every job to finish; True if they all did."""
        deadline = time.monotonic() + timeout_s
        for entry in self.running():
            if not entry.job.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    # -- renders the server did not live to finish --------------------------------------------

    @property
    def _running_file(self) -> Path:
        return self.root / "jobs.json"

    def _keep_running(self) -> None:
        """Write down the kept kinds' jobs under way (their labels and info)."""
        if self._stopping:
            return
        with self._lock:
            running = [
                {"kind": e.kind, "label": e.label, "info": e.info, "started": e.started}
                for e in self._entries.values()
                if e.kind in KEPT_KINDS and not e.job.finished
            ]
        try:
            write_text_atomically(self._running_file, json.dumps(running, default=str))
        except Exception:  # the board still works; only the next start's notice is lost
            log.warning("Could not note the jobs under way", exc_info=True)

    def interrupted(self) -> list[dict[str, Any]]:
        """Once, at a server's start: the renders the last server did not finish (what
        :meth:`start` was told of them), oldest first. Then forgotten."""
        with self._lock:
            if self._entries:
                return []  # this server started jobs: the note is its own
        try:
            data = json.loads(self._running_file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return []
        self._running_file.unlink(missing_ok=True)
        entries = data if isinstance(data, list) else []
        return [e for e in entries if isinstance(e, Mapping) and isinstance(e.get("label"), str)]


_BOARDS: dict[Path, JobBoard] = {}
_BOARDS_LOCK = threading.Lock()


def board_for(root: str | Path, make: Callable[[Path], JobBoard] = JobBoard) -> JobBoard:
    """The process's one board for the workspace at ``root``."""
    key = Path(root).expanduser().resolve()
    with _BOARDS_LOCK:
        if key not in _BOARDS:
            _BOARDS[key] = make(key)
        return _BOARDS[key]


def stop_all(timeout_s: float = 5.0) -> list[Entry]:
    """Cancel the jobs of every board (a server stopping) and wait up to ``timeout_s`` for
    them; returns what was cancelled. The takes each job kept stay; the renders cancelled
    stay noted on disk, so the next start says they were interrupted."""
    with _BOARDS_LOCK:
        boards = list(_BOARDS.values())
    cancelled = [entry for board in boards for entry in board.cancel_all()]
    deadline = time.monotonic() + timeout_s
    for board in boards:
        board.wait_all(max(0.0, deadline - time.monotonic()))
    return cancelled
