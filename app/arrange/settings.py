"""Arrange, second part: the render settings, the sections table and the stems map."""

from __future__ import annotations

import dataclasses
import random

import streamlit as st

from app import song as songs
from app import state, ui
from app.arrange import Page
from neurochip.errors import NeuroChipError
from neurochip.settings import (
    SCHEDULER_NAMES,
    WINDOW_MODES,
    Overrides,
    RenderSettings,
    describe,
)
from neurochip.stems import Stem, stems_warnings
from neurochip.timeline import one_bar_s


def roll_seed() -> None:
    state.set_settings(seed=random.randrange(0, 2**31))


def draw_settings() -> None:
    """The knobs of the engine in use (all of Riffusion's; another engine's own where chosen)."""
    knobs = ui.engine_knobs()
    riffusion = knobs is None
    left, right = st.columns([3, 2])
    ui.setting_widget(left, "prompt")
    for name in ("negative_prompt", "denoise", "cover_strength", "guidance", "shift"):
        if (riffusion and name not in ("cover_strength", "shift")) or name in (knobs or ()):
            ui.setting_widget(left, name)
    if not riffusion and "guidance" not in knobs:
        left.caption("Guidance is distilled into this checkpoint: it has no knob.")
    if not riffusion and "denoise" in knobs:
        left.caption(
            "Denoise is the noise level the sketch is mixed to (1: the prompt alone); "
            "Riffusion's 0.35 keeps about as much of it as 0.5 here."
        )
    ui.setting_widget(right, "steps")
    seed_col, dice_col = right.columns([5, 2], vertical_alignment="bottom")
    ui.setting_widget(seed_col, "seed", number_input=True)
    dice_col.button(
        "Roll",
        icon=":material/casino:",
        on_click=roll_seed,
        help="Roll a new seed",
        width="stretch",
    )
    if riffusion:
        ui.setting_widget(right, "scheduler", options=list(SCHEDULER_NAMES))
    ui.setting_widget(right, "width")
    if not riffusion:
        return
    with st.expander("Draft options: less model work, not yet checked by ear"):
        st.caption(
            "For trying ideas fast: together they cut the model's work to about a third. They "
            "change the sound in ways nobody has listened to on the real model yet, so takes "
            "made with any of them are labelled *draft*."
        )
        d_windows, d_reuse, d_guidance = st.columns(3)
        ui.setting_widget(d_windows, "windows", options=list(WINDOW_MODES))
        ui.setting_widget(d_reuse, "feature_reuse")
        ui.setting_widget(d_guidance, "guidance_until")


@dataclasses.dataclass
class Tables:
    """What the Sections and Stems tables hold, and what keeps Render from starting."""

    sections: tuple = ()
    transition_s: float = 2.0
    stems: list[Stem] | None = None  # None: not rendering as stems
    as_stems: bool = False
    waiting: list[str] = dataclasses.field(default_factory=list)


def override_column(name: str):
    """A number column of the sections and stems tables: an :class:`Overrides` field, its
    range the take's own (as the settings above take it), its help said once."""
    about = describe(Overrides, name)
    low, high = about.limits
    return st.column_config.NumberColumn(
        about.label, min_value=low, max_value=high, step=about.step, help=about.help
    )


NUMBERS = {name: override_column(name) for name in ("denoise", "guidance")}


def draw_tables(page: Page) -> Tables:
    tables = Tables()
    with st.expander(
        "Sections: a prompt timeline", icon=":material/view_timeline:", key="sections_expander"
    ):
        sections_table(page, tables)
    with st.expander("Stems: an instrument per part", icon=":material/tune:", key="stems_expander"):
        stems_table(page, tables)
    return tables


