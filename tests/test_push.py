"""app/push.py: a finished job reruns its page, but never over a page run under way.

The real thing (Streamlit's server and a browser) is tested in
``tests/test_browser.py::test_finished_work_reaches_the_page_without_waiting_for_a_poll``;
here the rules, on stand-ins for Streamlit's session and its event loop.
"""

from __future__ import annotations

from app import push
from neurochip.jobs import Job


class FakeLoop:
    """Keeps what is scheduled on it; the test runs it step by step (no real time passes)."""

    def __init__(self) -> None:
        self.later: list[tuple[float, object, tuple]] = []

    def call_later(self, delay: float, callback, *args) -> None:
        self.later.append((delay, callback, args))

    def run_scheduled(self) -> int:
        """Run everything scheduled until nothing is; how many were run."""
        count = 0
        while self.later:
            _, callback, args = self.later.pop(0)
            callback(*args)
            count += 1
        return count


class FakeSession:
    """What push uses of Streamlit's AppSession: its event loop, its runner, request_rerun."""

    def __init__(self, busy_looks: int) -> None:
        self._event_loop = FakeLoop()
        self._client_state = object()  # the page and query string of the last run
        self.busy_looks = busy_looks
        self.reruns: list[object] = []

    @property
    def _scriptrunner(self):
        # A page run is under way for the first ``busy_looks`` looks, then the page is idle.
        if self.busy_looks:
            self.busy_looks -= 1
            return object()
        return None

    def request_rerun(self, client_state) -> None:
        self.reruns.append(client_state)


def test_an_idle_page_is_rerun_at_once_with_its_own_page_and_query():
    session = FakeSession(busy_looks=0)
    push._rerun_when_idle(session)
    assert session.reruns == [session._client_state]
    assert session._event_loop.later == []


def test_a_page_run_under_way_is_never_interrupted_the_push_waits_for_its_end():
    session = FakeSession(busy_looks=3)
    push._rerun_when_idle(session)
    assert session.reruns == []  # not over the run under way
    assert session._event_loop.later[0][0] == push.RETRY_S
    assert session._event_loop.run_scheduled() == 3
    assert session.reruns == [session._client_state]  # once it ended


def test_a_page_busy_for_longer_than_the_retries_is_left_to_its_poll():
    session = FakeSession(busy_looks=10)
    push._rerun_when_idle(session, retries=2)
    assert session._event_loop.run_scheduled() == 2
    assert session.reruns == [] and session.busy_looks == 10 - 3


def test_a_broken_session_never_breaks_the_servers_loop(caplog):
    class Broken(FakeSession):
        def request_rerun(self, client_state) -> None:
            raise RuntimeError("Streamlit changed")

    push._rerun_when_idle(Broken(busy_looks=0))
    assert "Could not push a rerun" in caplog.text


def test_without_a_streamlit_server_the_page_polls():
    job = Job(lambda progress, cancel: None)
    assert push.rerun_when_finished(job) is False  # no script run context here


def test_the_streamlit_internals_push_uses_are_there():
    """push.py uses Streamlit internals (no public API reruns a session from another thread):
    an upgrade that renames them must fail here, not quietly turn every push into polling."""
    import inspect

    from streamlit.runtime import Runtime
    from streamlit.runtime.app_session import AppSession
    from streamlit.runtime.session_manager import SessionManager

    made = inspect.getsource(AppSession.__init__)
    for name in ("_scriptrunner", "_client_state", "_event_loop"):
        assert f"self.{name}" in made, name
    assert callable(AppSession._call_soon_on_event_loop) and callable(AppSession.request_rerun)
    assert "self._session_mgr" in inspect.getsource(Runtime.__init__)
    assert callable(SessionManager.get_active_session_info)
