"""The Takes page's parts: the list's rows, the A/B and pairing tool, the comp lanes, one take's
big view (with re-rolls). What they share is here."""

from __future__ import annotations

import streamlit as st

from app import ui
from app.figures import faithfulness_colour
from neurochip.library.names import faithfulness_text

FAITHFULNESS_HELP = (
    "Note faithfulness: how well the take keeps the sketch's notes, measured when it was "
    "rendered. 1.00 keeps every note; unrelated music scores about 0.5 or less."
)


def choice(take) -> str:
    """A take as a list of them shows it: unique (its id's start), for a selectbox tells its
    options apart by their text."""
    star = "★ " if take.starred else ""
    return f"{star}{take.name} ({take.kind}, {ui.format_seconds(take.duration_s)}) · {take.id[:6]}"


def badge(score: float | None) -> str:
    """The faithfulness score as a coloured badge (markdown)."""
    if score is None:
        return ":gray-badge[–]"
    colour = faithfulness_colour(score)
    return f":{colour}-badge[{faithfulness_text(score)}]"


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
