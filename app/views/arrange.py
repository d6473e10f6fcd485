"""Arrange: drag a sketch in, tweak until the take sounds right, render the song, download."""

from __future__ import annotations

import dataclasses
import random

import pandas as pd
import streamlit as st

from app import ui
from app.abplayer import ab_player
from app.figures import DRIFTING, faithfulness_figure, spectrogram_figure
from app.mixer import stem_mixer
from neurochip.bars import MAX_BPM, MIN_BPM, BarGrid
from neurochip.engine import FAITHFUL_PREVIEW, PREVIEW_SECONDS, QUICK_PREVIEW, region_picture
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import note_faithfulness
from neurochip.jobs import Job
from neurochip.library.metadata import is_loop
from neurochip.library.thumbnails import spectrogram_thumbnail
from neurochip.settings import (
    SCHEDULER_NAMES,
    WINDOW_MODES,
    RenderSettings,
    TakeSetOptions,
    describe,
)
from neurochip.stems import Stem, render_stems, stems_warnings
from neurochip.synth import DRUMS, VOICES
from neurochip.takeset import ROLES, render_take_set
from neurochip.timeline import one_bar_s
from neurochip.variations import best_variations, render_variations, variation_grid

st.title("Arrange")
st.caption(
    "Drop a chip sketch, describe the band, and tweak until the take sounds right. "
    "The preview re-renders as you change settings; then render the whole song."
)
ui.interrupted_notice()

# --- the sketch -------------------------------------------------------------------------------

# First: a file that failed to load empties the uploader (a new key), so its box never shows
# that file while the song before it stays loaded.
ui.adopt_loaded_sketch()
uploaded = st.file_uploader(
    "Your sketch",
    type=ui.UPLOAD_SUFFIXES,
    help="WAV, MP3, FLAC, OGG or a MIDI file (played by the chip synth); with ffmpeg also "
    "M4A, tracker modules (MOD, S3M, XM, IT) and chip rips (NSF, SPC, VGM, GBS, ...).",
    key=f"sketch_upload_{st.session_state.get('upload_round', 0)}",
)
if uploaded is not None and st.session_state.get("upload_id") != uploaded.file_id:
    ui.accept_upload(uploaded)
if st.button("Try the demo: Greensleeves as a chip-tune MIDI sketch", icon=":material/music_note:"):
    ui.open_demo()
    st.session_state["upload_id"] = uploaded.file_id if uploaded is not None else None
    st.session_state.pop("upload_error", None)
load_job = st.session_state.get("load_job")


# Reading a file (a MIDI file is synthesised: seconds) runs as a job; the song already loaded
# stays below, playable, until the new one is ready. See ui.watch_job.
@st.fragment(run_every=ui.poll_every("load", load_job))
def load_progress() -> None:
    job = ui.watch_job("load", st.session_state.get("load_label", "Loading"))
    if job is not None:
        st.button("Cancel", key="cancel_load", icon=":material/close:", on_click=job.cancel)


load_progress()
upload_notice = st.empty()
if st.session_state.get("upload_error"):
    upload_notice.error(st.session_state["upload_error"], icon=":material/error:")
opened = st.session_state.get("opened_take")  # said until a setting moves on from it
opened_notice = st.empty()
if opened is not None:
    opened_notice.info(opened["text"], icon=":material/file_open:")

song = ui.current_sketch()
if song is None:
    if load_job is not None and not load_job.finished:
        st.stop()  # its progress is above
    st.info(
        "Drop a WAV, MP3, MIDI or chip file above to begin, or try the demo.",
        icon=":material/upload_file:",
    )
    st.stop()

audio = song.audio
st.audio(ui.memo("sketch_wav", song.key, lambda: ui.wav_bytes(audio)), format="audio/wav")
st.caption(
    # The seconds too: the span and preview fields below count in them.
    f"**{song.name}** · {ui.format_seconds(audio.duration_s)} ({audio.duration_s:.2f} s) · "
    f"{'stereo' if audio.channels == 2 else 'mono'} · {audio.sample_rate} Hz "
    + (
        f"(resampled from the file's {song.file_rate} Hz) "
        if song.file_rate and song.file_rate != audio.sample_rate
        else ""
    )
    + "(rendered as a mono mix; use the stereo pair for width)"
)

if song.tracks:
    with st.expander("MIDI voices: which chip voice plays each part", expanded=True):
        st.caption(
            "Your MIDI sketch is played by the built-in chip synth. Pick another voice for a "
            "part and the sketch is synthesised again."
        )
        choices = list(VOICES) + [DRUMS]
        chosen = {}
        for track in song.tracks:
            name_col, voice_col = st.columns([3, 1], vertical_alignment="center")
            name_col.markdown(f"**{track.name}** · channel {track.channel} · {track.notes} notes")
            current = song.voices.get(track.key, track.voice)
            chosen[track.key] = voice_col.selectbox(
                f"Voice of {track.name}",  # what a screen reader says for this part
                choices,
                index=choices.index(current),
                key=f"voice_{song.key}_{track.key}",
                label_visibility="collapsed",
            )
        overrides = {
            k: v for k, v in chosen.items() if v != next(t.voice for t in song.tracks if t.key == k)
        }
        if overrides != song.voices and ui.loading_voices() != (song.key, overrides):
            ui.change_voices(song, overrides)
            st.rerun()  # shows its progress at the top, with the song as it was below

