"""Arrange, last part: render the song (a take, a stereo pair, stems), and its results."""

from __future__ import annotations

import dataclasses

import streamlit as st

from app import state, ui
from app.abplayer import ab_player
from app.arrange import Page
from app.arrange.settings import Tables
from app.mixer import stem_mixer
from neurochip.arrangement import estimate_s, render
from neurochip.errors import NeuroChipError
from neurochip.jobs import Job
from neurochip.kinds import cpu_advice
from neurochip.library.metadata import is_loop
from neurochip.model_spec import STABLE_AUDIO_3_SMALL_ID
from neurochip.settings import RenderSettings, TakeSetOptions, describe
from neurochip.takeset import ROLES


def draw(page: Page, tables: Tables) -> None:
    st.subheader("Render the song")
    full, options = span_and_options(page, tables)
    expected_s = estimate(page, full, options, tables)
    job = ui.job_of("render")  # the workspace's: after a refresh or a page trip too
    busy = job is not None and not job.finished
    # What keeps Render from starting, said beside it (the tables may be folded away).
    for reason in tables.waiting:
        st.caption(f":orange[Render waits for {reason}]")
    stems = tables.stems
    if tables.as_stems and stems:
        st.caption(
            f"{len(stems)} stems: "
            + " · ".join(f"{ui.plain(stem.name)} → *{ui.plain(stem.prompt)}*" for stem in stems)
        )
    if st.button(
        "Render stems" if tables.as_stems else "Render",
        type="primary",
        disabled=page.engine is None
        or busy
        or bool(tables.waiting)
        or (tables.as_stems and not stems),
        icon=":material/graphic_eq:",
    ):
        start_render(page, full, options, stems, expected_s)
        st.rerun()

    ui.job_progress("render", "Rendering", "Cancel render")
    results(page, job, full)


def span_and_options(page: Page, tables: Tables) -> tuple[RenderSettings, TakeSetOptions]:
    """The span, the take set's choices and the loop, from their widgets."""
    duration = page.audio.duration_s
    r1, r2, r3 = st.columns(3)
    latest_start = max(0.0, duration - 0.5)
    start_s = state.number(r1, "song.start_s", "Start (s)", 0.0, latest_start, 1.0)
    longest = max(0.5, duration - start_s)
    duration_s = state.number(
        r2,
        "song.duration_s",
        f"Duration (s) · the song is {duration:.2f} s",
        0.5,
        longest,
        1.0,
        value=longest,
        help="Defaults to the whole song from Start.",
    )
    about = {name: describe(TakeSetOptions, name) for name in ("stereo_pair", "compare")}
    with r3:
        pair = state.toggle(
            st,
            "view.stereo_pair",
            about["stereo_pair"].label,
            checkbox=True,
            help=about["stereo_pair"].help
            + (" With stems: each stem is a stereo pair of its own." if tables.as_stems else ""),
        )
        compare = (
            state.toggle(
                st,
                "view.compare",
                about["compare"].label,
                checkbox=True,
                help=about["compare"].help + (" (Not with stems.)" if tables.as_stems else ""),
                disabled=tables.as_stems,
            )
            and not tables.as_stems
        )
        loop_about = describe(RenderSettings, "loop")
        loop = state.toggle(st, "song.loop", loop_about.label, checkbox=True, help=loop_about.help)
        fade_at = state.number(
            st,
            "song.compare_at_s",
            describe(TakeSetOptions, "compare_at_s").label,
            0.0,
            float(duration_s),
            1.0,
            value=float(duration_s) / 3,
            disabled=not compare,
            help=describe(TakeSetOptions, "compare_at_s").help,
        )
    full = dataclasses.replace(
        page.settings, start_s=float(start_s), duration_s=float(duration_s), loop=bool(loop)
    )
    options = TakeSetOptions(
        stereo_pair=pair,
        width=float(state.composer().settings.width),
        compare=compare,
        # Inside the span, whatever the number box was left at.
        compare_at_s=min(float(fade_at), float(duration_s) * 0.99) if compare else None,
    )
    return full, options


def estimate(
    page: Page, full: RenderSettings, options: TakeSetOptions, tables: Tables
) -> float | None:
    """How long the render will take, from the time each stage took in this engine's
    previews: this machine, this model (said, and returned; None before a preview)."""
    if page.engine is None:
        return None
    # What the render will make (take B, each stem, the intro before a loop): the library's say.
    seconds = estimate_s(page.engine, page.song, full, options, tables.stems or None)
    st.caption(
        f"About {ui.format_seconds(seconds)} on this machine, going by your previews."
        if seconds is not None
        else "How long a render takes here is estimated after the first preview."
    )
    small = ui.model_choice().source == STABLE_AUDIO_3_SMALL_ID
    if page.engine.device.type == "cpu" and not small and (seconds is None or seconds > 60):
        st.caption(cpu_advice())  # what a CPU user should pick, measured
    return seconds


def start_render(
    page: Page, full: RenderSettings, options: TakeSetOptions, stems, expected_s: float | None
) -> None:
    engine, song = page.engine, page.song

    def work(progress, cancel):
        # Each take is kept in the library the moment it exists: a later cancel, refresh or
        # crash cannot lose it.
        made = render(
            engine,
            song,
            full,
            options,
            stems or None,
            library=ui.library(),
            progress=progress,
            cancel=cancel,
        )
        return {"stems": made.saved["mix"]} if stems else made.saved

    job = Job(work, name="render")
    job.expected_s = expected_s  # a time left while the sketch is read, before any progress
    ui.start_job(
        "render",
        job,
        f"the render of {song.name}",
        song_key=song.key,
        # The span as rendered, for its results after the sliders have moved on.
        span=(full.start_s, full.duration_s),
    )


def results(page: Page, job, full: RenderSettings) -> None:
    """The last render of this song: kept in the session, so it stays on the page across a
    refresh or a restart (its takes, or its stems' mixer)."""
    session = state.composer()
    rendered = ui.job_info("render")
    if job is not None and rendered.get("song_key") != page.song.key:
        job = None  # another song's render: its takes are on the Takes page
    if job is not None and job.finished and job.state == "done":
        span = rendered.get("span") or (full.start_s, full.duration_s)
        done = {
            "key": page.song.key,
            "result": dict(job.result),
            "start_s": span[0],
            "duration_s": span[1],
            "seconds": round(job.elapsed_s(), 1),
        }
        if session.last_render != done:
            session.last_render = done
            state.save()
    kept = session.last_render
    if job is not None and job.finished and job.state != "done":
        if job.state == "cancelled":
            st.info("Render cancelled. Takes that had finished are kept on the Takes page.")
        else:
            st.error(job.error)
    elif isinstance(kept, dict) and kept.get("key") == page.song.key:
        st.success(
            f"Rendered in {ui.format_seconds(kept.get('seconds'))}. "
            "Every take is kept on the Takes page."
        )
        takes(
            page,
            dict(kept.get("result") or {}),
            float(kept.get("start_s") or 0.0),
            kept.get("duration_s"),
        )


def takes(page: Page, result: dict[str, str], start_s: float, duration_s) -> None:
    """A render's takes (or its stems' mixer) to hear and download."""
    library = ui.library()
    if "stems" in result:
        stem_mixer(result["stems"], page.song)
        return
    fmt = state.segmented(st, "view.download_format", "Download as", [".wav", ".flac", ".mp3"])
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
                    "Sketch": ui.wav_bytes(page.audio.span(start_s, duration_s).to_mono()),
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
