"""The composer's session as the pages see it: widgets are views of one ComposerSession.

Each browser session reads the session from the workspace once (a refresh or a restart
finds it as it was left) and every change is written back at once. A widget shows a field
of it, and its ``on_change`` writes the change into it; nothing is kept in widget state.

Streamlit drops a widget's state on a run that does not draw it (another page) and rebuilds
the widget from its ``value`` when it is drawn again: that value is the field's, so it is
what the composer left. A widget's key is the field's path (and song, and the bounds its
value must stay in). When the session changes from outside the widgets (*Use this*, a seed
rolled), :func:`redraw` sets each drawn widget's value through the session state, from a
callback: Streamlit's supported way to change a widget, which shows at once. (Changing the
keys instead drew a second copy of each widget for a moment.)

A change goes from the widget to the session and the workspace with no point where Streamlit
may stop the run on the way (:func:`_unstoppable`): stopped half way, a callback is not
called again, and the page went on showing a change that a refresh lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException
from streamlit.runtime.state import get_session_state

from neurochip.model_spec import ModelSpec
from neurochip.session import ComposerSession, SongSetup
from neurochip.workspace import Workspace

#: The workspaces whose session took the server's ``--model`` already (once a process).
STARTED_WITH_MODEL: set = set()


@st.cache_resource(show_spinner=False)
def _workspace(root: str | None) -> Workspace:
    return Workspace(root)


def workspace() -> Workspace:
    """What the app had open: kept on disk, so a refresh or a restart brings it back."""
    return _workspace(os.environ.get("NEUROCHIP_HOME"))


@contextlib.contextmanager
def _unstoppable() -> Iterator[Any]:
    """The session state for a change that must be whole: read, made and written to the
    workspace with no point where Streamlit may stop the run.

    Every read or write through ``st.session_state`` first looks for a newer rerun request,
    and stops the run right there if one came (``runner.fastReruns``: a page link or another
    widget clicked meanwhile), in a widget's callback too. The next run does not call that
    callback again (the widget's value is not new to it any more), so a callback stopped
    between changing the session and writing it lost a change that the page went on
    showing. This is the state behind ``st.session_state``, under its lock (the same reads
    and writes), without that check; where Streamlit has none such, ``st.session_state``.
    """
    safe = get_session_state()
    state, lock = getattr(safe, "_state", None), getattr(safe, "_lock", None)
    if state is None or lock is None:
        yield st.session_state
        return
    with lock:
        yield state


def _entry(state: Any, key: str) -> Any:
    """``state[key]``, or None."""
    try:
        return state[key]
    except KeyError:
        return None


def composer() -> ComposerSession:
    """This browser session's ComposerSession (read from the workspace at its first run)."""
    state = st.session_state
    if "composer" not in state:
        kept = workspace().state()
        session = ComposerSession.from_dict(kept)
        started_with = os.environ.get("NEUROCHIP_MODEL")  # `neurochip app --model`
        if started_with and workspace().root not in STARTED_WITH_MODEL:
            # The command line's model, once a server: the Model page's choices after that
            # stick (a refresh, another tab) until the next start.
            STARTED_WITH_MODEL.add(workspace().root)
            if session.model.source != started_with:
                session.use_model(ModelSpec(source=started_with))
        state["composer"] = session
        state["_saved"] = ComposerSession.from_dict(kept).to_dict()
        save()  # the command line's model, where it replaced the one remembered
    return state["composer"]


def save() -> None:
    """Write the session to the workspace, where it changed since the last write: a change
    made to the session just before is on disk when this returns (:func:`_unstoppable`)."""
    with _unstoppable() as state:
        session = _entry(state, "composer")
        if session is None:
            composer()  # made now, and saved
            return
        data = session.to_dict()
        if data == _entry(state, "_saved"):
            return
        try:
            workspace().keep_state(data)
        except OSError as err:
            st.toast(f"Could not keep the settings for next time: {err}", icon=":material/warning:")
            return
        state["_saved"] = data


def song(key: str | None = None) -> SongSetup:
    """The setup of the open song (or of song ``key``)."""
    session = composer()
    return session.song(key or session.song_key or "")


def get(path: str) -> Any:
    """The value of field ``path`` ("settings.seed", "view.quick_preview", "song.loop")."""
    part, name = path.split(".")
    holder = song() if part == "song" else getattr(composer(), part)
    return getattr(holder, name)


def put(path: str, value: Any) -> None:
    """Set field ``path`` and save the session, as one change (:func:`_unstoppable`)."""
    part, name = path.split(".")
    with _unstoppable() as state:
        session = _entry(state, "composer") or composer()
        if part == "model":  # frozen: it keys the loaded engines
            session.use_model(dataclasses.replace(session.model, **{name: value}))
        else:
            song_key = session.song_key or ""
            holder = session.song(song_key) if part == "song" else getattr(session, part)
            setattr(holder, name, value)
        save()


def set_settings(**values: Any) -> None:
    """Set these settings (from outside their widgets) and show them."""
    with _unstoppable() as state:
        settings = (_entry(state, "composer") or composer()).settings
        for name, value in values.items():
            setattr(settings, name, value)
        save()
    redraw()


def redraw() -> None:
    """The widgets drawn show the session's values anew (after a change made outside them).

    Call it from a callback, or before the widgets are drawn in a run: Streamlit refuses a
    new value for a widget already drawn in this run (it shows the session's at its next).
    """
    for key, shown in list(st.session_state.get("_views", {}).items()):
        if key in st.session_state:  # drawn in the last run; one not drawn starts from shown
            # One drawn already in this run shows the session's value at its next run.
            with contextlib.suppress(StreamlitAPIException):
                st.session_state[key] = shown()


def view(key: str, shown: Callable[[], Any]) -> Callable[[], Any]:
    """Register widget ``key`` as a view of the session (``shown()``: what it should show),
    for :func:`redraw`; returns ``shown``."""
    st.session_state.setdefault("_views", {})[key] = shown
    return shown


def key_of(path: str, *extra: Any) -> str:
    """The widget key of field ``path``: per song for a song's field; ``extra`` for bounds
    that change with the song (a widget's value must stay inside them)."""
    song_part = f":{composer().song_key}" if path.startswith("song.") else ""
    bounds = "".join(f"[{v}]" for v in extra)
    return f"{path}{song_part}{bounds}"


def _writer(
    path: str, key: str, convert: Callable[[Any], Any] | None, then: Callable | None = None
) -> Callable[[], None]:
    """The widget's ``on_change``: the new value into the session (then ``then()``)."""

    def changed() -> None:
        with _unstoppable() as state:  # the value read and kept as one change
            value = state[key]
            put(path, convert(value) if convert is not None else value)
        if then is not None:
            then()

    return changed


def slider(where, path: str, label: str, low, high, step, **options: Any) -> Any:
    """A slider over field ``path`` (its value kept inside low..high)."""
    key = key_of(path, low, high)
    shown = view(key, lambda: min(max(type(low)(get(path)), low), high))
    value = shown()
    changed = _writer(path, key, type(low))
    return where.slider(label, low, high, value, step, key=key, on_change=changed, **options)


def number(where, path: str, label: str, low, high, step, value=None, **options: Any) -> Any:
    """A number box over field ``path``; ``value`` where the field is None ("the default")."""
    # Bounds are not in the key: a new key would draw a new box, for a moment beside the old
    # one, and lose what is typed meanwhile. A value outside new bounds is brought inside.
    key = key_of(path)
    typed = st.session_state.get(key)
    if isinstance(typed, (int, float)) and not low <= typed <= high:
        st.session_state[key] = min(max(type(low)(typed), low), high)

    def shown_now():
        shown = get(path) if get(path) is not None else value
        return min(max(type(low)(shown), low), high)

    shown = view(key, shown_now)()
    changed = _writer(path, key, type(low))
    return where.number_input(label, low, high, shown, step, key=key, on_change=changed, **options)


def toggle(where, path: str, label: str, checkbox: bool = False, **options: Any) -> bool:
    key = key_of(path)
    shown = view(key, lambda: bool(get(path)))
    draw = where.checkbox if checkbox else where.toggle
    changed = _writer(path, key, bool, options.pop("on_change", None))
    return draw(label, shown(), key=key, on_change=changed, **options)


def text(where, path: str, label: str, shown: str | None = None, **options: Any) -> str:
    """A text field over ``path``; ``shown`` where the field is None (it follows other
    settings until typed in: typing that same text leaves it following)."""
    following = shown is not None and get(path) is None
    key = key_of(path, shown) if following else key_of(path)  # a new text: a new widget
    value = view(key, lambda: get(path) if get(path) is not None else (shown or ""))()
    then = options.pop("on_change", None)

    def changed() -> None:
        with _unstoppable() as state:  # see _writer
            typed = state[key]
            put(path, None if shown is not None and typed == shown else typed)
        if then is not None:
            then()

    return where.text_input(label, value, key=key, on_change=changed, **options)


def select(where, path: str, label: str, options: list, **more: Any) -> Any:
    key = key_of(path)
    index = options.index(view(key, lambda: get(path) if get(path) in options else options[0])())
    changed = _writer(path, key, None, more.pop("on_change", None))
    return where.selectbox(label, options, index, key=key, on_change=changed, **more)


def segmented(where, path: str, label: str, options: list, **more: Any) -> Any:
    """Segmented buttons over ``path``; clicking the chosen one again keeps it chosen."""
    key = key_of(path)
    chosen = view(key, lambda: get(path) if get(path) in options else options[0])

    def changed() -> None:
        with _unstoppable() as state:  # see _writer
            chosen_now = state[key]
            if chosen_now is not None:
                put(path, chosen_now)
        if chosen_now is None:
            redraw()  # a click that unselects: the field stays, and so does its button

    value = chosen()
    shown = where.segmented_control(
        label, options, default=value, key=key, on_change=changed, **more
    )
    return shown or value


def table(
    where, path: str, columns: dict[str, Any], rows: list[dict], **options: Any
) -> list[dict]:
    """An editable table over the rows of ``path`` (as typed), with ``columns`` name ->
    pandas dtype; returns its rows with something typed in them. An edit is written into
    the session on the run it arrives in."""
    key = key_of(path)
    base_slot = f"_table_{key}"
    if key not in st.session_state or base_slot not in st.session_state:
        # Drawn anew (first time, another page in between, a redraw): from the session. The
        # editor keeps its edits on top of this frame, so it stays the same while drawn.
        frame = pd.DataFrame(rows, columns=list(columns)).astype(
            {k: v for k, v in columns.items() if v is not None}
        )
        st.session_state[base_slot] = frame
    edited = where.data_editor(st.session_state[base_slot], key=key, **options)
    typed = [
        {k: (None if v != v else v) for k, v in row.items()}  # NaN (empty) as None: JSON
        for row in edited.to_dict("records")
        if any(v is not None and v == v and str(v).strip() for v in row.values())
    ]
    return typed