if song.midi is None:
    grid = song.bar_grid

    def change_grid() -> None:
        try:
            ui.set_bar_grid(
                BarGrid(
                    float(st.session_state[f"bpm_{song.key}"]),
                    float(st.session_state[f"downbeat_{song.key}"]),
                    int(st.session_state[f"per_bar_{song.key}"]),
                )
            )
        except NeuroChipError as err:
            st.session_state["upload_error"] = str(err)

    def detect_grid() -> None:
        found = ui.bar_grid_for(song, None)
        ui.set_bar_grid(found, "detected")
        if found is not None:  # the fields show what was found (a callback may set them)
            st.session_state[f"bpm_{song.key}"] = float(found.bpm)
            st.session_state[f"downbeat_{song.key}"] = float(found.downbeat_s)
            st.session_state[f"per_bar_{song.key}"] = int(found.beats_per_bar)

    with st.expander(
        f"Bars: {grid.bpm:g} BPM, {grid.beats_per_bar} beats, bar 1 at {grid.downbeat_s:.2f} s "
        f"({ui.bar_grid_source(song)})"
        if grid is not None
        else "Bars: no steady beat found",
        icon=":material/view_week:",
        key=f"bars_{song.key}",  # stays open while its title follows the edits
    ):
        st.caption(
            "Where the bars fall, for re-rolling bars, the note-faithfulness strip and the "
            "bar lines on the spectrograms. Found by beat tracking: correct them if they are "
            "off (a MIDI sketch brings its own)."
        )
        b1, b2, b3, b4 = st.columns([2, 2, 2, 2], vertical_alignment="bottom")
        b1.number_input(
            "Tempo (BPM)",
            MIN_BPM,
            MAX_BPM,
            value=float(grid.bpm) if grid else 120.0,
            step=0.5,
            key=f"bpm_{song.key}",
            on_change=change_grid,
        )
        b2.number_input(
            "Bar 1 starts at (s)",
            0.0,
            float(audio.duration_s),
            value=float(grid.downbeat_s) if grid else 0.0,
            step=0.01,
            format="%.2f",
            key=f"downbeat_{song.key}",
            on_change=change_grid,
        )
        b3.number_input(
            "Beats per bar",
            1,
            16,
            value=int(grid.beats_per_bar) if grid else 4,
            key=f"per_bar_{song.key}",
            on_change=change_grid,
        )
        b4.button("Detect again", key=f"detect_{song.key}", on_click=detect_grid)
bars_s = ui.song_bars(song) or []
bars_s_key = tuple(bars_s)

# --- settings ---------------------------------------------------------------------------------


def roll_seed() -> None:
    seed = random.randrange(0, 2**31)
    st.session_state["w_seed"] = st.session_state["seed"] = seed


left, right = st.columns([3, 2])
ui.setting_widget(left, "prompt")
ui.setting_widget(left, "negative_prompt")
ui.setting_widget(left, "denoise")
ui.setting_widget(left, "guidance")
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
ui.setting_widget(right, "scheduler", options=list(SCHEDULER_NAMES))
ui.setting_widget(right, "width")
with st.expander("Draft options: less model work, not yet checked by ear"):
    st.caption(
        "For trying ideas fast: together they cut the model's work to about a third. They "
        "change the sound in ways nobody has listened to on the real model yet, so takes made "
        "with any of them are labelled *draft*."
    )
    d_windows, d_reuse, d_guidance = st.columns(3)
    ui.setting_widget(d_windows, "windows", options=list(WINDOW_MODES))
    ui.setting_widget(d_reuse, "feature_reuse")
    ui.setting_widget(d_guidance, "guidance_until")

