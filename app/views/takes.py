"""Takes: every render, kept. A compact list to tell them apart, one take's big view at a time.

Each row says what tells a take apart (its settings and note faithfulness, from
:attr:`Take.label <neurochip.library.store.Take.label>`); the player, downloads, note and
rename live in the big view of the one take opened. The list is paged, so a page builds at most
:data:`PER_PAGE` rows and a single take's player and export, whatever the library holds.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

import streamlit as st

from app import song as arrange_song
from app import state, ui
from app.abplayer import ab_player
from app.figures import faithfulness_colour
from app.mixer import stem_mixer
from neurochip.bars import BarGrid
from neurochip.comp import COMP_CROSSFADE_S, CompPart, comp_audio, comp_takes, take_bar_times
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.jobs import Job
from neurochip.library.metadata import faithfulness_score
from neurochip.library.names import faithfulness_text, take_label
from neurochip.reroll import candidate_settings, region_of_take, reroll_take
from neurochip.sketch import load_sketch
from neurochip.takeset import pair_takes

PER_PAGE = 25

SORTS = {
    "Newest first": "created",
    "Starred first": "starred",
    "Most faithful first": "faithfulness",
    "Name": "name",
    "Song": "song",
    "Prompt": "prompt",
}
FAITHFULNESS_HELP = (
    "Note faithfulness: how well the take keeps the sketch's notes, measured when it was "
    "rendered. 1.00 keeps every note; unrelated music scores about 0.5 or less."
)

st.title("Takes")
library = ui.library()
st.caption(f"Every render is kept in `{library.root}` (set NEUROCHIP_HOME to move it).")
ui.interrupted_notice()
ui.rendering_now()


def first_page() -> None:
    st.session_state["takes_page"] = 0


def turn_page(step: int) -> None:
    st.session_state["takes_page"] = max(0, st.session_state.get("takes_page", 0) + step)


def toggle_open(take_id: str) -> None:
    opened = st.session_state.get("takes_open") == take_id
    st.session_state["takes_open"] = None if opened else take_id


find, song_col, sort_col, star_col = st.columns([3, 2, 2, 1.2], vertical_alignment="bottom")
text = state.text(
    find,
    "view.takes_search",
    "Search",
    placeholder="prompt, name or note, e.g. funk",
    help="Matches the takes' prompts, names and notes, ignoring case.",
    on_change=first_page,
)
try:
    songs = library.songs()
except NeuroChipError as err:  # e.g. the index cannot be read, and could not be rebuilt
    st.error(str(err))
    st.stop()
song = state.select(
    song_col, "view.takes_song", "Song", ["All songs", *songs], on_change=first_page
)
sort = state.select(sort_col, "view.takes_sort", "Sort", list(SORTS), on_change=first_page)
starred_only = state.toggle(
    star_col, "view.takes_starred_only", "Starred only", on_change=first_page
)
filters = {
    "starred_only": starred_only,
    "song": None if song == "All songs" else song,
    "text": text or None,
}
try:
    total = library.count(**filters)
    if st.session_state.get("takes_seen_total") not in (None, total):
        first_page()  # takes came or went since this page was last drawn: new ones are first
    st.session_state["takes_seen_total"] = total
    pages = max(1, math.ceil(total / PER_PAGE))
    page = min(max(int(st.session_state.get("takes_page", 0)), 0), pages - 1)
    st.session_state["takes_page"] = page
    takes = library.list(**filters, sort=SORTS[sort], limit=PER_PAGE, offset=page * PER_PAGE)
except NeuroChipError as err:
    st.error(str(err))
    st.stop()
if not takes:
    if text or starred_only or song != "All songs":
        st.info("No take matches: clear the search or the filters.", icon=":material/search_off:")
    else:
        st.info("No takes yet: render one on the Arrange page.", icon=":material/library_music:")
    st.stop()
shown = f"{total} take{'s' if total != 1 else ''}"
if pages > 1:
    shown += f" · {page * PER_PAGE + 1}–{page * PER_PAGE + len(takes)} shown"
# One row: the count, then the two tools' toggles side by side (their panels open below).
count_col, compare_col, comp_col = st.columns([1, 2, 2], vertical_alignment="center")
count_col.caption(shown)
if notice := st.session_state.pop("takes_notice", None):
    st.success(notice, icon=":material/check_circle:")


def choice(take) -> str:
    star = "★ " if take.starred else ""
    return f"{star}{take.name} ({take.kind}, {ui.format_seconds(take.duration_s)})"


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


# --- A/B and pairing --------------------------------------------------------------------------


def default_ab(takes) -> tuple[int, int]:
    """Which of the listed takes Compare starts with: the first two single takes, the second
    of the same song as the first where there is one (a pair and one of its own halves, or
    two different songs, compare little); else the first two listed."""
    singles = [i for i, take in enumerate(takes) if take.channels == 1]
    if not singles:
        return 0, min(1, len(takes) - 1)
    first = singles[0]
    same_song = [i for i in singles[1:] if takes[i].source_name == takes[first].source_name]
    others = same_song or singles[1:] or [min(1, len(takes) - 1)]
    return first, others[0]


# A toggle, not an expander: an expander's content is built even while it is closed, and this
# one's holds two players.
compare = state.toggle(
    compare_col,
    "view.takes_compare",
    "Compare two takes, or build a stereo pair",
    help="Play two takes of this page side by side; search or sort to bring others here.",
)
if compare:
    with st.container(border=True):
        by_id = {t.id: t for t in takes}
        first, second = default_ab(takes)
        a_col, b_col = st.columns(2)
        a_id = a_col.selectbox(
            "Take A", list(by_id), index=first, format_func=lambda i: choice(by_id[i]), key="ab_a"
        )
        b_id = b_col.selectbox(
            "Take B",
            list(by_id),
            index=second,
            format_func=lambda i: choice(by_id[i]),
            key="ab_b",
        )
        a_col.caption(by_id[a_id].label)
        b_col.caption(by_id[b_id].label)
        try:
            # One player, one clock: switch between the takes at the same position.
            sources = ui.memo(
                "takes_ab",
                (a_id, b_id),
                lambda: {
                    "Take A": ui.wav_bytes(library.load_audio(a_id)),
                    "Take B": ui.wav_bytes(library.load_audio(b_id)),
                },
            )
            ab_player(sources, key="takes_ab")
        except (NeuroChipError, ValueError) as err:  # damaged, or too long for one page
            st.caption(f"Played separately: {err}")
            player(by_id[a_id], a_col)
            player(by_id[b_id], b_col)
        width = state.slider(st, "view.pair_width", "Stereo width", 0.0, 1.0, 0.05)
        singles = by_id[a_id].channels == 1 and by_id[b_id].channels == 1
        if st.button(
            "Make a stereo pair of A (left) and B (right)",
            disabled=a_id == b_id or not singles,
            help=None if singles else "A stereo pair is made of two mono takes.",
        ):
            try:
                pair = pair_takes(library, a_id, b_id, width)
                st.session_state["takes_notice"] = f"Added {pair.name}."
                st.rerun()  # the list above was drawn before the pair existed
            except NeuroChipError as err:
                st.error(str(err))

# --- comp ----------------------------------------------------------------------------------------

COMP_HELP = (
    "Build one take from the best bars of several: takes as rows, bars as columns, each cell "
    "coloured by how well that take keeps that bar's notes. Click a cell to have that take "
    "play that bar; the comp plays at once (a 30 ms equal-power crossfade at each bar line) "
    "and Save keeps it as a new take."
)
#: Bars shown at once in the lanes (more scroll with the "Bars shown" slider).
LANE_BARS = 12


def strip_by_bar(take) -> dict[int, float]:
    """A take's note faithfulness per bar of the song, where it was measured per bar."""
    measured = take.metadata.get("faithfulness")
    if not isinstance(measured, dict) or measured.get("segment") != "bar":
        return {}
    first = measured.get("first_bar") if isinstance(measured.get("first_bar"), int) else 1
    strip = measured.get("strip") or []
    return {first + i: v for i, v in enumerate(strip) if isinstance(v, (int, float))}


