"""Arrange, third part: the preview of one model window, re-rendered as settings change."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import state, ui
from app.abplayer import ab_player
from app.arrange import Page
from app.figures import DRIFTING, faithfulness_figure, spectrogram_figure
from app.piano_roll import draw_piano_roll
from neurochip.engine import FAITHFUL_PREVIEW, PREVIEW_SECONDS, QUICK_PREVIEW, region_picture
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import span_faithfulness
from neurochip.jobs import Job


def draw(page: Page) -> None:
    """The preview's controls, its job and the last preview; sets the page's region."""
    st.subheader("Preview")
    song, audio, engine = page.song, page.audio, page.engine
    longest_start = max(0.0, audio.duration_s - PREVIEW_SECONDS)
    p_left, p_right = st.columns([4, 1], vertical_alignment="bottom")
    if longest_start > 0:
        page.preview_start = state.slider(
            p_left,
            "song.preview_start_s",
            "Preview region start (s)",
            0.0,
            longest_start,
            0.1,
            help=f"The preview renders {PREVIEW_SECONDS:.2f} s (one model window) from here.",
        )
    else:  # a slider from 0 to 0 is an error to Streamlit
        p_left.caption(
            f"The song is shorter than a preview region ({PREVIEW_SECONDS:.2f} s): "
            "the preview is all of it."
        )
    auto = state.toggle(
        p_right,
        "view.auto_preview",
        "Auto preview",
        help="Re-render the preview whenever a setting changes. Turn off on slow machines.",
    )
    page.quick = state.toggle(
        p_right,
        "view.quick_preview",
        "Quick previews",
        help="About 1.7x as fast: less of the song around the region is rendered, and fewer "
        "passes go into rebuilding the sound from the picture; with a preview VAE chosen on "
        "the Model page, the picture decodes faster too. Still close to what the full render "
        "puts there; not yet checked by ear on the real model, so off by default.",
    )
    if page.quick and ui.preview_vae_problem() is not None:
        p_right.caption(":material/warning: The preview VAE did not load: see the Model page.")
    preview_now = p_right.button("Preview now", disabled=engine is None)

    key = preview_key(page)
    # What the workspace's preview (running or done) was asked for: after a refresh too.
    asked = ui.job_info("preview").get("key", st.session_state.get("preview_key"))
    if engine is not None and (preview_now or (auto and asked != key)):
        start_preview(page, key, preview_now)
    job = ui.job_of("preview")

    # Polls only the preview's progress, slowing down while it does not change; a full run
    # (this page) draws the finished preview. See ui.watch_job.
    @st.fragment(run_every=ui.poll_every("preview", job))
    def preview_progress() -> None:
        ui.watch_job("preview", "Preview")

    preview_progress()
    if job is not None and job.state == "done" and job.result is not None:
        ui.keep_preview(job.result)
    # One container, whatever it holds: the render fragment below keeps its place in the
    # page (a fragment's id is its place), so its timer never points at a fragment that is gone.
    with st.container():
        if job is not None and job.state == "failed":
            st.error(job.error)
        shown = ui.last_preview(song.key)
        if shown is not None:
            last_preview(page, shown, key, running=job is not None and not job.finished)
        else:  # no take yet (or no model): what the model would see of the region
            figure = ui.memo(
                "region_figure",
                (song.key, round(page.preview_start, 2), tuple(page.bars_s)),
                lambda: region_figure(page),
            )
            if figure is not None:
                st.plotly_chart(figure, width="stretch", key="preview_chart")


def preview_key(page: Page, settings=None) -> tuple:
    """What a preview answers for: the song, settings, region and quality."""
    settings = settings or page.settings
    return (page.song.key, settings.to_json(), round(page.preview_start, 2), page.quick)


def start_preview(page: Page, key: tuple, now: bool) -> None:
    previous = ui.job_of("preview")
    if previous is not None:
        previous.cancel()  # superseded: stop it within one model call
    engine, song, audio, song_key = page.engine, page.song, page.audio, page.song.key
    settings, start, song_bars = page.settings, page.preview_start, list(page.bars_s)
    quality = QUICK_PREVIEW if page.quick else FAITHFUL_PREVIEW

    def work(progress, cancel):
        result = engine.preview(
            audio, settings, start, progress=progress, cancel=cancel, quality=quality
        )
        # Notes counted against the sketch's own (a MIDI file's notes; an audio sketch's
        # transcription, made once), by the song's bars: here, off the page's thread.
        faithfulness = span_faithfulness(
            song, result.source, result.audio, result.start_s, song_bars
        )
        return ui.Preview(song_key, key, result, faithfulness)

    # Debounced within a burst of changes: the next change cancels this before it starts.
    job = Job(work, delay_s=ui.preview_delay(now), name="preview")
    ui.start_job("preview", job, "the preview", key=key)  # drawn the moment it is ready
    st.session_state["preview_key"] = key


def region_figure(page: Page):
    try:
        picture, picture_start = region_picture(page.audio, page.preview_start)
    except NeuroChipError:
        return None  # a region too short to draw
    return spectrogram_figure({"input": picture}, picture_start, bars_s=page.bars_s)


def last_preview(page: Page, shown, key: tuple, running: bool) -> None:
    """The last finished preview, A/B against the sketch, with its notes kept."""
    result = shown.render
    if shown.key != key:
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
    st.markdown(ui.notes_kept_line(faith, result.start_s), help=METER_HELP)
    # Made once per preview (and bar grid), not on every run of the page.
    figures = ui.memo("preview_figures", shown, dict)
    bars_key = tuple(page.bars_s)
    if bars_key not in figures:
        figures[bars_key] = (
            strip_figure(faith, result.start_s, page.bars_s),
            spectrogram_figure(
                {"input": result.input_image, "output": result.output_image},
                result.start_s,
                bars_s=page.bars_s,
            ),
        )
    strip, figure = figures[bars_key]
    st.plotly_chart(strip, width="stretch", key="preview_faith_chart")
    st.plotly_chart(figure, width="stretch", key="preview_chart")
    draw_piano_roll(
        faith.notes, result.start_s, page.bars_s, faith.duration_s, "preview_roll", figures
    )


METER_HELP = (
    "**Notes kept**: the share of the sketch's notes the take plays (same semitone, starting "
    "within 50 ms; how long it holds them does not count). *Lost* notes are the sketch's "
    "the take does not play, *extra* ones the take's own. **Chroma**: how alike the pitch "
    f"classes sound (cosine similarity, 0-1; under {DRIFTING:.2f}: other notes), which a "
    "pad of the right chords also scores well on. Red bars in the strip (low, or well below "
    "the take's own score): the places to listen to first."
)


def strip_figure(faith, start_s: float, bars_s):
    """The strip per bar (or second): notes kept where they were counted, else chroma."""
    notes = faith.notes
    if notes is None:
        return faithfulness_figure(
            faith.times_s, faith.strip, faith.ends_s, faith.score, start_s, bars_s, "chroma"
        )
    ends = np.append(notes.times_s[1:], faith.duration_s)
    return faithfulness_figure(notes.times_s, notes.strip, ends, notes.score, start_s, bars_s)