with st.expander(
    "Sections: a prompt timeline", icon=":material/view_timeline:", key="sections_expander"
):
    st.caption(
        "Give parts of the song a band of their own: soft strings in the intro, the full band "
        'from bar 17. *Starts at* is seconds or "bar 17"; leave Denoise or Guidance empty '
        "for the values above. Each part keeps its own denoise (the bass at 0.2 while the "
        "chorus runs at 0.5, in one render); at each start the band changes over *Transition*."
    )
    table = st.data_editor(
        # The rows this song opened with: edits are kept by the editor on top of them.
        ui.memo(
            "sections_base",
            song.key,
            lambda: pd.DataFrame(
                st.session_state.get("sections_rows") or [],
                columns=["start", "prompt", "denoise", "guidance"],
            ).astype({"start": object, "prompt": object, "denoise": float, "guidance": float}),
        ),
        num_rows="dynamic",
        hide_index=True,
        placeholder="—",  # an empty cell (not "None"); empty numbers: the values above
        key=f"sections_{song.key}",
        column_config={
            "start": st.column_config.TextColumn("Starts at", help="Seconds, or e.g. bar 17"),
            "prompt": st.column_config.TextColumn("Prompt", width="large"),
            "denoise": st.column_config.NumberColumn(
                "Denoise", min_value=0.05, max_value=1.0, step=0.05
            ),
            "guidance": st.column_config.NumberColumn(
                "Guidance", min_value=0.0, max_value=30.0, step=0.5
            ),
        },
        column_order=("start", "prompt", "denoise", "guidance"),
    )
    bar_s = one_bar_s(bars_s)
    transition_s = st.number_input(
        "Transition (s)",
        0.0,
        30.0,
        value=round(bar_s, 2) if bar_s else 2.0,
        step=0.1,
        key=f"transition_{song.key}",
        help=describe(RenderSettings, "transition_s").help,
    )
    kept_rows = [
        {k: (None if v != v else v) for k, v in row.items()}  # NaN (empty) as None: JSON
        for row in table.to_dict("records")
        if ui.cell_text(row.get("start")) or ui.cell_text(row.get("prompt"))
    ]
    st.session_state["sections_rows"] = kept_rows
    timeline_error = None
    try:
        sections = ui.sections_from_rows(kept_rows, bars_s) if kept_rows else ()
    except NeuroChipError as err:
        # Said here, by the table; the rest of the page stays (a row is often half-typed).
        sections, timeline_error = (), str(err)
        st.error(f"{err} Until it is fixed, previews leave the timeline out.")

with st.expander("Stems: an instrument per part", icon=":material/tune:", key="stems_expander"):
    stems, stems_error = None, None
    if song.midi is None:
        st.caption(
            "Stems need the song's parts apart: load its MIDI file. An audio file (a tracker "
            "module too, which ffmpeg plays as one mix) renders as one stem: the whole song."
        )
    else:
        st.caption(
            "Each part is played alone and rendered with its own instrument, all in one pass: "
            "triangle bass -> slap bass, noise -> a live drum kit. Group parts into one stem "
            'with "2+3" under *Parts*. Empty Denoise or Guidance: the values above. The render '
            "then makes a stem per row and their mix, with a mixer and a ZIP for your DAW."
        )
        stems_on = st.toggle(
            "Render as stems", value=ui.kept("render_stems_on", False), key="render_stems_on"
        )
        st.caption(
            "The song's parts, by their track number in the file (what **Parts** takes; "
            "the voices above list their MIDI channels): "
            + " · ".join(
                f"**{t.key}** {ui.plain(t.name)} (channel {t.channel})"
                for t in song.tracks
                if t.notes
            )
        )
        stems_table = st.data_editor(
            ui.memo(
                "stems_base",
                song.key,
                lambda: pd.DataFrame(
                    ui.stem_rows(song), columns=["name", "parts", "prompt", "denoise", "guidance"]
                ).astype({"denoise": float, "guidance": float}),
            ),
            num_rows="dynamic",
            hide_index=True,
            placeholder="—",  # an empty cell (not "None"); empty numbers: the values above
            key=f"stems_{song.key}",
            column_config={
                "name": st.column_config.TextColumn("Stem", help=describe(Stem, "name").help),
                "parts": st.column_config.TextColumn("Parts", help=describe(Stem, "parts").help),
                "prompt": st.column_config.TextColumn(
                    "Instrument", width="large", help=describe(Stem, "prompt").help
                ),
                "denoise": st.column_config.NumberColumn(
                    "Denoise", min_value=0.05, max_value=1.0, step=0.05
                ),
                "guidance": st.column_config.NumberColumn(
                    "Guidance", min_value=0.0, max_value=30.0, step=0.5
                ),
            },
            column_order=("name", "parts", "prompt", "denoise", "guidance"),
        )
        rows = [
            {k: (None if v != v else v) for k, v in row.items()}  # NaN (empty) as None: JSON
            for row in stems_table.to_dict("records")
            if any(ui.cell_text(row.get(k)) for k in ("name", "parts", "prompt"))
        ]
        if rows != ui.stem_rows(song):
            ui.keep_stem_rows(song, rows)
        try:
            stems = ui.stems_from_rows(rows, song)
        except NeuroChipError as err:
            stems_error = str(err)
            st.error(stems_error)
        else:
            for warning in stems_warnings(song, stems):
                st.warning(warning, icon=":material/warning:")
        if not stems_on:
            stems = None

