"""Takes: comp lanes, one take built from the best bars of several."""

from __future__ import annotations

import math

import streamlit as st

from app import ui
from app.abplayer import ab_player
from app.figures import faithfulness_colour
from app.takes import choice
from neurochip.comp import COMP_CROSSFADE_S, CompPart, comp_audio, comp_takes, take_bar_times
from neurochip.errors import NeuroChipError

COMP_HELP = (
    "Build one take from the best bars of several: takes as rows, bars as columns, each cell "
    "coloured by how well that take keeps that bar's notes (the share of its notes kept, "
    "where they were counted; else its chroma score). Click a cell to have that take "
    "play that bar; the comp plays at once (a 30 ms equal-power crossfade at each bar line) "
    "and Save keeps it as a new take."
)
#: Bars shown at once in the lanes (more scroll with the "Bars shown" slider).
LANE_BARS = 12


def strip_by_bar(take) -> dict[int, float]:
    """A take's notes kept per bar of the song (else its chroma score per bar), where it
    was measured per bar."""
    measured = take.metadata.get("faithfulness")
    if not isinstance(measured, dict):
        return {}
    notes = measured.get("notes")
    if isinstance(notes, dict) and notes.get("segment") == "bar":
        measured = notes  # its strip: the share of each bar's sketch notes kept
    if measured.get("segment") != "bar":
        return {}
    first = measured.get("first_bar") if isinstance(measured.get("first_bar"), int) else 1
    strip = measured.get("strip") or []
    return {
        first + i: v
        for i, v in enumerate(strip)
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def lane_name(take) -> str:
    """A lane's name with its notes kept (or chroma score), as the list shows them."""
    if take.notes_kept is not None:
        return f"{ui.plain(take.name)} · {take.notes_kept:.0%} kept"
    if take.faithfulness is not None:
        return f"{ui.plain(take.name)} · chroma {take.faithfulness:.2f}"
    return ui.plain(take.name)


def pick(key: tuple, segment: int, row: int) -> None:
    st.session_state.setdefault("comp_choice", {})[key][segment] = row


@st.fragment
def draw(takes_here) -> None:
    """The comp: lanes of takes over bars, the comp playing, Save. A click on a cell reruns
    the lanes alone (a fragment), not the page."""
    library = ui.library()
    candidates = {t.id: t for t in takes_here if t.kind in ("take", "comp") and not t.damaged}
    chosen = st.multiselect(
        "Takes to comp (of one song and span)",
        list(candidates),
        format_func=lambda i: choice(candidates[i]),
        max_selections=6,
        key="comp_takes",
        help=COMP_HELP,
    )
    if len(chosen) < 2:
        st.caption("Pick two or more takes of the same span of a song.")
        return
    lanes = [candidates[i] for i in chosen]
    spans = {(round(t.settings().start_s, 2), round(t.duration_s, 2)) for t in lanes}
    if len(spans) > 1:
        st.warning("These takes cover different parts of the song: pick takes of one span.")
        return
    start = lanes[0].settings().start_s
    duration = lanes[0].duration_s
    song_bars = take_bar_times(library, lanes[0]) or []
    # Segments: the song's bars inside the span (the first takes any pickup), else seconds.
    inside = [(i + 1, t - start) for i, t in enumerate(song_bars) if 0 < t - start < duration]
    if inside:
        if inside[0][1] <= 0.05:  # a bar starts (near enough) where the span does
            inside = [(inside[0][0], 0.0), *inside[1:]]
        else:  # the span starts inside the bar before (0: a pickup before bar 1)
            inside = [(inside[0][0] - 1, 0.0), *inside]
        starts = [t for _, t in inside]
        numbers = [n for n, _ in inside]
        unit = "bar"
    else:
        starts = [float(t) for t in range(int(math.ceil(duration)))]
        numbers = [i + 1 for i in range(len(starts))]
        unit = "second"
    key = tuple(chosen)
    choices = st.session_state.setdefault("comp_choice", {})
    if len(choices.get(key, [])) != len(starts):
        choices[key] = [0] * len(starts)
    picked = choices[key]
    shown_from = 0
    if len(starts) > LANE_BARS:
        shown_from = (
            st.slider(
                f"{unit.capitalize()}s shown from", 0, len(starts) - LANE_BARS, 0, key="comp_scroll"
            )
            or 0
        )
    window = range(shown_from, min(len(starts), shown_from + LANE_BARS))
    widths = [2.4] + [1] * len(window)
    st.caption(
        f"Click a cell to have that take play that {unit} (✓ marks the take playing each); "
        "the numbers are how well each take keeps that bar's notes."
        if unit == "bar"
        else "Click a cell to have that take play that second (✓ marks the take playing it)."
    )
    head = st.columns(widths, vertical_alignment="bottom")
    head[0].caption(f"take · {unit}")
    for column, segment in zip(head[1:], window, strict=True):
        column.caption(str(numbers[segment]))
    for row, take in enumerate(lanes):
        cells = st.columns(widths, vertical_alignment="center")
        cells[0].markdown(f":small[{lane_name(take)}]")
        scores = strip_by_bar(take) if unit == "bar" else {}
        for column, segment in zip(cells[1:], window, strict=True):
            score = scores.get(numbers[segment])
            chosen_here = picked[segment] == row
            if score is None:
                text = "✓" if chosen_here else "·"
            elif chosen_here:  # plain on the highlighted button: readable whatever its score
                text = f"✓ {score:.2f}"
            else:
                text = f":{faithfulness_colour(score)}[{score:.2f}]"
            column.button(
                text,
                key=f"comp_{row}_{segment}",
                type="primary" if picked[segment] == row else "secondary",
                on_click=pick,
                args=(key, segment, row),
                help=f"{take.name}: {unit} {numbers[segment]}",
                width="stretch",
            )
    audio = ui.memo("comp_audio", key, lambda: [library.load_audio(i) for i in chosen])
    rate = audio[0].sample_rate
    # Neighbouring segments of one take are one part: switches only where the take changes.
    runs = [0] + [i for i in range(1, len(picked)) if picked[i] != picked[i - 1]]
    try:
        # Made once per pick, not on every run of the page (a 3-minute take is 30 MB).
        mix = ui.memo(
            "comp_mix",
            (key, tuple(picked)),
            lambda: comp_audio(
                audio,
                [picked[i] for i in runs],
                [round(starts[i] * rate) for i in runs[1:]],
                round(COMP_CROSSFADE_S * rate),
            ),
        )
    except NeuroChipError as err:
        st.error(str(err))
        return
    try:
        sources = ui.memo(
            "comp_ab",
            (key, tuple(picked)),
            lambda: (
                {"Comp": ui.wav_bytes(mix)}
                | {
                    f"{i + 1}: seed {lanes[i].settings().seed}": ui.wav_bytes(a)
                    for i, a in enumerate(audio[:3])
                }
            ),
        )
        ab_player(sources, key="comp_ab", offset_s=start, height=120)
    except ValueError as err:  # too long for one page: the comp alone
        st.caption(f"The comp alone: {err}")
        st.audio(ui.wav_bytes(mix), format="audio/wav")
    saved = st.session_state.get("comp_saved") == (key, tuple(picked))
    if saved:
        st.caption("This comp is saved: pick other bars to save another.")
    if st.button(
        "Save the comp as a take", icon=":material/save:", key="comp_save", disabled=saved
    ):
        ends = [starts[i] for i in runs[1:]] + [duration]
        parts = [
            CompPart(
                chosen[picked[i]],
                starts[i],
                end,
                (numbers[i], numbers[j - 1]) if unit == "bar" else None,
            )
            for i, j, end in zip(runs, runs[1:] + [len(starts)], ends, strict=True)
        ]
        try:
            made = comp_takes(library, parts)
        except NeuroChipError as err:
            st.error(str(err))
        else:
            st.session_state["takes_notice"] = f"Added {made.name}."
            st.session_state["comp_saved"] = (key, tuple(picked))
            st.rerun(scope="app")  # the list shows the new take
