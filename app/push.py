"""Server push: a job that finishes reruns the page that watches it, at once.

Streamlit pages learn of background work by polling (a fragment with ``run_every``), so a
finished preview waited for the page's next poll: up to half a second, on top of the render,
in the loop a composer lives in. Streamlit has no public way for a thread to rerun a session,
so this uses what its own "rerun on save" uses (``AppSession.request_rerun`` with the
session's last client state: same page, same query string, no widget changes), on the
server's event loop. Polling stays as the fallback: if Streamlit's internals change, or under
``AppTest`` (no server), pages behave exactly as before, only slower to notice. The private
names used are checked against the installed Streamlit by ``tests/test_push.py``.

A rerun is only pushed while the session is idle. A page run already under way is not
interrupted: it may be the composer's own change, whose widget values must not be replaced by
older ones. The push waits for it to end, then reruns (that run may already have drawn the
result; a second run then draws the same page again, which costs ~50 ms and no model work).
"""

from __future__ import annotations

import logging
from typing import Any

from neurochip.jobs import Job

log = logging.getLogger(__name__)

#: How often, and how many times, a push looks again while a page run is under way.
RETRY_S, RETRIES = 0.03, 100


def rerun_when_finished(job: Job) -> bool:
    """Rerun this page's session as soon as ``job`` finishes; False where that cannot be done
    (no Streamlit server, as under AppTest: the page's polling fragment notices instead)."""
    try:
        from streamlit.runtime import Runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx(suppress_warning=True)
        if ctx is None or not Runtime.exists():
            return False
        manager = Runtime.instance()._session_mgr
        session_id = ctx.session_id
    except (ImportError, AttributeError, RuntimeError):
        log.debug("No server push in this Streamlit: pages poll", exc_info=True)
        return False

    def finished(_job: Job) -> None:
        info = manager.get_active_session_info(session_id)
        if info is not None:  # None: the tab was closed meanwhile
            info.session._call_soon_on_event_loop(lambda: _rerun_when_idle(info.session))

    job.add_done_callback(finished)
    return True


def _rerun_when_idle(session: Any, retries: int = RETRIES) -> None:
    """On the server's event loop (where Streamlit handles every rerun request)."""
    try:
        if session._scriptrunner is not None:  # a page run is under way: wait for its end
            if retries > 0:
                loop = session._event_loop
                loop.call_later(RETRY_S, _rerun_when_idle, session, retries - 1)
            return
        session.request_rerun(session._client_state)
    except Exception:  # never break the server's loop over a faster refresh
        log.warning("Could not push a rerun; the page's poll will notice", exc_info=True)