try:
    settings = ui.current_settings()
    if sections:
        settings = dataclasses.replace(
            settings, sections=sections, transition_s=float(transition_s)
        )
except NeuroChipError as err:
    st.error(str(err))
    st.stop()
st.session_state["last_settings"] = settings
if st.session_state.get("upload_error_look") not in (None, ui.take_look(settings)):
    ui.forget("upload_error", "upload_error_look")  # said; the composer has moved on
    upload_notice.empty()
if opened is not None and ui.take_look(settings) != opened["look"]:
    del st.session_state["opened_take"]  # the composer has moved on from the opened take
    opened_notice.empty()
ui.save_session()
for warning in settings.warnings():
    st.warning(warning, icon=":material/warning:")

engine, model_error = ui.engine()
if engine is None and model_error is None:
    ui.watch_model_load()
elif engine is None:
    st.warning(
        "The Riffusion model is not available, so takes cannot be rendered yet. Spectrogram "
        f"previews still work.\n\n{model_error}",
        icon=":material/cloud_off:",
    )
    st.page_link("views/model.py", label="Model & device settings", icon=":material/memory:")

# --- preview ----------------------------------------------------------------------------------

st.subheader("Preview")
ui.apply_pending_span(song)  # an opened take's span (and preview region), a refresh's span
longest_start = max(0.0, audio.duration_s - PREVIEW_SECONDS)
p_left, p_right = st.columns([4, 1], vertical_alignment="bottom")
ui.clamp_kept("preview_start", longest_start)  # a shorter song than the last one
if longest_start > 0:
    preview_start = p_left.slider(
        "Preview region start (s)",
        0.0,
        longest_start,
        value=float(ui.kept("preview_start", 0.0)),
        step=0.1,
        key="preview_start",
        help=f"The preview renders {PREVIEW_SECONDS:.2f} s (one model window) from here.",
    )
else:  # a slider from 0 to 0 is an error to Streamlit
    preview_start = 0.0
    p_left.caption(
        f"The song is shorter than a preview region ({PREVIEW_SECONDS:.2f} s): "
        "the preview is all of it."
    )
auto = p_right.toggle(
    "Auto preview",
    value=ui.kept("auto_preview", True),
    key="auto_preview",
    help="Re-render the preview whenever a setting changes. Turn off on slow machines.",
)
quick = p_right.toggle(
    "Quick previews",
    value=ui.kept("quick_preview", False),
    key="quick_preview",
    help="About 1.7x as fast: less of the song around the region is rendered, and fewer "
    "passes go into rebuilding the sound from the picture; with a preview VAE chosen on the "
    "Model page, the picture decodes faster too. Still close to what the full render puts "
    "there; not yet checked by ear on the real model, so off by default.",
)
quality = QUICK_PREVIEW if quick else FAITHFUL_PREVIEW
if quick and ui.preview_vae_problem() is not None:
    p_right.caption(":material/warning: The preview VAE did not load: see the Model page.")
preview_now = p_right.button("Preview now", disabled=engine is None)

preview_key = (song.key, settings.to_json(), round(preview_start, 2), quick)
# What the workspace's preview (running or done) was asked for: after a refresh too.
asked = ui.job_info("preview").get("key", st.session_state.get("preview_key"))
if engine is not None and (preview_now or (auto and asked != preview_key)):
    previous = ui.job_of("preview")
    if previous is not None:
        previous.cancel()  # superseded: stop it within one model call

    def preview_work(
        progress,
        cancel,
        engine=engine,
        settings=settings,
        start=preview_start,
        key=preview_key,
        quality=quality,
    ):
        result = engine.preview(
            audio, settings, start, progress=progress, cancel=cancel, quality=quality
        )
        faithfulness = note_faithfulness(result.source, result.audio)
        return ui.Preview(song.key, key, result, faithfulness)

    # Debounced within a burst of changes: the next change cancels this before it starts.
    job = Job(preview_work, delay_s=ui.preview_delay(preview_now), name="preview")
    ui.start_job("preview", job, "the preview", key=preview_key)  # drawn the moment it is ready
    st.session_state["preview_key"] = preview_key

preview_job = ui.job_of("preview")


# Polls only the preview's progress, slowing down while it does not change; a full run (this
# page) draws the finished preview. See ui.watch_job.
@st.fragment(run_every=ui.poll_every("preview", preview_job))
def preview_progress() -> None:
    ui.watch_job("preview", "Preview")


preview_progress()


def region_figure():
    try:
        picture, picture_start = region_picture(audio, preview_start)
    except NeuroChipError:
        return None  # a region too short to draw
    return spectrogram_figure({"input": picture}, picture_start, bars_s=bars_s)


if preview_job is not None and preview_job.state == "done" and preview_job.result is not None:
    ui.keep_preview(preview_job.result)
shown = ui.last_preview(song.key)

