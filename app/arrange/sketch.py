"""Arrange, first part: the sketch (upload, demo, loading), its player, voices and bars."""

from __future__ import annotations

import streamlit as st

from app import song as songs
from app import state, ui
from app.arrange import Page
from neurochip.bars import MAX_BPM, MIN_BPM, BarGrid
from neurochip.errors import NeuroChipError
from neurochip.sketch import Sketch
from neurochip.synth import DRUMS, VOICES


def draw() -> Page:
    """The sketch and what the composer set on it; stops the page while there is none."""
    # First: a file that failed to load empties the uploader (a new key), so its box never
    # shows that file while the song before it stays loaded.
    songs.adopt_loaded_sketch()
    uploaded = st.file_uploader(
        "Your sketch",
        type=songs.UPLOAD_SUFFIXES,
        help="WAV, MP3, FLAC, OGG or a MIDI file (played by the chip synth); with ffmpeg also "
        "M4A, tracker modules (MOD, S3M, XM, IT) and chip rips (NSF, SPC, VGM, GBS, ...).",
        key=f"sketch_upload_{st.session_state.get('upload_round', 0)}",
    )
    if uploaded is not None and st.session_state.get("upload_id") != uploaded.file_id:
        songs.accept_upload(uploaded)
    if st.button(
        "Try the demo: Greensleeves as a chip-tune MIDI sketch", icon=":material/music_note:"
    ):
        songs.open_demo()
        # The uploader empties (a new key): the same file uploaded again opens again.
        st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
        st.session_state.pop("upload_id", None)
        st.session_state.pop("upload_error", None)
        st.rerun()
    load_job = st.session_state.get("load_job")

    # Reading a file (a MIDI file is synthesised: seconds) runs as a job; the song already
    # loaded stays below, playable, until the new one is ready.
    ui.job_progress("load", st.session_state.get("load_label", "Loading"))
    notice = st.empty()
    if st.session_state.get("upload_error"):
        notice.error(st.session_state["upload_error"], icon=":material/error:")
    opened = st.session_state.get("opened_take")  # said until a setting moves on from it
    opened_notice = st.empty()
    if opened is not None:
        opened_notice.info(opened["text"], icon=":material/file_open:")

    song = songs.current_sketch()
    if song is None:
        if load_job is None or load_job.finished:
            st.info(
                "Drop a WAV, MP3, MIDI or chip file above to begin, or try the demo.",
                icon=":material/upload_file:",
            )
        st.stop()  # (while a file loads, its progress is above)
    session = state.composer()
    if session.song_key != song.key:  # a song opened some other way (a test, an old state)
        session.song_key = song.key
        state.save()
    player(song)
    # One keyed container per song: while another song loads, nothing of this one's parts
    # (its bars, its voices) stands in the other's place.
    with st.container(key=f"song_{song.key}"):
        if song.tracks:
            voices(song)
        if song.midi is None:
            bars(song)
    return Page(song, songs.song_bars(song) or [], notices=(notice, opened_notice))


def player(song: Sketch) -> None:
    audio = song.audio
    st.audio(ui.memo("sketch_wav", song.key, lambda: ui.wav_bytes(audio)), format="audio/wav")
    resampled = (
        f"(resampled from the file's {song.file_rate} Hz) "
        if song.file_rate and song.file_rate != audio.sample_rate
        else ""
    )
    st.caption(
        # The seconds too: the span and preview fields below count in them.
        f"**{song.name}** · {ui.format_seconds(audio.duration_s)} ({audio.duration_s:.2f} s) · "
        f"{'stereo' if audio.channels == 2 else 'mono'} · {audio.sample_rate} Hz {resampled}"
        "(rendered as a mono mix; use the stereo pair for width)"
    )


def voices(song: Sketch) -> None:
    """A MIDI sketch's chip voice per part: a change synthesises the sketch again."""
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
                key=voice_key(song, track),
                label_visibility="collapsed",
            )
        defaults = {t.key: t.voice for t in song.tracks}
        overrides = {k: v for k, v in chosen.items() if v != defaults[k]}
        if overrides != song.voices and songs.loading_voices() != (song.key, overrides):
            songs.change_voices(song, overrides)
            st.rerun()  # shows its progress at the top, with the song as it was below


def voice_key(song: Sketch, track) -> str:
    """A part's voice picker, a view: a failed voice change shows what plays again."""
    key = f"voice_{song.key}_{track.key}"
    state.view(key, lambda k=track.key, v=track.voice: playing_voice(k, v))
    return key


def playing_voice(track_key: str, default: str) -> str:
    song = songs.current_sketch()
    return song.voices.get(track_key, default) if song is not None else default


def grid_field(name: str):
    """A field of the open song's bar grid, as its number box shows it."""
    song = songs.current_sketch()
    grid = song.bar_grid if song is not None else None
    defaults = {"bpm": 120.0, "downbeat_s": 0.0, "beats_per_bar": 4}
    value = getattr(grid, name) if grid is not None else defaults[name]
    return int(value) if name == "beats_per_bar" else float(value)


def bars(song: Sketch) -> None:
    """An audio song's bar grid: found by beat tracking, or as the composer typed it."""
    grid = song.bar_grid
    shown = {"bpm": "bpm", "downbeat": "downbeat_s", "per_bar": "beats_per_bar"}
    keys = {name: f"{name}_{song.key}" for name in shown}
    for name, field in shown.items():
        state.view(keys[name], lambda f=field: grid_field(f))

    def typed() -> None:
        try:
            values = st.session_state
            made = BarGrid(
                float(values[keys["bpm"]]),
                float(values[keys["downbeat"]]),
                int(values[keys["per_bar"]]),
            )
        except NeuroChipError as err:
            st.session_state["upload_error"] = str(err)
        else:
            songs.set_bar_grid(made, "typed")

    def detect() -> None:
        found = songs.detect_bar_grid(song)
        songs.set_bar_grid(found, "detected")
        state.redraw()  # the fields show what was found

    title = (
        f"Bars: {grid.bpm:g} BPM, {grid.beats_per_bar} beats, bar 1 at {grid.downbeat_s:.2f} s "
        f"({songs.bar_grid_source(song)})"
        if grid is not None
        else "Bars: no steady beat found"
    )
    # Keyed: it stays open while its title follows the edits.
    with st.expander(title, icon=":material/view_week:", key=f"bars_{song.key}"):
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
            key=keys["bpm"],
            on_change=typed,
        )
        b2.number_input(
            "Bar 1 starts at (s)",
            0.0,
            float(song.audio.duration_s),
            value=min(float(grid.downbeat_s), song.audio.duration_s) if grid else 0.0,
            step=0.01,
            format="%.2f",
            key=keys["downbeat"],
            on_change=typed,
        )
        b3.number_input(
            "Beats per bar",
            1,
            16,
            value=int(grid.beats_per_bar) if grid else 4,
            key=keys["per_bar"],
            on_change=typed,
        )
        b4.button("Detect again", key=f"detect_{song.key}", on_click=detect)
