"""Takes: one take, big: its player, downloads, note and name, notes kept (counted on demand
for older takes, a piano roll), re-rolls."""

from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from app import song as arrange_song
from app import state, ui
from app.abplayer import ab_player
from app.figures import faithfulness_figure
from app.mixer import stem_mixer
from app.piano_roll import draw_piano_roll
from app.takes import FAITHFULNESS_HELP, badge, measured_notes, player, scores_text
from neurochip.bars import BarGrid
from neurochip.comp import take_bar_times
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.jobs import Job
from neurochip.library.metadata import notes_kept_score
from neurochip.library.notes import NOT_COUNTED_HERE, count_notes, has_notes
from neurochip.model_spec import ModelSpec
from neurochip.reroll import candidate_settings, region_of_take, reroll_take
from neurochip.sketch import load_sketch


def big_view(take) -> None:
    """Everything about one take: picture, player, downloads, note and name, settings."""
    with st.container(border=True):
        picture, right = st.columns([1, 2])
        if take.thumbnail_path is not None and take.thumbnail_path.is_file():
            picture.image(str(take.thumbnail_path), width="stretch")
        else:
            picture.caption("No picture.")
        with right:
            player(take)
            if not take.damaged:
                fmt = state.segmented(
                    st, "view.takes_format", "Download as", [".wav", ".flac", ".mp3"]
                )
                try:
                    data, file_name = ui.export_take(take.id, fmt)
                except NeuroChipError as err:  # e.g. deleted in another tab meanwhile
                    st.error(str(err))
                else:
                    st.download_button(
                        "Download",
                        data,
                        file_name=file_name,
                        key=f"dl_{take.id}",
                        icon=":material/download:",
                    )
        faithfulness_strip(take)
        if take.kind == "stem mix":
            stem_mixer(take.id, arrange_song.current_sketch())
        reroll_panel(take)
        with st.form(key=f"edit_{take.id}", border=False):
            name = st.text_input("Name", value=take.name, key=f"name_{take.id}")
            note = st.text_area(
                "Note",
                value=take.note,
                key=f"note_{take.id}",
                height=80,
                placeholder="What you hear: keeper for the chorus, the bass drifts in bar 12…",
            )
            if st.form_submit_button("Save name and note", icon=":material/save:"):
                try:
                    if name != take.name:
                        ui.library().rename(take.id, name)
                    if note != take.note:
                        ui.library().set_note(take.id, note)
                except NeuroChipError as err:
                    st.error(str(err))
                else:
                    st.rerun()
        with st.expander("Settings"):
            made = ModelSpec.of_take_if_known(take.metadata)
            st.caption(
                f"Model: {made.describe()}"
                if made is not None
                else "Model: not recorded with this take (or its record is damaged)."
            )
            st.json(take.metadata.get("takes", {}), expanded=False)
        if st.button("Delete", key=f"delete_{take.id}", help="Delete this take for good"):
            st.session_state["confirm_delete"] = take.id
        if st.session_state.get("confirm_delete") == take.id:
            st.warning("Delete this take and its file?")
            yes, no = st.columns(2)
            if yes.button("Yes, delete", key=f"yes_{take.id}", type="primary"):
                try:
                    ui.library().delete(take.id)
                except NeuroChipError as err:
                    st.error(str(err))
                st.session_state.pop("confirm_delete", None)
                st.session_state["takes_open"] = None
                st.rerun()
            if no.button("Keep it", key=f"no_{take.id}"):
                st.session_state.pop("confirm_delete", None)
                st.rerun()


# --- fix a part ------------------------------------------------------------------------------

REROLL_HELP = (
    "Render these bars again with a new seed (or more or less denoise): everything outside "
    "them and a short blend on each side stays exactly as it is, sample for sample. Each "
    "candidate is kept as a new take that says which take and bars it came from."
)


