"""Takes: every render, kept. Play, A/B, star keepers, delete, reopen, pair any two."""

from __future__ import annotations

import datetime

import streamlit as st

from app import ui
from neurochip.errors import NeuroChipError
from neurochip.takeset import pair_takes

st.title("Takes")
library = ui.library()
st.caption(f"Every render is kept in `{library.root}` (set NEUROCHIP_HOME to move it).")

SORTS = {
    "Newest first": "created",
    "Starred first": "starred",
    "Name": "name",
    "Song": "song",
    "Prompt": "prompt",
}
find, song_col, sort_col, star_col = st.columns([3, 2, 2, 1.2], vertical_alignment="bottom")
text = find.text_input(
    "Search",
    key="takes_search",
    placeholder="prompt or name, e.g. funk",
    help="Matches the takes' prompts and names, ignoring case.",
)
try:
    songs = library.songs()
except NeuroChipError as err:  # e.g. the index cannot be read, and could not be rebuilt
    st.error(str(err))
    st.stop()
song = song_col.selectbox("Song", ["All songs", *songs], key="takes_song")
sort = sort_col.selectbox("Sort", list(SORTS), key="takes_sort")
starred_only = star_col.toggle("Starred only", key="takes_starred_only")
try:
    takes = library.list(
        starred_only=starred_only,
        song=None if song == "All songs" else song,
        text=text or None,
        sort=SORTS[sort],
    )
except NeuroChipError as err:
    st.error(str(err))
    st.stop()
if not takes:
    if text or starred_only or song != "All songs":
        st.info("No take matches: clear the search or the filters.", icon=":material/search_off:")
    else:
        st.info("No takes yet: render one on the Arrange page.", icon=":material/library_music:")
    st.stop()
st.caption(f"{len(takes)} take{'s' if len(takes) != 1 else ''}")
if notice := st.session_state.pop("takes_notice", None):
    st.success(notice, icon=":material/check_circle:")


def label(take) -> str:
    star = "★ " if take.starred else ""
    return f"{star}{take.name} ({take.kind}, {ui.format_seconds(take.duration_s)})"


def player(take, where=st) -> None:
    """The take's player, or why there is none (its audio file is damaged)."""
    if take.damaged:
        where.warning(
            f"The audio of this take is damaged ({take.damage}): it cannot be played or "
            f"downloaded. Delete it, or put its file back: `{take.audio_path}`.",
            icon=":material/broken_image:",
        )
    else:
        where.audio(str(take.audio_path))


# --- A/B and pairing --------------------------------------------------------------------------

with st.expander("Compare two takes, or build a stereo pair", icon=":material/compare_arrows:"):
    by_id = {t.id: t for t in takes}
    a_col, b_col = st.columns(2)
    a_id = a_col.selectbox("Take A", list(by_id), format_func=lambda i: label(by_id[i]), key="ab_a")
    b_id = b_col.selectbox(
        "Take B",
        list(by_id),
        index=min(1, len(by_id) - 1),
        format_func=lambda i: label(by_id[i]),
        key="ab_b",
    )
    player(by_id[a_id], a_col)
    player(by_id[b_id], b_col)
    width = st.slider("Stereo width", 0.0, 1.0, 1.0, 0.05, key="pair_width")
    if st.button("Make a stereo pair of A (left) and B (right)", disabled=a_id == b_id):
        try:
            pair = pair_takes(library, a_id, b_id, width)
            st.session_state["takes_notice"] = f"Added {pair.name}."
            st.rerun()  # the list above was drawn before the pair existed
        except NeuroChipError as err:
            st.error(str(err))

# --- the list ---------------------------------------------------------------------------------

fmt = (
    st.segmented_control(
        "Download as", [".wav", ".flac", ".mp3"], default=".wav", key="takes_format"
    )
    or ".wav"
)
for take in takes:
    with st.container(border=True):
        top = st.columns([6, 1, 1.2, 1.5], vertical_alignment="center")
        created = datetime.datetime.fromtimestamp(take.created).strftime("%Y-%m-%d %H:%M")
        top[0].markdown(f"**{label(take)}**  \n{created} · from {take.source_name or 'unknown'}")
        if top[1].button("★" if take.starred else "☆", key=f"star_{take.id}", help="Star a keeper"):
            library.star(take.id, not take.starred)
            st.rerun()
        if top[2].button(
            "Open", key=f"open_{take.id}", help="Load this take's settings into Arrange"
        ):
            ui.open_settings(take.settings())
            st.switch_page("views/arrange.py")
        if top[3].button("Delete", key=f"delete_{take.id}", help="Delete this take for good"):
            st.session_state["confirm_delete"] = take.id
        if st.session_state.get("confirm_delete") == take.id:
            st.warning("Delete this take and its file?")
            yes, no = st.columns(2)
            if yes.button("Yes, delete", key=f"yes_{take.id}", type="primary"):
                library.delete(take.id)
                st.session_state.pop("confirm_delete", None)
                st.rerun()
            if no.button("Keep it", key=f"no_{take.id}"):
                st.session_state.pop("confirm_delete", None)
                st.rerun()
        if take.thumbnail_path is not None and take.thumbnail_path.is_file():
            st.image(str(take.thumbnail_path), width="stretch")
        player(take)
        settings = take.metadata.get("takes", {})
        with st.expander("Settings"):
            st.json(settings, expanded=False)
        if take.damaged:
            continue
        try:
            data, file_name = ui.export_take(take.id, fmt)
        except NeuroChipError as err:  # e.g. deleted in another tab meanwhile
            st.error(str(err))
            continue
        st.download_button(
            "Download", data, file_name=file_name, key=f"dl_{take.id}", icon=":material/download:"
        )