def sections_table(page: Page, tables: Tables) -> None:
    st.caption(
        "Give parts of the song a band of their own: soft strings in the intro, the full band "
        'from bar 17. *Starts at* is seconds or "bar 17"; leave Denoise or Guidance empty '
        "for the values above. Each part keeps its own denoise (the bass at 0.2 while the "
        "chorus runs at 0.5, in one render); at each start the band changes over *Transition*."
    )
    setup = state.song()
    rows = state.table(
        st,
        "song.sections",
        {"start": object, "prompt": object, "denoise": float, "guidance": float},
        setup.sections,
        num_rows="dynamic",
        hide_index=True,
        placeholder="—",  # an empty cell (not "None"); empty numbers: the values above
        column_config={
            "start": st.column_config.TextColumn("Starts at", help="Seconds, or e.g. bar 17"),
            "prompt": st.column_config.TextColumn("Prompt", width="large"),
            **NUMBERS,
        },
        column_order=("start", "prompt", "denoise", "guidance"),
    )
    if rows != setup.sections:
        state.put("song.sections", rows)
    bar_s = one_bar_s(page.bars_s)
    tables.transition_s = state.number(
        st,
        "song.transition_s",
        "Transition (s)",
        0.0,
        30.0,
        0.1,
        value=round(bar_s, 2) if bar_s else 2.0,
        help=describe(RenderSettings, "transition_s").help,
    )
    try:
        tables.sections = songs.sections_from_rows(rows, page.bars_s) if rows else ()
    except NeuroChipError as err:
        # Said here, by the table; the rest of the page stays (a row is often half-typed).
        st.error(f"{err} Until it is fixed, previews leave the timeline out.")
        tables.waiting.append(f"the Sections table: {err}")


def stems_table(page: Page, tables: Tables) -> None:
    song = page.song
    if song.midi is None:
        st.caption(
            "Stems need the song's parts apart: load its MIDI file. An audio file (a tracker "
            "module too, which ffmpeg plays as one mix) renders as one stem: the whole song."
        )
        return
    st.caption(
        "Each part is played alone and rendered with its own instrument, all in one pass: "
        "triangle bass -> slap bass, noise -> a live drum kit. Group parts into one stem "
        'with "2+3" under *Parts*. Empty Denoise or Guidance: the values above. The render '
        "then makes a stem per row and their mix, with a mixer and a ZIP for your DAW."
    )
    tables.as_stems = state.toggle(st, "song.stems_on", "Render as stems")
    st.caption(
        "The song's parts, by their track number in the file (what **Parts** takes; "
        "the voices above list their MIDI channels): "
        + " · ".join(
            f"**{t.key}** {ui.plain(t.name)} (channel {t.channel})" for t in song.tracks if t.notes
        )
    )
    shown = songs.stem_rows(song)
    rows = state.table(
        st,
        "song.stems",
        {"name": None, "parts": None, "prompt": None, "denoise": float, "guidance": float},
        shown,
        num_rows="dynamic",
        hide_index=True,
        placeholder="—",  # an empty cell (not "None"); empty numbers: the values above
        column_config={
            "name": st.column_config.TextColumn("Stem", help=describe(Stem, "name").help),
            "parts": st.column_config.TextColumn("Parts", help=describe(Stem, "parts").help),
            "prompt": st.column_config.TextColumn(
                "Instrument", width="large", help=describe(Stem, "prompt").help
            ),
            **NUMBERS,
        },
        column_order=("name", "parts", "prompt", "denoise", "guidance"),
    )
    columns = ("name", "parts", "prompt", "denoise", "guidance")
    if rows != [{c: row.get(c) for c in columns} for row in shown]:  # edited: kept as typed
        state.put("song.stems", rows)
    try:
        stems = songs.stems_from_rows(rows, song)
    except NeuroChipError as err:
        st.error(str(err))
        if tables.as_stems:
            tables.waiting.append(f"the Stems map: {err}")
        return
    for warning in stems_warnings(song, stems):
        st.warning(warning, icon=":material/warning:")
    tables.stems = stems if tables.as_stems else None


def settings_of(page: Page, tables: Tables) -> RenderSettings:
    """The settings as they stand, with the sections; stops the page on an invalid one."""
    try:
        settings = ui.current_settings()
        if ui.model_choice().kind == "ace-step":  # the song's tempo, metre and key
            settings = dataclasses.replace(settings, **ui.song_facts(page.song, page.bars_s))
        if tables.sections:
            settings = dataclasses.replace(
                settings, sections=tables.sections, transition_s=float(tables.transition_s)
            )
    except NeuroChipError as err:
        st.error(str(err))
        st.stop()
    st.session_state["last_settings"] = settings
    upload_notice, opened_notice = page.notices
    if st.session_state.get("upload_error_look") not in (None, songs.take_look(settings)):
        ui.forget("upload_error", "upload_error_look")  # said; the composer has moved on
        upload_notice.empty()
    opened = st.session_state.get("opened_take")
    if opened is not None and songs.take_look(settings) != opened["look"]:
        del st.session_state["opened_take"]  # the composer has moved on from the opened take
        opened_notice.empty()
    for warning in settings.warnings():
        st.warning(warning, icon=":material/warning:")
    return settings
