"""The stem mixer: a stem render's faders, the mix made at once, and the ZIP for a DAW.

Drawn under a finished stem render on Arrange and in a kept mix's view on Takes: both work
from the library (:meth:`neurochip.stems.StemTakes.from_library`), so the mixer outlives
the page that rendered the stems.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import streamlit as st

from app import ui
from app.abplayer import ab_player
from neurochip.errors import NeuroChipError
from neurochip.settings import describe
from neurochip.sketch import Sketch, load_sketch
from neurochip.stems import StemMix, StemTakes, heard_stems, keep_mix
from neurochip.stems_zip import write_stems_zip


def _about(name: str):
    return describe(StemMix, name)


def _fader(where, name: str, value: float, key: str):
    """A fader over the range :class:`StemMix` takes (one range, written in its field)."""
    about = _about(name)
    low, high, step = float(about.minimum), float(about.maximum), float(about.step)
    return where.slider(about.label, low, high, float(value), step=step, key=key, help=about.help)


@st.fragment
def stem_mixer(mix_id: str, song: Sketch | None = None) -> None:
    """The faders of the stems a kept mix was made of, their mix playing against the sketch.
    A fader moved reruns the mixer alone (a fragment), not the page.

    ``song``: the sketch as loaded, when it is the stems' own (else the library's copy of it
    is read for the ZIP's tempo map, and the player compares with the kept mix).
    """
    library = ui.library()
    try:
        result, kept = ui.memo(
            f"stems_{mix_id}", mix_id, lambda: StemTakes.from_library(library, mix_id)
        )
    except NeuroChipError as err:
        st.warning(str(err))
        return
    if song is not None and song.key != result.metadata[0].get("sketch_key"):
        song = None
    st.markdown("**Stem mixer** · the mix follows at once; nothing is rendered again")
    # Which stems the mix plays, from the switches as they stand (drawn below each name).
    heard = heard_stems(
        [
            StemMix(
                mute=st.session_state.get(f"mix_{mix_id}_{i}_mute", m.mute),
                solo=st.session_state.get(f"mix_{mix_id}_{i}_solo", m.solo),
            )
            for i, m in enumerate(kept)
        ]
    )
    mixes = []
    for i, (stem, start) in enumerate(zip(result.stems, kept, strict=True)):
        name, gain, pan, switches = st.columns([3, 3, 3, 2], vertical_alignment="center")
        parts = "+".join(stem.parts) or "all"
        silent = "" if heard[i] else " :gray[· silent]"
        name.markdown(
            f"**{ui.plain(stem.name)}**{silent}  \n{ui.plain(stem.prompt)} · parts {parts}"
        )
        mute = solo = switches  # one above the other: their labels stay whole
        key = f"mix_{mix_id}_{i}"
        mixes.append(
            StemMix(
                gain_db=_fader(gain, "gain_db", start.gain_db, f"{key}_gain"),
                pan=_fader(pan, "pan", start.pan, f"{key}_pan"),
                mute=mute.checkbox("Mute", start.mute, key=f"{key}_mute", help=_about("mute").help),
                solo=solo.checkbox("Solo", start.solo, key=f"{key}_solo", help=_about("solo").help),
            )
        )
    mix = ui.memo(f"stem_mix_{mix_id}", tuple(mixes), lambda: result.mix(mixes))
    # Encoded once per fader setting (and the other side once): a page run per slider move
    # must not encode, or read from disk, what it played last time.
    mix_wav = ui.memo(f"stem_mix_wav_{mix_id}", tuple(mixes), lambda: ui.wav_bytes(mix))

    def compared() -> tuple[str, bytes]:
        if song is not None:
            span = song.audio.span(result.start_s, mix.duration_s).to_mono()
            return "Sketch", ui.wav_bytes(span)
        return "Kept mix", ui.wav_bytes(library.load_audio(mix_id))

    other = ui.memo(f"stem_other_{mix_id}", song is not None, compared)
    try:
        ab_player({"Mix": mix_wav, other[0]: other[1]}, key=f"stem_ab_{mix_id}",
                  offset_s=result.start_s)  # fmt: skip
    except ValueError as err:  # too long for the page's player: the mix alone
        st.caption(f"The mix alone: {err}")
        st.audio(mix_wav, format="audio/wav")

    keep_col, mix_col, zip_col = st.columns(3)
    kept_now = st.session_state.get(f"stem_kept_{mix_id}", tuple(kept))
    keep_col.button(
        "Keep this mix",
        key=f"keep_{mix_id}",
        icon=":material/save:",
        disabled=tuple(mixes) == kept_now,
        help="Keep the mix at these faders as a new take (the earlier mix stays).",
        width="stretch",
        on_click=keep_this_mix,
        args=(mix_id, result, tuple(mixes)),
    )
    if error := st.session_state.pop(f"stem_keep_error_{mix_id}", None):
        st.error(error)
    title = Path(result.sketch_name).stem or "song"
    mix_col.download_button(
        "Download the mix",
        mix_wav,
        file_name=f"{title} stem mix.wav",
        mime="audio/wav",
        key=f"dl_mix_{mix_id}",
        icon=":material/download:",
        width="stretch",
    )
    zip_col.download_button(
        "Download stems (ZIP)",
        lambda: stems_zip(result, tuple(mixes), song),
        file_name=f"{title} stems.zip",
        mime="application/zip",
        key=f"dl_zip_{mix_id}",
        icon=":material/folder_zip:",
        help="A WAV per stem from the song's start, the mix, the tempo map (tempo.mid) and "
        "stems.json with every setting: drop the folder into a DAW and the bars line up.",
        width="stretch",
    )


def keep_this_mix(mix_id: str, result: StemTakes, mixes: tuple[StemMix, ...]) -> None:
    """Keep the mix at these faders (a callback: the button is drawn knowing it is kept)."""
    library = ui.library()
    try:
        made = keep_mix(library, dataclasses.replace(result, saved=dict(result.saved)), mixes)
    except (NeuroChipError, OSError) as err:
        st.session_state[f"stem_keep_error_{mix_id}"] = f"Could not keep the mix: {err}"
    else:
        st.session_state[f"stem_kept_{mix_id}"] = mixes
        st.toast(f"Kept as {library.get(made).name}", icon=":material/save:")


def stems_zip(result: StemTakes, mixes: tuple[StemMix, ...], song: Sketch | None) -> bytes:
    """The ZIP, made when its button is clicked (on a thread of Streamlit's: no st calls)."""
    if song is None:
        song = kept_song(result)
    out = io.BytesIO()
    write_stems_zip(out, song, result, list(mixes))
    return out.getvalue()


def kept_song(result: StemTakes) -> Sketch:
    """The stems' sketch as the library kept it (played again where it is MIDI)."""
    key = result.metadata[0].get("sketch_key")
    source = ui.library().source(key) if key else None
    if source is None:
        raise NeuroChipError(
            f"The song of these stems ({result.sketch_name}) was not kept: open it on Arrange "
            "and download the stems from there."
        )
    song = load_sketch(source.data, name=source.decode_as, voices=source.voices)
    return dataclasses.replace(song, name=source.name)