# One container, whatever it holds: the render fragment below keeps its place in the page (a
# fragment's id is its place), so its timer never points at a fragment that is gone.
with st.container():
    if preview_job is not None and preview_job.state == "failed":
        st.error(preview_job.error)
    if shown is not None:
        result = shown.render
        if shown.key != preview_key:
            running = preview_job is not None and not preview_job.finished
            st.caption(
                ":material/history: Out of date: made with earlier settings"
                + (" while the new preview renders." if running else ".")
            )
        elif result.seconds is not None:
            tiny = " · decoded by the preview VAE" if result.info.get("preview_vae") else ""
            st.caption(f"Previewed in {result.seconds:.2f} s{tiny}")
        # The previous preview stays playable while the next one renders: A/B against the
        # sketch at the same position. Made once per preview, not on every run of the page.
        sources = ui.memo(
            "preview_ab",
            shown,
            lambda: {"Sketch": ui.wav_bytes(result.source), "Take": ui.wav_bytes(result.audio)},
        )
        ab_player(sources, key="preview_ab", offset_s=result.start_s)
        faith = shown.faithfulness
        st.markdown(
            ui.notes_kept_line(faith, result.start_s),
            help="Note faithfulness: how well the take keeps the sketch's notes (chroma "
            f"cosine similarity, 0-1). ~1: every note kept; under {DRIFTING:.2f}: other notes. "
            "Red bars (under that, or well below the take's own score): the places to listen "
            "to first.",
        )
        # Made once per preview (and bar grid), not on every run of the page.
        figures = ui.memo("preview_figures", shown, dict)
        if bars_s_key not in figures:
            figures[bars_s_key] = (
                faithfulness_figure(
                    faith.times_s, faith.strip, faith.ends_s, faith.score, result.start_s, bars_s
                ),
                spectrogram_figure(
                    {"input": result.input_image, "output": result.output_image},
                    result.start_s,
                    bars_s=bars_s,
                ),
            )
        strip_figure, figure = figures[bars_s_key]
        st.plotly_chart(strip_figure, width="stretch", key="preview_faith_chart")
        st.plotly_chart(figure, width="stretch", key="preview_chart")
    else:
        # No take yet (or no model): show what the model would see of the region.
        figure = ui.memo(
            "region_figure", (song.key, round(preview_start, 2), bars_s_key), region_figure
        )
        if figure is not None:
            st.plotly_chart(figure, width="stretch", key="preview_chart")

# --- variation grid ---------------------------------------------------------------------------


def parse_values(text: str, kind: type, what: str) -> list:
    values = [v for v in text.replace(";", ",").split(",") if v.strip()]
    try:
        return [kind(v.strip()) for v in values]
    except ValueError:
        raise NeuroChipError(
            f"{what}: write numbers separated by commas, e.g. "
            + ("1, 2, 3" if kind is int else "0.25, 0.35, 0.45")
        ) from None


def default_values(axis: str, settings) -> str:
    if axis == "denoise":
        values = [settings.denoise - 0.1, settings.denoise, settings.denoise + 0.1]
        return ", ".join(f"{min(0.95, max(0.05, v)):.2f}" for v in values)
    values = [settings.guidance - 2, settings.guidance, settings.guidance + 2]
    return ", ".join(f"{min(20.0, max(1.0, v)):g}" for v in values)


st.subheader("Variation grid")
st.caption(
    "The preview region across several seeds and denoise (or guidance) values, rendered "
    "together in one pass: listen, compare the notes kept, and *Use this* on the best."
)
grid_job = ui.job_of("grid")
grid_busy = grid_job is not None and not grid_job.finished
if grid_job is not None and grid_job.state == "done" and grid_job.result.song_key == song.key:
    ui.keep_grid(grid_job.result)
shown_grid = ui.last_grid(song.key)
if shown_grid is not None and st.session_state.get("_grid_fields_of") is not shown_grid:
    # A grid came in (rendered, or brought back by a refresh): the fields say what it is.
    st.session_state["_grid_fields_of"] = shown_grid
    st.session_state["grid_seeds"] = ", ".join(str(seed) for seed in shown_grid.grid.rows)
    if shown_grid.grid.column_axis is not None:
        st.session_state["grid_axis"] = shown_grid.grid.column_axis
        st.session_state[f"grid_values_{shown_grid.grid.column_axis}"] = ", ".join(
            f"{value:g}" for value in shown_grid.grid.columns
        )
