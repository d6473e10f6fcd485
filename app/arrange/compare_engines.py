"""Arrange, after the grid: *Compare engines* on the preview region.

Each engine whose model is on this machine (the Model page's choice for its engine; for
each other engine the model last used with it, else its default or small model; never
downloaded) renders the preview region with the same
seeds, one batch per engine, one engine loaded at a time
(:func:`neurochip.engine_comparison.compare_engines`). The rows say each one's notes kept,
chroma and seconds per seed, the best marked; the A/B player plays one seed across engines.

The result is kept in the workspace (``comparison.npz``), so a refresh or a page trip finds
it. The job is the workspace's ``"compare"`` job on the board (a refresh finds it running).
"""

from __future__ import annotations

import streamlit as st

from app import state, ui
from app.abplayer import ab_player
from app.arrange import Page
from neurochip.doctor import check_model_cache
from neurochip.engine import FAITHFUL_PREVIEW, PREVIEW_SECONDS, QUICK_PREVIEW
from neurochip.engine_comparison import EngineRow, best_engines, compare_engines
from neurochip.jobs import Job
from neurochip.kinds import KIND_NAMES, KINDS
from neurochip.model_spec import DEFAULT_SOURCES, SMALL_SOURCES, ModelSpec
from neurochip.variations import MAX_VALUES
from neurochip.workspace import ComparisonPreview

KIND = "compare"  # the job's kind on the workspace's board


def draw(page: Page) -> None:
    st.subheader("Compare engines")
    st.caption(
        "The preview region rendered by each engine, the same seeds each: how many of the "
        "sketch's notes each keeps, and how long each takes. Engines load one at a time "
        "from this machine (nothing is downloaded); the first load of each takes a while."
    )
    restore()
    job = ui.job_of(KIND)
    if job is not None and job.state == "done" and job.result.song_key == page.song.key:
        keep(job.result)
    shown = last(page.song.key)
    busy = job is not None and not job.finished
    fields(page, busy)
    ui.job_progress(KIND, "Comparing engines", "Cancel the comparison")
    if job is not None and job.state == "failed":
        st.error(job.error)
    if (
        job is not None
        and job.state == "cancelled"
        and ui.job_info(KIND).get("song_key")
        in (
            None,
            page.song.key,
        )
    ):
        st.info(
            "Comparison cancelled"
            + ("; the last one is below." if shown is not None else ".")
            + " *Compare engines* to start it again.",
            icon=":material/cancel:",
        )
    if shown is not None:
        results(page, shown, busy)


# --- what is compared ----------------------------------------------------------------------------


def candidates() -> dict[str, tuple[ModelSpec, str | None]]:
    """Each engine kind's model here, on the Model page's device, and why it cannot be used
    (None: it is here).

    The Model page's choice for its own kind; for each other kind the first of these on this
    machine: the source the composer last used with it (``view.engine_sources``), its
    default, its small model (:data:`~neurochip.model_spec.SMALL_SOURCES`). None there: the
    first of them, with why. (Using one on the Model page remembers it for its kind.)
    """
    choice = ui.model_choice()
    remembered = state.get("view.engine_sources")
    found = {}
    for kind in KINDS:
        if kind == choice.kind:
            found[kind] = (choice, why_not_here(choice.source))
            continue
        sources = [remembered.get(kind), DEFAULT_SOURCES[kind], SMALL_SOURCES.get(kind)]
        tried = [(s, why_not_here(s)) for s in dict.fromkeys(s for s in sources if s)]
        source, why = next((t for t in tried if t[1] is None), tried[0])
        spec = ModelSpec.for_kind(kind, source=source, device=choice.device, dtype=choice.dtype)
        found[kind] = (spec, why)
    return found


def why_not_here(source: str) -> str | None:
    """Why model ``source`` is not on this machine, or None: it is (the disk and the hub's
    cache are looked in; nothing is downloaded)."""
    check = check_model_cache(source)
    return None if check.ok else check.detail


def picked(available: list[str]) -> list[str]:
    kept = state.get("view.compare_kinds")
    if kept is None:
        return list(available)
    return [kind for kind in kept.split(",") if kind in available]


def compare_key(page: Page, kinds: list[str], seeds: list[int]) -> tuple:
    """What a comparison answers for: the song, settings, region, quality, engines, seeds."""
    return (
        page.song.key,
        page.settings.to_json(),
        round(page.preview_start, 2),
        page.quick,
        ",".join(kinds),
        ",".join(map(str, seeds)),
    )


def seeds_of(page: Page) -> list[int]:
    count = int(state.get("view.compare_seeds"))
    return [(page.settings.seed + k) % 2**32 for k in range(max(1, min(MAX_VALUES, count)))]


def fields(page: Page, busy: bool) -> None:
    found = candidates()
    available = [kind for kind, (_, why) in found.items() if why is None]
    missing = [f"{KIND_NAMES[kind]} ({why})" for kind, (_, why) in found.items() if why]
    c1, c2, c3 = st.columns([5, 2, 2], vertical_alignment="bottom")
    key = state.key_of("view.compare_kinds", ",".join(available))
    chosen = state.view(key, lambda: picked(available))

    def changed() -> None:
        state.put("view.compare_kinds", ",".join(st.session_state[key]))

    kinds = c1.multiselect(
        "Engines",
        available,
        default=chosen(),
        key=key,
        on_change=changed,
        format_func=KIND_NAMES.get,
        help="The engines whose model is on this machine.",
    )
    state.slider(
        c2,
        "view.compare_seeds",
        "Seeds",
        1,
        MAX_VALUES,
        1,
        help="Seeds per engine, from the seed in the settings: each engine renders them together.",
    )
    seeds = seeds_of(page)
    if c3.button(
        "Compare engines",
        disabled=busy or not kinds,
        icon=":material/compare_arrows:",
        width="stretch",
    ):
        start(page, [found[kind][0] for kind in kinds], seeds, compare_key(page, kinds, seeds))
        st.rerun()
    if missing:
        st.caption(
            "Not on this machine: "
            + "; ".join(ui.plain(m) for m in missing)
            + ". Get one on the Model page (choose its engine, then Download)."
        )