def reroll_panel(take) -> None:
    """Fix a part: bars (or seconds) of this take rendered again; the rest stays as it is."""
    if take.kind in ("stem", "stem mix"):
        return  # a stem is one part played alone: re-rolling it against the song is not built
    st.markdown("**Fix a part**", help=REROLL_HELP)
    if take.kind not in ("take", "comp") or take.damaged:
        st.caption(
            "Re-roll works on one take: open take A or B of this pair (or comparison), fix "
            "it, then pair them again above."
            if not take.damaged
            else "A damaged take cannot be re-rolled."
        )
        return
    key = take.metadata.get("sketch_key")
    source = ui.library().source(key) if isinstance(key, str) else None
    if source is None:
        st.caption(
            "This take's song was not kept with it (made before NeuroChip kept songs): "
            "`neurochip reroll SKETCH TAKE --bars 9-12` re-rolls it from the command line."
        )
        return
    settings = take.settings()
    start, end = settings.start_s, settings.start_s + take.duration_s
    bars = ui.memo(f"bars_{take.id}", take.id, lambda: take_bar_times(ui.library(), take))
    in_take = [i + 1 for i, t in enumerate(bars or []) if start - 1e-6 <= t < end]
    where, seed_col, count_col, denoise_col = st.columns(
        [4, 2, 1.4, 2.6], vertical_alignment="bottom"
    )
    if len(in_take) >= 2:
        first, last = where.select_slider(
            "Bars to re-roll",
            options=in_take,
            value=(in_take[0], in_take[0]),
            key=f"reroll_bars_{take.id}",
            help="The bars of the song this take covers (from the MIDI file's tempo map).",
        )
        asked = {"bars": f"{first}-{last}"}
    else:
        low, high = where.slider(
            "Seconds of the song to re-roll",
            float(start),
            float(end),
            (float(start), float(min(end, start + 2.0))),
            step=0.1,
            key=f"reroll_seconds_{take.id}",
        )
        asked = {"seconds": f"{low}-{high}"}
    bumped = st.session_state.pop(f"reroll_seed_next_{take.id}", None)
    if bumped is not None:  # the last re-roll took these seeds: the next one rolls new ones
        st.session_state[f"reroll_seed_{take.id}"] = bumped
    seed = seed_col.number_input(
        "New seed",
        0,
        2**32 - 1,
        value=(settings.seed + 101) % 2**32,
        key=f"reroll_seed_{take.id}",
        help="Candidates take this seed and the next ones.",
    )
    count = count_col.number_input(
        "Candidates", 1, 4, 2, key=f"reroll_count_{take.id}", help="Rendered together."
    )
    denoise = denoise_col.slider(
        "Denoise",
        0.05,
        0.95,
        float(settings.denoise),
        0.05,
        key=f"reroll_denoise_{take.id}",
        help="As the take had it; more lets the new bars stray further from the sketch.",
    )
    other_model = ui.other_model_note(take.metadata)
    if other_model is not None:
        st.caption(f":material/warning: {other_model.replace('renders use', 're-rolls use')}")
    job = ui.job_of("reroll")
    busy = job is not None and not job.finished
    if st.button("Re-roll", key=f"reroll_{take.id}", icon=":material/casino:", disabled=busy):
        engine, error = ui.engine()
        if engine is None:
            st.error(error or "The model is still loading: try again in a moment.")
            return
        try:
            region = region_of_take(start, take.duration_s, bar_times_s=bars, **asked)
            seeds = [(int(seed) + i) % 2**32 for i in range(int(count))]
            candidates = candidate_settings(
                settings, seeds, denoise=float(denoise), duration_s=take.duration_s
            )
        except NeuroChipError as err:
            st.error(str(err))
            return

        def reroll_work(progress, cancel, engine=engine, region=region, candidates=candidates):
            sketch = load_sketch(source.data, name=source.decode_as, voices=source.voices)
            sketch = dataclasses.replace(sketch, name=source.name)
            if sketch.midi is None:  # audio: the grid the take was rendered on
                sketch = sketch.with_bar_grid(BarGrid.from_dict(take.metadata.get("bar_grid")))
            parent = ui.library().load_audio(take.id)
            return reroll_take(
                engine,
                sketch,
                parent,
                take.metadata,
                region,
                candidates,
                parent_ref=take.id,
                library=ui.library(),
                progress=progress,
                cancel=cancel,
            )

        ui.start_job(
            "reroll",
            Job(reroll_work, name="reroll"),
            f"the re-roll of {take.name}",
            take_id=take.id,
            region=region,
        )
        st.session_state[f"reroll_seed_next_{take.id}"] = (int(seed) + int(count)) % 2**32
        st.rerun()
    reroll_results(take)


def reroll_results(take) -> None:
    """The re-roll of this take: its progress, then the candidates against the take."""
    job = ui.job_of("reroll")
    asked = ui.job_info("reroll")
    if job is None or asked.get("take_id") != take.id:
        return

    ui.job_progress("reroll", "Re-rolling")
    if job.state == "failed":
        st.error(job.error)
    if job.state != "done":
        return
    region = asked["region"]
    results = job.result
    settings = take.settings()
    # The region and a second around it, the candidates against the take, looped.
    clip_start = max(0.0, region.start_s - 1.0)
    clip_end = min(take.duration_s, region.end_s + 1.0)

    def clip(audio):
        rate = audio.sample_rate
        return Audio(audio.samples[:, round(clip_start * rate) : round(clip_end * rate)], rate)

    def sources():
        heard = {"This take": ui.wav_bytes(clip(ui.library().load_audio(take.id)))}
        for i, result in enumerate(results[:3]):
            heard[f"Candidate {i + 1}"] = ui.wav_bytes(clip(result.render.audio))
        return heard

    st.caption("Saved as new takes (the list above). Listen to the part against the take, looped:")
    ab_player(
        ui.memo("reroll_ab", job, sources),
        key="reroll_ab",
        loop=(region.start_s - clip_start, region.end_s - clip_start),
        offset_s=settings.start_s + clip_start,
        height=120,
    )
    for i, result in enumerate(results):
        said = scores_text(result.metadata.get("faithfulness"))
        st.markdown(f"Candidate {i + 1} · seed {result.render.settings.seed} · {said}")


