"""The app's process, beside its pages: it stops cleanly, mid-render too (issue 23).

On SIGTERM or Ctrl+C, Streamlit's own signal handler (installed by ``streamlit run``) stops
its server, and the interpreter then exits. The jobs' threads (a render, a preview, the model
loading) are daemon threads, still in their work: on Python 3.11 a daemon thread that comes
back from torch while the interpreter finalizes is ended by ``pthread_exit``, whose unwinding
through torch's C++ frames calls ``std::terminate``. The process aborts ("terminate called
without an active exception", SIGABRT) instead of exiting, and where a crash handler collects
core dumps (systemd-coredump, apport) it then dumps a process holding the model: minutes,
until a ``kill -9``.

So, once the server has stopped and before the interpreter finalizes (an ``atexit`` function:
it runs in the main thread while every other thread still runs), every job is cancelled and
waited for, each stopping at its next step. The takes a render finished are in the library
already; the renders cancelled stay noted on disk (``neurochip.job_board``), so the next start
says they were interrupted. A job that has not stopped after :data:`STOP_WAIT_S` (one step of
the real model on a slow CPU can take longer) is left behind: the process ends at once
(``os._exit``), as a kill would, instead of aborting in the finalization.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from neurochip import job_board, jobs

log = logging.getLogger(__name__)

#: How long a stopping app waits for its jobs to stop (``NEUROCHIP_STOP_WAIT_S``); then it
#: ends without them. Docker's ``docker stop`` kills after 10 s.
STOP_WAIT_S = float(os.environ.get("NEUROCHIP_STOP_WAIT_S") or 5.0)

_registered = False
_register_lock = threading.Lock()


def stop_jobs_at_exit() -> None:
    """Arrange, once per process, that the app's jobs stop before the interpreter exits.

    Cheap and idempotent: the main script calls it on every run. (Streamlit re-imports this
    module if its file changes while the server runs; a second registration then finds
    nothing left to stop.)
    """
    global _registered
    with _register_lock:
        if not _registered:
            atexit.register(stop_jobs, STOP_WAIT_S)
            _registered = True


def stop_jobs(wait_s: float) -> None:
    """Cancel every job of this process and wait up to ``wait_s`` for them to stop; if one
    has not when this process is a Streamlit server that stopped, end the process now."""
    cancelled = job_board.stop_all(0)  # the renders stay noted on disk for the next start
    for job in jobs.under_way():  # any other job too: the model loading, a preview...
        job.cancel()
    left = jobs.wait_under_way(wait_s)
    for entry in cancelled:
        if entry.kind in job_board.KEPT_KINDS:
            _say(f"Stopped {entry.label}: the takes it had finished are on the Takes page.")
    if left and _server_stopped():
        names = ", ".join(job.name or "a job" for job in left)
        _say(f"Not stopped within {wait_s:g} s ({names}): ending without waiting for it.")
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()  # it would run after this function; os._exit skips it
        os._exit(0)


def _server_stopped() -> bool:
    """Whether this process is a Streamlit server that has stopped (``streamlit run``), not
    a test's process (AppTest runs the app's pages without a server, and its stand-in for
    Streamlit's runtime is gone by then): only a server's exit may skip the interpreter's."""
    if "streamlit.runtime" not in sys.modules:
        return False
    from streamlit import runtime

    return runtime.exists() and runtime.get_instance().state == runtime.RuntimeState.STOPPED


def _say(message: str) -> None:
    """To the terminal, beside Streamlit's own "Stopping...", and to the log."""
    log.info(message)
    print(f"  {message}", file=sys.stderr, flush=True)