def pick(key: tuple, segment: int, row: int) -> None:
    st.session_state.setdefault("comp_choice", {})[key][segment] = row


def comp_lanes(takes_here) -> None:
    """The comp: lanes of takes over bars, the comp playing, Save."""
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
        cells[0].markdown(f":small[{ui.plain(take.name)}]")
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
            st.rerun()


comping = state.toggle(comp_col, "view.takes_comp", "Comp bars of several takes", help=COMP_HELP)
if comping:
    with st.container(border=True):
        comp_lanes(takes)

# --- one take, big --------------------------------------------------------------------------------


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
                        library.rename(take.id, name)
                    if note != take.note:
                        library.set_note(take.id, note)
                except NeuroChipError as err:
                    st.error(str(err))
                else:
                    st.rerun()
        with st.expander("Settings"):
            st.json(take.metadata.get("takes", {}), expanded=False)
        if st.button("Delete", key=f"delete_{take.id}", help="Delete this take for good"):
            st.session_state["confirm_delete"] = take.id
        if st.session_state.get("confirm_delete") == take.id:
            st.warning("Delete this take and its file?")
            yes, no = st.columns(2)
            if yes.button("Yes, delete", key=f"yes_{take.id}", type="primary"):
                try:
                    library.delete(take.id)
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
    source = library.source(key) if isinstance(key, str) else None
    if source is None:
        st.caption(
            "This take's song was not kept with it (made before NeuroChip kept songs): "
            "`neurochip reroll SKETCH TAKE --bars 9-12` re-rolls it from the command line."
        )
        return
    settings = take.settings()
    start, end = settings.start_s, settings.start_s + take.duration_s
    bars = ui.memo(f"bars_{take.id}", take.id, lambda: take_bar_times(library, take))
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
            parent = library.load_audio(take.id)
            return reroll_take(
                engine,
                sketch,
                parent,
                take.metadata,
                region,
                candidates,
                parent_ref=take.id,
                library=library,
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

    @st.fragment(run_every=ui.poll_every("reroll", job))
    def reroll_progress() -> None:
        running = ui.watch_job("reroll", "Re-rolling")
        if running is not None:
            st.button(
                "Cancel", key="cancel_reroll", icon=":material/close:", on_click=running.cancel
            )

    reroll_progress()
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
        heard = {"This take": ui.wav_bytes(clip(library.load_audio(take.id)))}
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
        score = faithfulness_score(result.metadata)
        st.markdown(
            f"Candidate {i + 1} · seed {result.render.settings.seed} · notes kept {badge(score)}"
        )


def faithfulness_strip(take) -> None:
    """The take's note faithfulness, per bar or second, with its low spots."""
    measured = take.metadata.get("faithfulness")
    if take.faithfulness is None or not isinstance(measured, dict):
        st.caption("Note faithfulness: not measured.", help=FAITHFULNESS_HELP)
        return
    st.markdown(f"Note faithfulness {badge(take.faithfulness)}", help=FAITHFULNESS_HELP)
    held = measured.get("takes")
    if isinstance(held, dict):
        # A pair's or its comparison's: the mean of its takes'; their strips are in their own
        # files (A's and B's takes).
        scores = [
            f"take {key} {badge(faithfulness_score({'faithfulness': value}))}"
            for key, value in sorted(held.items())
        ]
        st.markdown(" · ".join(scores))
        return
    strip = measured.get("strip")
    if not isinstance(strip, list) or not strip:
        return
    unit = str(measured.get("segment") or "second")
    first_bar = measured.get("first_bar")
    first = first_bar if unit == "bar" and isinstance(first_bar, int) else 1
    st.bar_chart(
        [
            {unit: first + i, "faithfulness": v if isinstance(v, (int, float)) else None}
            for i, v in enumerate(strip)
        ],
        x=unit,
        y="faithfulness",
        sort=False,
        height=160,
        y_label="faithfulness",
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


# --- the list -------------------------------------------------------------------------------------

opened = st.session_state.get("takes_open")
head = st.columns([0.5, 6.5, 1.1, 1.7, 0.9, 0.9], vertical_alignment="bottom")
head[1].caption("Take · settings")
head[2].caption("Faithful", help=FAITHFULNESS_HELP)
head[3].caption("Made")
with st.container(gap=None):
    for take in takes:
        row = st.columns([0.5, 6.5, 1.1, 1.7, 0.9, 0.9], vertical_alignment="center")
        if row[0].button(
            "★" if take.starred else "☆",
            key=f"star_{take.id}",
            help="Star a keeper",
            type="tertiary",
        ):
            library.star(take.id, not take.starred)
            st.rerun()
        note = " · :material/sticky_note_2:" if take.note else ""
        damaged = " · :orange[damaged]" if take.damaged else ""
        row[1].markdown(
            f"**{ui.plain(take.name)}**{damaged}{note}  \n"
            f":small[:gray[{ui.plain(take_label(take.metadata, faithfulness=False))}]]"
        )
        row[2].markdown(badge(take.faithfulness))
        created = datetime.datetime.fromtimestamp(take.created).strftime("%Y-%m-%d %H:%M")
        row[3].markdown(f":small[{created}]")
        if row[4].button(
            "Open",
            key=f"open_{take.id}",
            help="Open in Arrange: this take's song, span and settings",
            type="tertiary",
        ):
            arrange_song.open_take(take)
            st.switch_page("views/arrange.py")
        row[5].button(
            "Less" if opened == take.id else "More",
            key=f"more_{take.id}",
            help="Play, download, write a note, rename or delete",
            type="tertiary",
            on_click=toggle_open,
            args=(take.id,),
        )
        if take.damaged and opened != take.id:
            player(take)  # says what is wrong, and what to do
        if opened == take.id:
            big_view(take)

if pages > 1:
    back, where, forward = st.columns([1, 2, 1], vertical_alignment="center")
    back.button(
        "Previous",
        key="takes_prev",
        icon=":material/chevron_left:",
        disabled=page == 0,
        on_click=turn_page,
        args=(-1,),
    )
    where.caption(f"Page {page + 1} of {pages}")
    forward.button(
        "Next",
        key="takes_next",
        icon=":material/chevron_right:",
        disabled=page >= pages - 1,
        on_click=turn_page,
        args=(1,),
    )
