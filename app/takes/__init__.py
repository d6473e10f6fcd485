"""The Takes page's parts: the list's rows, the A/B and pairing tool, the comp lanes, one take's
big view (with re-rolls). What they share is here."""

from __future__ import annotations

import streamlit as st

from app import ui
from app.figures import faithfulness_colour
from neurochip.library.metadata import faithfulness_score, notes_kept_score
from neurochip.library.names import faithfulness_text
from neurochip.notes_kept import NotesKept

FAITHFULNESS_HELP = (
    "**Notes kept**: the share of the sketch's notes the take plays (same semitone, starting "
    "within 50 ms), counted on its transcription. **Chroma**: how alike the pitch classes "
    "sound, 0-1 (1.00 keeps every note; unrelated music scores about 0.5 or less; a pad of "
    "the right chords scores well too). Takes made before notes were counted show the chroma "
    "alone until their notes are counted."
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


def kept_badge(score: float | None) -> str:
    """Notes kept as a coloured badge (markdown): "86%"."""
    if score is None:
        return ":gray-badge[–]"
    return f":{faithfulness_colour(score)}-badge[{score:.0%}]"


def list_badge(take) -> str:
    """What a list shows of a take's faithfulness: notes kept where they were counted, else
    the chroma score (its badge says "chroma")."""
    if take.notes_kept is not None:
        return kept_badge(take.notes_kept)
    if take.faithfulness is None:
        return badge(None)
    return f"{badge(take.faithfulness)} :small[:gray[chroma]]"


def list_help(take) -> str | None:
    """The list's notes-kept badge explained where the sketch itself keeps less than all of
    its own notes: "Notes kept 86% (sketch 79%): ..."; else None (the column's help says it)."""
    measured = take.metadata.get("faithfulness")
    notes = measured.get("notes") if isinstance(measured, dict) else None
    ceiling = ui.ceiling_of(notes)
    if take.notes_kept is None or ceiling is None:
        return None
    return (
        f"Notes kept {take.notes_kept:.0%} (sketch {ceiling:.0%}): the transcriber hears "
        f"{ceiling:.0%} of the sketch's own notes in the sketch itself over this span, so a "
        "take keeps about that many at most."
    )


def measured_notes(measured) -> NotesKept | None:
    """The notes counted in one take's ``"faithfulness"`` (its metadata's), or None (not
    counted, a file of several takes, or a damaged record)."""
    notes = measured.get("notes") if isinstance(measured, dict) else None
    if not isinstance(notes, dict) or "sketch_notes" not in notes:
        return None
    try:
        return NotesKept.from_dict(notes)
    except (ValueError, TypeError):
        return None


def scores_text(measured) -> str:
    """ "notes kept :green-badge[86%] · chroma :green-badge[0.93]" of a ``"faithfulness"``."""
    wrapped = {"faithfulness": measured}
    kept, chroma = notes_kept_score(wrapped), faithfulness_score(wrapped)
    text = f"chroma {badge(chroma)}"
    if kept is None:
        return text
    ceiling = ui.sketch_ceiling(measured.get("notes") if isinstance(measured, dict) else None)
    return f"notes kept {kept_badge(kept)}{ceiling} · {text}"


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
