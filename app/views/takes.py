"""Takes: every render, kept. A compact list to tell them apart, one take's big view at a time.

Each row says what tells a take apart (its settings, from
:attr:`Take.label <neurochip.library.store.Take.label>`, and its notes kept, or the chroma
score of a take whose notes were not counted); the player, downloads, note and
rename live in the big view of the one take opened. The list is paged, so a page builds at most
:data:`PER_PAGE` rows and a single take's player and export, whatever the library holds.
"""

from __future__ import annotations

import datetime
import math

import streamlit as st

from app import song as arrange_song
from app import state, ui
from app.takes import FAITHFULNESS_HELP, list_badge, list_help, player
from app.takes import comp as comp_tool
from app.takes import compare as compare_tool
from app.takes.take_view import big_view
from neurochip.errors import NeuroChipError
from neurochip.library.names import take_label
from neurochip.library.query import SORT_NAMES

PER_PAGE = 25

SORTS = {name: sort for sort, name in SORT_NAMES.items()}  # "Notes kept": "notes_kept"
OLD_SORT_NAMES = {"Most faithful first": "Notes kept"}  # as sessions saved them
st.title("Takes")
library = ui.library()
st.caption(f"Every render is kept in `{library.root}` (set NEUROCHIP_HOME to move it).")
ui.interrupted_notice()
ui.rendering_now()


def first_page() -> None:
    st.session_state["takes_page"] = 0


def turn_page(step: int) -> None:
    st.session_state["takes_page"] = max(0, st.session_state.get("takes_page", 0) + step)


def toggle_open(take_id: str) -> None:
    opened = st.session_state.get("takes_open") == take_id
    st.session_state["takes_open"] = None if opened else take_id


find, song_col, sort_col, star_col = st.columns([3, 2, 2, 1.2], vertical_alignment="bottom")
text = state.text(
    find,
    "view.takes_search",
    "Search",
    placeholder="prompt, name or note, e.g. funk",
    help="Matches the takes' prompts, names and notes, ignoring case.",
    on_change=first_page,
)
try:
    songs = library.songs()
except NeuroChipError as err:  # e.g. the index cannot be read, and could not be rebuilt
    st.error(str(err))
    st.stop()
song = state.select(
    song_col, "view.takes_song", "Song", ["All songs", *songs], on_change=first_page
)
if state.get("view.takes_sort") in OLD_SORT_NAMES:
    state.put("view.takes_sort", OLD_SORT_NAMES[state.get("view.takes_sort")])
sort = state.select(sort_col, "view.takes_sort", "Sort", list(SORTS), on_change=first_page)
starred_only = state.toggle(
    star_col, "view.takes_starred_only", "Starred only", on_change=first_page
)
filters = {
    "starred_only": starred_only,
    "song": None if song == "All songs" else song,
    "text": text or None,
}
try:
    total = library.count(**filters)
    if st.session_state.get("takes_seen_total") not in (None, total):
        first_page()  # takes came or went since this page was last drawn: new ones are first
    st.session_state["takes_seen_total"] = total
    pages = max(1, math.ceil(total / PER_PAGE))
    page = min(max(int(st.session_state.get("takes_page", 0)), 0), pages - 1)
    st.session_state["takes_page"] = page
    takes = library.list(**filters, sort=SORTS[sort], limit=PER_PAGE, offset=page * PER_PAGE)
except NeuroChipError as err:
    st.error(str(err))
    st.stop()
if not takes:
    if text or starred_only or song != "All songs":
        st.info("No take matches: clear the search or the filters.", icon=":material/search_off:")
    else:
        st.info("No takes yet: render one on the Arrange page.", icon=":material/library_music:")
    st.stop()
shown = f"{total} take{'s' if total != 1 else ''}"
if pages > 1:
    shown += f" · {page * PER_PAGE + 1}–{page * PER_PAGE + len(takes)} shown"
# One row: the count, then the two tools' toggles side by side (their panels open below).
count_col, compare_col, comp_col = st.columns([1, 2, 2], vertical_alignment="center")
count_col.caption(shown)
if notice := st.session_state.pop("takes_notice", None):
    st.success(notice, icon=":material/check_circle:")


# A toggle, not an expander: an expander's content is built even while it is closed, and this
# one's holds two players.
compare = state.toggle(
    compare_col,
    "view.takes_compare",
    "Compare two takes, or build a stereo pair",
    help="Play two takes of this page side by side; search or sort to bring others here.",
)
if compare:
    compare_tool.draw(takes)

comping = state.toggle(
    comp_col, "view.takes_comp", "Comp bars of several takes", help=comp_tool.COMP_HELP
)
if comping:
    with st.container(border=True):
        comp_tool.draw(takes)

# --- the list -------------------------------------------------------------------------------------


def star(take_id: str, starred: bool) -> None:
    library.star(take_id, starred)


def more(take_id: str) -> None:
    toggle_open(take_id)
    st.session_state["_takes_rerun"] = True  # the big view opens under the list's row


@st.fragment
def take_row(take_id: str) -> None:
    """One take's row: a click on its star reruns this row alone."""
    if st.session_state.pop("_takes_rerun", False):
        st.rerun(scope="app")
    try:
        take = library.get(take_id)
    except NeuroChipError:
        return  # deleted in another tab meanwhile
    row = st.columns([0.5, 6.5, 1.1, 1.7, 0.9, 0.9], vertical_alignment="center")
    row[0].button(
        "★" if take.starred else "☆",
        key=f"star_{take.id}",
        help="Star a keeper",
        type="tertiary",
        on_click=star,
        args=(take.id, not take.starred),
    )
    note = " · :material/sticky_note_2:" if take.note else ""
    damaged = " · :orange[damaged]" if take.damaged else ""
    row[1].markdown(
        f"**{ui.plain(take.name)}**{damaged}{note}  \n"
        f":small[:gray[{ui.plain(take_label(take.metadata, faithfulness=False))}]]"
    )
    row[2].markdown(list_badge(take), help=list_help(take))
    created = datetime.datetime.fromtimestamp(take.created).strftime("%Y-%m-%d %H:%M")
    row[3].markdown(f":small[{created}]")
    if row[4].button(
        "Open",
        key=f"open_{take.id}",
        help="Open in Arrange: this take's song, span and settings",
        type="tertiary",
    ):
        arrange_song.open_take(take)
        st.switch_page("views/arrange.py")
    opened = st.session_state.get("takes_open") == take.id
    row[5].button(
        "Less" if opened else "More",
        key=f"more_{take.id}",
        help="Play, download, write a note, rename or delete",
        type="tertiary",
        on_click=more,
        args=(take.id,),
    )
    if take.damaged and not opened:
        player(take)  # says what is wrong, and what to do


head = st.columns([0.5, 6.5, 1.1, 1.7, 0.9, 0.9], vertical_alignment="bottom")
head[1].caption("Take · settings")
head[2].caption("Notes kept", help=FAITHFULNESS_HELP)
head[3].caption("Made")
with st.container(gap=None):
    for take in takes:
        take_row(take.id)
        if st.session_state.get("takes_open") == take.id:
            big_view(take)

if pages > 1:
    back, where, forward = st.columns([1, 2, 1], vertical_alignment="center")
    back.button(
        "Previous",
        key="takes_prev",
        icon=":material/chevron_left:",
        disabled=page == 0,
        on_click=turn_page,
        args=(-1,),
    )
    where.caption(f"Page {page + 1} of {pages}")
    forward.button(
        "Next",
        key="takes_next",
        icon=":material/chevron_right:",
        disabled=page >= pages - 1,
        on_click=turn_page,
        args=(1,),
    )