g1, g2, g3, g4 = st.columns([3, 2, 3, 2], vertical_alignment="bottom")
# Until typed in, the fields follow the settings: the seed and its next two, the denoise (or
# guidance) and a step either side.
ui.follow("grid_seeds", ", ".join(str((settings.seed + k) % 2**32) for k in range(3)))
seeds_text = g1.text_input(
    "Seeds",
    value=ui.kept("grid_seeds", ""),
    key="grid_seeds",
    help="Up to 4 seeds, separated by commas: one row each.",
)
axes = ["denoise", "guidance"]
axis = g2.selectbox(
    "Across", axes, index=axes.index(ui.kept("grid_axis", "denoise")), key="grid_axis"
)
ui.follow(f"grid_values_{axis}", default_values(axis, settings))
values_text = g3.text_input(
    f"{axis.capitalize()} values",
    value=ui.kept(f"grid_values_{axis}", ""),
    key=f"grid_values_{axis}",
    help="Up to 4 values, separated by commas: one column each.",
)
# What a grid answers for besides its settings (those are its base; see grid_changes).
grid_key = (song.key, round(preview_start, 2), quick)
if g4.button("Render the grid", disabled=engine is None or grid_busy, icon=":material/grid_view:"):
    try:
        seeds = parse_values(seeds_text, int, "Seeds")
        values = parse_values(values_text, float, f"{axis.capitalize()} values")
        grid = variation_grid(settings, seeds, **{axis: values})
    except NeuroChipError as err:
        st.session_state["grid_error"] = str(err)
    else:
        st.session_state.pop("grid_error", None)

        def grid_work(
            progress,
            cancel,
            engine=engine,
            grid=grid,
            start=preview_start,
            quality=quality,
            key=grid_key,
        ):
            variations = render_variations(
                engine,
                audio,
                grid,
                region=(start, PREVIEW_SECONDS),
                progress=progress,
                cancel=cancel,
                quality=quality,
            )
            return ui.GridPreview(song.key, key, grid, variations)

        ui.start_job("grid", Job(grid_work, name="grid"), "the variation grid", song_key=song.key)
        st.rerun()
if st.session_state.get("grid_error"):
    st.error(st.session_state["grid_error"], icon=":material/error:")


@st.fragment(run_every=ui.poll_every("grid", grid_job))
def grid_progress() -> None:
    job = ui.watch_job("grid", "Variation grid")
    if job is not None:
        st.button("Cancel grid", key="cancel_grid", icon=":material/close:", on_click=job.cancel)


grid_progress()


def use_variation(chosen: dict, cell) -> None:
    ui.set_settings(**chosen)  # the cell's seed and value; a prompt typed since stays
    if not grid_changes(shown_grid):
        # The grid answers for these settings, region and quality: the cell is the preview
        # they would make, so it becomes the preview instead of being rendered again.
        used = settings.replace(**chosen)
        key = (song.key, used.to_json(), round(preview_start, 2), quick)
        running = ui.job_of("preview")
        if running is not None:
            running.cancel()
        ui.board().forget("preview")
        ui.keep_preview(ui.Preview(song.key, key, cell.render, cell.faithfulness))
        st.session_state["preview_key"] = key


def grid_changes(shown) -> list[str]:
    """What moved on since ``shown`` was rendered: settings by label, then the region."""
    changes = [f"*{label}*" for label in shown.grid.changed_settings(settings)]
    made_for = shown.key if isinstance(shown.key, tuple) and len(shown.key) == 3 else (None,) * 3
    _, start, was_quick = made_for
    if start != grid_key[1]:
        changes.append("the preview region")
    if was_quick != grid_key[2]:
        changes.append("*Quick previews*")
    return changes


if grid_job is not None and grid_job.state == "failed":
    st.error(grid_job.error)
if shown_grid is not None:
    grid, variations = shown_grid.grid, shown_grid.variations
    changes = grid_changes(shown_grid)
    if changes:
        st.caption(
            f":material/history: Out of date: rendered before {ui.join_words(changes)} "
            + ("changed; the new grid is rendering." if grid_busy else "changed.")
            + " *Render the grid* again to hear the cells as things stand."
        )
    elif grid_busy:
        st.caption(":material/history: The last grid, while the new one renders.")
    best = best_variations(variations)
    rows, columns = grid.shape
    thumbs = ui.memo(
        "grid_thumbs",
        shown_grid,
        lambda: [spectrogram_thumbnail(v.render.output_image, 240, 64) for v in variations],
    )
    for row in range(rows):
        cells = st.columns(columns)
        for column in range(columns):
            i = grid.index(row, column)
            variation = variations[i]
            with cells[column].container(border=True):
                kept = f"notes kept {variation.faithfulness.score:.2f}"
                if i in best:
                    kept += " · best" if len(best) == 1 else " · tied best"
                chosen = grid.chosen(i)
                if all(getattr(settings, name) == value for name, value in chosen.items()):
                    kept += " · in use"
                st.markdown(f"**{variation.label}**  \n:small[{kept}]")
                st.image(thumbs[i], width="stretch")
                st.audio(
                    ui.memo(
                        f"grid_wav_{i}",
                        shown_grid,
                        lambda v=variation: ui.wav_bytes(v.render.audio),
                    )
                )
                st.button(
                    "Use this",
                    key=f"use_cell_{i}",
                    on_click=use_variation,
                    args=(chosen, variation),
                    help=f"Take this cell's {ui.join_words(list(chosen))} into the settings "
                    "above; the rest stay as they are. The preview follows.",
                    width="stretch",
                )
    labels = [v.label for v in variations]
    compared = st.multiselect(
        "Compare in the player (up to 3 cells, with the sketch)",
        labels,
        default=[labels[i] for i in best[:3]],
        max_selections=3,
        key="grid_compare",
    )
    if compared:
        chosen = [variations[labels.index(label)] for label in compared]
        sources = ui.memo(
            "grid_ab",
            (shown_grid, tuple(compared)),
            lambda: (
                {"Sketch": ui.wav_bytes(chosen[0].render.source)}
                | {v.label: ui.wav_bytes(v.render.audio) for v in chosen}
            ),
        )
        ab_player(sources, key="grid_ab", offset_s=chosen[0].render.start_s, height=120)