def start(page: Page, specs: list[ModelSpec], seeds: list[int], key: tuple) -> None:
    # The app's own engine where it is one of them: not loaded a second time.
    loaded = page.engine
    items = [loaded if getattr(loaded, "spec", None) == spec else spec for spec in specs]
    song, settings, song_key = page.song, page.settings, page.song.key
    region, bars = (page.preview_start, PREVIEW_SECONDS), list(page.bars_s) or None
    quality = QUICK_PREVIEW if page.quick else FAITHFUL_PREVIEW

    def work(progress, cancel):
        rows = compare_engines(
            items,
            song,
            settings,
            seeds,
            region=region,
            bar_times_s=bars,
            progress=progress,
            cancel=cancel,
            quality=quality,
            local_files_only=True,  # the app never downloads unasked
        )
        return ComparisonPreview(song_key, key, rows)

    ui.start_job(KIND, Job(work, name=KIND), "the comparison of engines", song_key=song_key)


# --- kept across a refresh -----------------------------------------------------------------------


def restore() -> None:
    """Once per browser session: the comparison the workspace kept."""
    if st.session_state.get("_comparison_restored"):
        return
    st.session_state["_comparison_restored"] = True
    kept = state.workspace().comparison()
    if kept is not None and "last_comparison" not in st.session_state:
        st.session_state["last_comparison"] = kept


def keep(result: ComparisonPreview) -> None:
    if st.session_state.get("last_comparison") is result:
        return
    st.session_state["last_comparison"] = result
    try:
        state.workspace().keep_comparison(result)
    except OSError as err:  # the page goes on; only the reopening loses it
        st.toast(f"Could not keep the comparison for next time: {err}", icon=":material/warning:")


def last(song_key: str) -> ComparisonPreview | None:
    shown = st.session_state.get("last_comparison")
    return shown if shown is not None and shown.song_key == song_key else None


# --- the result ----------------------------------------------------------------------------------


def results(page: Page, shown: ComparisonPreview, busy: bool) -> None:
    rows = shown.rows
    kinds = [row.kind for row in rows]
    if shown.key != compare_key(page, kinds, seeds_of(page)):
        st.caption(
            ":material/history: Rendered for other settings, seeds or region"
            + ("; the new comparison is running." if busy else ".")
            + " *Compare engines* again to hear them as things stand."
        )
    best = best_engines(rows)
    for i, row in enumerate(rows):
        with st.container(border=True):
            st.markdown(row_line(row, i in best, tied=len(best) > 1))
            if row.ok:
                st.caption(" · ".join(seed_text(cell) for cell in row.cells))
            else:
                st.caption(ui.plain(row.error or ""))
    rendered = [row for row in rows if row.ok]
    if not rendered:
        return
    seeds = [cell.settings.seed for cell in rendered[0].cells]
    seed = (
        st.selectbox("Seed in the player", seeds, key="compare_seed")
        if len(seeds) > 1
        else seeds[0]
    )
    takes = {row.name: next(c for c in row.cells if c.settings.seed == seed) for row in rendered}
    first = next(iter(takes.values()))
    sources = ui.memo(
        "compare_ab",
        (shown, seed),
        lambda: (
            {"Sketch": ui.wav_bytes(first.render.source)}
            | {
                KIND_NAMES.get(row.kind, row.kind): ui.wav_bytes(takes[row.name].render.audio)
                for row in rendered[:3]
            }
        ),
    )
    ab_player(sources, key="compare_ab", offset_s=first.render.start_s, height=120)


def seed_text(cell) -> str:
    """ "seed 5: notes kept 82%, chroma 0.91" (the chroma alone where notes were not counted)."""
    faith = cell.faithfulness
    kept = f"notes kept {faith.notes.score:.0%}, " if faith.notes is not None else ""
    return f"seed {cell.settings.seed}: {kept}chroma {faith.score:.2f}"


def row_line(row: EngineRow, best: bool, tied: bool) -> str:
    """ "**Stable Audio 3** · notes kept 82% (sketch 79%) · chroma 0.91 · 2.1 s per seed ·
    best": notes kept in percent as everywhere, with what the transcriber hears of the sketch
    itself where that is less than all."""
    name = f"**{ui.plain(KIND_NAMES.get(row.kind, row.kind))}**"
    if not row.ok:
        return f"{name} · could not render"
    counted = [cell.faithfulness.notes for cell in row.cells]
    if all(notes is not None for notes in counted):
        ceiling = next((ui.sketch_ceiling(n) for n in counted if ui.sketch_ceiling(n)), "")
        kept = f"notes kept {row.kept:.0%}{ceiling}"
    else:  # basic-pitch missing: row.kept is the chroma score then, not notes
        kept = "notes not counted"
    parts = [
        name,
        kept,
        f"chroma {row.chroma:.2f}",
        f"{ui.format_seconds(row.seconds_per_seed)} per seed",
    ]
    if best:
        parts.append("tied best" if tied else "best")
    return " · ".join(parts) + f"  \n:small[{ui.plain(row.name)}]"
