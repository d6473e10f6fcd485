"""Takes: compare two takes in one player, and make a stereo pair of two mono takes."""

from __future__ import annotations

import streamlit as st

from app import state, ui
from app.abplayer import ab_player
from app.takes import choice, player
from neurochip.errors import NeuroChipError
from neurochip.takeset import pair_takes


def default_ab(takes) -> tuple[int, int]:
    """Which of the listed takes Compare starts with: the first two single takes, the second
    of the same song as the first where there is one (a pair and one of its own halves, or
    two different songs, compare little); else the first two listed."""
    singles = [i for i, take in enumerate(takes) if take.channels == 1]
    if not singles:
        return 0, min(1, len(takes) - 1)
    first = singles[0]
    same_song = [i for i in singles[1:] if takes[i].source_name == takes[first].source_name]
    others = same_song or singles[1:] or [min(1, len(takes) - 1)]
    return first, others[0]


@st.fragment
def draw(takes) -> None:
    """Two of the listed takes in one player (a click here reruns this tool alone), and a
    stereo pair of them."""
    library = ui.library()
    with st.container(border=True):
        by_id = {t.id: t for t in takes}
        first, second = default_ab(takes)
        a_col, b_col = st.columns(2)
        a_id = a_col.selectbox(
            "Take A", list(by_id), index=first, format_func=lambda i: choice(by_id[i]), key="ab_a"
        )
        b_id = b_col.selectbox(
            "Take B",
            list(by_id),
            index=second,
            format_func=lambda i: choice(by_id[i]),
            key="ab_b",
        )
        a_col.caption(by_id[a_id].label)
        b_col.caption(by_id[b_id].label)
        try:
            # One player, one clock: switch between the takes at the same position.
            sources = ui.memo(
                "takes_ab",
                (a_id, b_id),
                lambda: {
                    "Take A": ui.wav_bytes(library.load_audio(a_id)),
                    "Take B": ui.wav_bytes(library.load_audio(b_id)),
                },
            )
            ab_player(sources, key="takes_ab")
        except (NeuroChipError, ValueError) as err:  # damaged, or too long for one page
            st.caption(f"Played separately: {err}")
            player(by_id[a_id], a_col)
            player(by_id[b_id], b_col)
        width = state.slider(st, "view.pair_width", "Stereo width", 0.0, 1.0, 0.05)
        singles = by_id[a_id].channels == 1 and by_id[b_id].channels == 1
        if st.button(
            "Make a stereo pair of A (left) and B (right)",
            disabled=a_id == b_id or not singles,
            help=None if singles else "A stereo pair is made of two mono takes.",
        ):
            try:
                pair = pair_takes(library, a_id, b_id, width)
                st.session_state["takes_notice"] = f"Added {pair.name}."
                st.rerun(scope="app")  # the list above was drawn before the pair existed
            except NeuroChipError as err:
                st.error(str(err))