# --- full render ------------------------------------------------------------------------------

st.subheader("Render the song")
r1, r2, r3 = st.columns(3)
# Open and a refresh set these through the session state; each widget gets that value as its
# default too (see ui.kept).
latest_start = max(0.0, audio.duration_s - 0.5)
ui.clamp_kept("render_start", latest_start)
start_s = r1.number_input(
    "Start (s)",
    0.0,
    latest_start,
    value=float(ui.kept("render_start", 0.0)),
    step=1.0,
    key="render_start",
)
duration_key = f"render_duration_{song.key}_{start_s}"
longest = max(0.5, audio.duration_s - start_s)
duration_s = r2.number_input(
    f"Duration (s) · the song is {audio.duration_s:.2f} s",
    0.5,
    longest,
    value=min(longest, float(ui.kept(duration_key, longest))),
    step=1.0,
    key=duration_key,
    help="Defaults to the whole song from Start.",
)
st.session_state["render_span"] = [song.key, float(start_s), float(duration_s)]
ui.save_session()  # the span survives a refresh too
about = {name: describe(TakeSetOptions, name) for name in ("stereo_pair", "compare")}
with r3:
    as_stems = song.midi is not None and st.session_state.get("render_stems_on", False)
    pair = st.checkbox(
        about["stereo_pair"].label,
        value=ui.kept("render_pair", True),
        key="render_pair",
        help=about["stereo_pair"].help
        + (" With stems: each stem is a stereo pair of its own." if as_stems else ""),
    )
    compare = (
        st.checkbox(
            about["compare"].label,
            value=ui.kept("render_compare", False),
            key="render_compare",
            help=about["compare"].help + (" (Not with stems.)" if as_stems else ""),
            disabled=as_stems,
        )
        and not as_stems
    )
    loop_about = describe(RenderSettings, "loop")
    loop = st.checkbox(
        loop_about.label,
        value=ui.kept("render_loop", False),
        key="render_loop",
        help=loop_about.help,
    )
    fade_at = st.number_input(
        describe(TakeSetOptions, "compare_at_s").label,
        0.0,
        float(duration_s),
        float(duration_s) / 3,
        step=1.0,
        key=f"render_fade_at_{song.key}_{duration_s}",  # a third of this span, not the last
        disabled=not compare,
        help=describe(TakeSetOptions, "compare_at_s").help,
    )

full = dataclasses.replace(
    settings, start_s=float(start_s), duration_s=float(duration_s), loop=bool(loop)
)
if engine is not None:
    # From the time each stage took in this engine's previews: this machine, this model.
    planned = [full, TakeSetOptions().take_b(full)] if pair else [full]
    if stems:
        planned = [stem.settings_for(full) for stem in stems]
        planned += [TakeSetOptions().take_b(take) for take in planned] if pair else []
    estimate = engine.estimate_s(audio, planned)
    if estimate is not None and full.loop and full.start_s > 0:  # and its intro
        intro = [
            dataclasses.replace(take, start_s=0.0, duration_s=full.start_s, loop=False)
            for take in planned
        ]
        estimate += engine.estimate_s(audio, intro) or 0.0
    st.caption(
        f"About {ui.format_seconds(estimate)} on this machine, going by your previews."
        if estimate is not None
        else "How long a render takes here is estimated after the first preview."
    )

render_job = ui.job_of("render")  # the workspace's: after a refresh or a page trip too
busy = render_job is not None and not render_job.finished
# What keeps Render from starting, said beside it (the tables may be folded away).
waiting = [f"the Sections table: {timeline_error}"] if timeline_error else []
if as_stems and stems_error:
    waiting.append(f"the Stems map: {stems_error}")
for reason in waiting:
    st.caption(f":orange[Render waits for {reason}]")