def faithfulness_strip(take) -> None:
    """The take's note faithfulness: the notes-kept headline with the chroma score beside it
    (or *Count notes* where they were not counted), notes kept per bar or second (the chroma
    where notes were not counted) with the places to listen first, and the piano roll of the
    notes counted."""
    measured = take.metadata.get("faithfulness")
    if not isinstance(measured, dict):
        measured = {}
    notes = measured_notes(measured)
    held = measured.get("takes")
    if notes is not None:
        chroma = f" · chroma {badge(take.faithfulness)}" if take.faithfulness is not None else ""
        st.markdown(f"{ui.notes_headline(notes)}{chroma}", help=FAITHFULNESS_HELP)
    elif notes_kept_score(take.metadata) is not None:  # a pair's: the mean of its takes'
        st.markdown(f"{scores_text(measured)} (its takes' mean)", help=FAITHFULNESS_HELP)
    elif take.faithfulness is not None:
        st.markdown(
            f"Notes kept: not counted · chroma {badge(take.faithfulness)}", help=FAITHFULNESS_HELP
        )
    else:
        st.caption("Note faithfulness: not measured.", help=FAITHFULNESS_HELP)
    if not has_notes(take):
        count_notes_button(take)
    if isinstance(held, dict):
        # A pair's or its comparison's: the mean of its takes'; their strips are in their own
        # files (A's and B's takes).
        said = [f"take {key} {scores_text(value)}" for key, value in sorted(held.items())]
        st.markdown(" · ".join(said))
        return
    if notes is not None and len(notes.times_s):
        notes_strip(notes, _start_s(take), take.duration_s, f"notes_strip_{take.id}")
    else:
        chroma_strip(measured)
    if notes is not None:
        draw_piano_roll(
            notes,
            _start_s(take),
            None,  # the bars the notes were counted in
            take.duration_s,
            f"roll_{take.id}",
            ui.memo(f"roll_{take.id}", (take.id, take.notes_kept), dict),
            shown="view.takes_piano_roll",
        )


def _start_s(take) -> float:
    """Where the take starts in its song (0 where its settings cannot be read)."""
    try:
        return float(take.settings().start_s)
    except NeuroChipError:
        return 0.0


def count_notes_button(take) -> None:
    """*Count notes* for a take kept before notes were counted: measured now, against the
    song the library kept, and kept with it."""
    why = NOT_COUNTED_HERE.get(take.kind)
    if why is not None or take.damaged:
        return
    if st.button(
        "Count notes",
        key=f"count_notes_{take.id}",
        icon=":material/music_note:",
        help="This take was made before notes were counted: transcribe it and count the "
        "song's notes it keeps (a few seconds), against the song kept with it.",
    ):
        try:
            with st.spinner("Counting notes…"):
                count_notes(ui.library(), take.id)
        except NeuroChipError as err:
            st.error(str(err))
        else:
            st.rerun()


def notes_strip(notes, start_s: float, duration_s: float, key: str) -> None:
    """Notes kept per bar (or second), in the song's seconds, with the bars to listen to
    first: as Arrange's preview draws it."""
    ends = np.append(notes.times_s[1:], max(duration_s, float(notes.times_s[-1])))
    bars = notes.times_s + start_s if notes.segment == "bar" else ()
    figure = ui.memo(  # made once per take and count, not on every run of the page
        key,
        (notes.score, start_s, duration_s, len(notes.strip)),
        lambda: faithfulness_figure(notes.times_s, notes.strip, ends, notes.score, start_s, bars),
    )
    st.plotly_chart(figure, width="stretch", key=key)
    unit = notes.segment
    first = notes.first_bar if unit == "bar" else 1
    low = [i for i, kept in enumerate(notes.strip) if kept < notes.score - LOW_BY]  # NaN: not
    if low:
        where = ", ".join(f"{unit} {first + i}" for i in low[:8])
        st.caption(f"Listen first to {where}: far fewer notes kept than the rest.")


#: A bar this far below the take's own notes kept is red in the strip: a place to listen first.
LOW_BY = 0.15


def chroma_strip(measured: dict) -> None:
    """The chroma score per bar or second, with its low spots."""
    strip = measured.get("strip")
    if not isinstance(strip, list) or not strip:
        return
    unit = str(measured.get("segment") or "second")
    first_bar = measured.get("first_bar")
    first = first_bar if unit == "bar" and isinstance(first_bar, int) else 1
    st.bar_chart(
        [
            {unit: first + i, "chroma": v if isinstance(v, (int, float)) else None}
            for i, v in enumerate(strip)
        ],
        x=unit,
        y="chroma",
        sort=False,
        height=160,
        y_label="chroma",
    )
    spots = measured.get("low_spots") or []
    if spots:
        where = ", ".join(
            f"{unit} {first + s['first']}"
            if s["first"] == s["last"]
            else f"{unit}s {first + s['first']}–{first + s['last']}"
            for s in spots[:8]
        )
        st.caption(f"Listen first to {where}: much less faithful than the rest.")