if as_stems and stems:
    st.caption(
        f"{len(stems)} stems: "
        + " · ".join(f"{ui.plain(stem.name)} → *{ui.plain(stem.prompt)}*" for stem in stems)
    )
if st.button(
    "Render stems" if as_stems else "Render",
    type="primary",
    disabled=engine is None or busy or bool(waiting) or (as_stems and not stems),
    icon=":material/graphic_eq:",
):
    options = TakeSetOptions(
        stereo_pair=pair,
        width=float(st.session_state["w_width"]),
        compare=compare,
        # Inside the span, whatever the number box was left at.
        compare_at_s=min(float(fade_at), float(duration_s) * 0.99) if compare else None,
    )

    def render_work(
        progress, cancel, engine=engine, full=full, options=options, song=song, stems=stems
    ):
        # Each take is kept in the library the moment it exists: a later cancel, refresh or
        # crash cannot lose it.
        if stems:
            made = render_stems(
                engine,
                song,
                full,
                stems,
                library=ui.library(),
                progress=progress,
                cancel=cancel,
                pair_width=options.width if options.stereo_pair else None,
            )
            return {"stems": made.saved["mix"]}
        takes = render_take_set(
            engine, song, full, options, library=ui.library(), progress=progress, cancel=cancel
        )
        return takes.saved

    ui.start_job(
        "render",
        Job(render_work, name="render"),
        f"the render of {song.name}",
        song_key=song.key,
        # The span as rendered, for its results after the sliders have moved on.
        span=(full.start_s, full.duration_s),
    )
    st.rerun()


@st.fragment(run_every=ui.poll_every("render", render_job))
def render_progress() -> None:
    job = ui.watch_job("render", "Rendering")
    if job is not None and st.button("Cancel render", icon=":material/cancel:"):
        job.cancel()


render_progress()


def render_results(result: dict[str, str], start_s: float, duration_s: float) -> None:
    """A render's takes (or its stems' mixer) to hear and download."""
    library = ui.library()
    if "stems" in result:
        stem_mixer(result["stems"], song)
        return
    fmt = (
        st.segmented_control(
            "Download as", [".wav", ".flac", ".mp3"], default=".wav", key="download_format"
        )
        or ".wav"
    )
    looped = result.get("pair") or result.get("A")
    try:
        loop_take = library.get(looped) if looped is not None else None
    except NeuroChipError:
        loop_take = None  # deleted on the Takes page meanwhile
    if loop_take is not None and is_loop(loop_take.metadata):
        # Hear it on repeat: the loop point should pass unnoticed.
        st.caption("A seamless loop: it plays on repeat here, as in the game.")
        ab_player(
            ui.memo(
                "loop_ab",
                looped,
                lambda: {
                    "Looped take": ui.wav_bytes(library.load_audio(looped)),
                    "Sketch": ui.wav_bytes(audio.span(start_s, duration_s).to_mono()),
                },
            ),
            key="loop_ab",
            offset_s=start_s,
        )
    for name in ("pair", "A", "B", "compare", "intro"):
        if name not in result:
            continue
        take_id = result[name]
        try:
            take = library.get(take_id)
        except NeuroChipError:
            continue  # deleted on the Takes page meanwhile
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        c1.markdown(f"**{ROLES[name]}** · {take.name}")
        c1.audio(str(take.audio_path))
        data, file_name = ui.export_take(take_id, fmt)
        c2.download_button(
            "Download",
            data,
            file_name=file_name,
            key=f"dl_{take_id}",
            icon=":material/download:",
            width="stretch",
        )


# The last render of this song stays on the page across a refresh or a restart (kept with
# the session): its takes, or its stems' mixer.
kept_render = st.session_state.get("last_render")
rendered = ui.job_info("render")
if render_job is not None and rendered.get("song_key") != song.key:
    render_job = None  # another song's render: its takes are on the Takes page
if render_job is not None and render_job.finished and render_job.state == "done":
    rendered_span = rendered.get("span") or (full.start_s, full.duration_s)
    done = {
        "key": song.key,
        "result": dict(render_job.result),
        "start_s": rendered_span[0],
        "duration_s": rendered_span[1],
        "seconds": round(render_job.elapsed_s(), 1),
    }
    if kept_render != done:
        st.session_state["last_render"] = kept_render = done
        ui.save_session()
if render_job is not None and render_job.finished and render_job.state != "done":
    if render_job.state == "cancelled":
        st.info("Render cancelled. Takes that had finished are kept on the Takes page.")
    else:
        st.error(render_job.error)
elif isinstance(kept_render, dict) and kept_render.get("key") == song.key:
    st.success(
        f"Rendered in {ui.format_seconds(kept_render.get('seconds'))}. "
        "Every take is kept on the Takes page."
    )
    render_results(
        dict(kept_render.get("result") or {}),
        float(kept_render.get("start_s") or 0.0),
        kept_render.get("duration_s"),
    )
