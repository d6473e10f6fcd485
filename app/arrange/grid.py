"""Arrange, fourth part: the variation grid over the preview region (seeds x denoise)."""

from __future__ import annotations

import dataclasses

import streamlit as st

from app import state, ui
from app.abplayer import ab_player
from app.arrange import Page
from app.arrange.preview import preview_key
from neurochip.engine import FAITHFUL_PREVIEW, PREVIEW_SECONDS, QUICK_PREVIEW
from neurochip.errors import NeuroChipError
from neurochip.jobs import Job
from neurochip.library.thumbnails import spectrogram_thumbnail
from neurochip.variations import best_variations, render_variations, variation_grid

AXES = ["denoise", "guidance"]


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
    """The denoise (or guidance) and a step either side: the fields' text until typed in."""
    if axis == "denoise":
        values = [settings.denoise - 0.1, settings.denoise, settings.denoise + 0.1]
        return ", ".join(f"{min(0.95, max(0.05, v)):.2f}" for v in values)
    values = [settings.guidance - 2, settings.guidance, settings.guidance + 2]
    return ", ".join(f"{min(20.0, max(1.0, v)):g}" for v in values)


def default_seeds(settings) -> str:
    return ", ".join(str((settings.seed + k) % 2**32) for k in range(3))


def grid_key(page: Page) -> tuple:
    """What a grid answers for besides its settings (those are its base; see changes)."""
    return (page.song.key, round(page.preview_start, 2), page.quick)


def draw(page: Page) -> None:
    st.subheader("Variation grid")
    st.caption(
        "The preview region across several seeds and denoise (or guidance) values, rendered "
        "together in one pass: listen, compare the notes kept, and *Use this* on the best."
    )
    job = ui.job_of("grid")
    if job is not None and job.state == "done" and job.result.song_key == page.song.key:
        ui.keep_grid(job.result)
    shown = ui.last_grid(page.song.key)
    if shown is not None and st.session_state.get("_grid_fields_of") is not shown:
        # A grid came in (rendered, or brought back by a refresh): the fields say what it is.
        st.session_state["_grid_fields_of"] = shown
        setup = state.song()
        setup.grid_seeds = ", ".join(str(seed) for seed in shown.grid.rows)
        if shown.grid.column_axis is not None:
            setup.grid_axis = shown.grid.column_axis
            values = ", ".join(f"{value:g}" for value in shown.grid.columns)
            setup.grid_values[shown.grid.column_axis] = values
        state.save()
        state.redraw()
    fields(page, busy=job is not None and not job.finished)

    ui.job_progress("grid", "Variation grid", "Cancel grid")
    if job is not None and job.state == "failed":
        st.error(job.error)
    if shown is not None:
        cells(page, shown, busy=job is not None and not job.finished)


def fields(page: Page, busy: bool) -> None:
    """Seeds, axis and values (they follow the settings until typed in), and the button."""
    settings, setup = page.settings, state.song()
    g1, g2, g3, g4 = st.columns([3, 2, 3, 2], vertical_alignment="bottom")
    seeds_text = state.text(
        g1,
        "song.grid_seeds",
        "Seeds",
        shown=default_seeds(settings),
        help="Up to 4 seeds, separated by commas: one row each.",
    )
    axis = state.select(g2, "song.grid_axis", "Across", AXES)
    following = default_values(axis, settings)
    typed = setup.grid_values.get(axis)
    values_key = state.key_of("song.grid_values", axis, following if typed is None else "")

    def values_typed() -> None:
        typed = st.session_state[values_key]
        if typed == following:
            setup.grid_values.pop(axis, None)
        else:
            setup.grid_values[axis] = typed
        state.save()

    values_text = g3.text_input(
        f"{axis.capitalize()} values",
        setup.grid_values.get(axis, following),
        key=values_key,
        on_change=values_typed,
        help="Up to 4 values, separated by commas: one column each.",
    )
    if g4.button(
        "Render the grid", disabled=page.engine is None or busy, icon=":material/grid_view:"
    ):
        try:
            seeds = parse_values(seeds_text, int, "Seeds")
            values = parse_values(values_text, float, f"{axis.capitalize()} values")
            grid = variation_grid(settings, seeds, **{axis: values})
        except NeuroChipError as err:
            st.session_state["grid_error"] = str(err)
        else:
            st.session_state.pop("grid_error", None)
            start_grid(page, grid)
            st.rerun()
    if st.session_state.get("grid_error"):
        st.error(st.session_state["grid_error"], icon=":material/error:")


def start_grid(page: Page, grid) -> None:
    engine, song, song_key, key = page.engine, page.song, page.song.key, grid_key(page)
    start, quality = page.preview_start, QUICK_PREVIEW if page.quick else FAITHFUL_PREVIEW
    bars = list(page.bars_s) or None

    def work(progress, cancel):
        # The song itself: each cell's notes are counted against the sketch's own, by bar.
        variations = render_variations(
            engine,
            song,
            grid,
            region=(start, PREVIEW_SECONDS),
            bar_times_s=bars,
            progress=progress,
            cancel=cancel,
            quality=quality,
        )
        return ui.GridPreview(song_key, key, grid, variations)

    ui.start_job("grid", Job(work, name="grid"), "the variation grid", song_key=song_key)


def changes(page: Page, shown) -> list[str]:
    """What moved on since ``shown`` was rendered: settings by label, then the region."""
    moved = [f"*{label}*" for label in shown.grid.changed_settings(page.settings)]
    made_for = shown.key if isinstance(shown.key, tuple) and len(shown.key) == 3 else (None,) * 3
    _, start, was_quick = made_for
    _, now_start, now_quick = grid_key(page)
    if start != now_start:
        moved.append("the preview region")
    if was_quick != now_quick:
        moved.append("*Quick previews*")
    return moved


def use_variation(page: Page, shown, chosen: dict, cell) -> None:
    """*Use this*: the cell's seed and value into the settings (a prompt typed since stays)."""
    state.set_settings(**chosen)
    if not changes(page, shown):
        # The grid answers for these settings, region and quality: the cell is the preview
        # they would make, so it becomes the preview instead of being rendered again.
        key = preview_key(page, page.settings.replace(**chosen))
        running = ui.job_of("preview")
        if running is not None:
            running.cancel()
        ui.board().forget("preview")
        # (Its time is the whole grid's: not said as the preview's.)
        render = dataclasses.replace(cell.render, seconds=None)
        ui.keep_preview(ui.Preview(page.song.key, key, render, cell.faithfulness))
        st.session_state["preview_key"] = key
    st.session_state["_rerun_page"] = True  # the settings above show the cell's


def cells(page: Page, shown, busy: bool) -> None:
    """The grid's cells: each plays, says its notes kept, and can be used. A click here
    reruns the grid alone (a fragment), not the page."""

    @st.fragment
    def grid_cells() -> None:
        if st.session_state.pop("_rerun_page", False):
            st.rerun()  # Use this changed the settings: the whole page shows them
        draw_cells(page, shown, busy)

    grid_cells()


def cell_measures(faith) -> str:
    """ "notes kept 86% (sketch 79%) · chroma 0.91" (the chroma alone where notes were not
    counted; the sketch's own share heard where that is less than all)."""
    if faith.notes is None:
        return f"chroma {faith.score:.2f} (notes not counted)"
    if faith.notes.notes.sketch == 0:
        return f"notes kept: none to keep · chroma {faith.score:.2f}"
    ceiling = ui.sketch_ceiling(faith.notes)
    return f"notes kept {faith.notes.score:.0%}{ceiling} · chroma {faith.score:.2f}"


def draw_cells(page: Page, shown, busy: bool) -> None:
    grid, variations, settings = shown.grid, shown.variations, page.settings
    moved = changes(page, shown)
    if moved:
        st.caption(
            f":material/history: Out of date: rendered before {ui.join_words(moved)} "
            + ("changed; the new grid is rendering." if busy else "changed.")
            + " *Render the grid* again to hear the cells as things stand."
        )
    elif busy:
        st.caption(":material/history: The last grid, while the new one renders.")
    best = best_variations(variations)
    rows, columns = grid.shape
    thumbs = ui.memo(
        "grid_thumbs",
        shown,
        lambda: [spectrogram_thumbnail(v.render.output_image, 240, 64) for v in variations],
    )
    for row in range(rows):
        row_cells = st.columns(columns)
        for column in range(columns):
            i = grid.index(row, column)
            variation = variations[i]
            with row_cells[column].container(border=True):
                kept = cell_measures(variation.faithfulness)
                if i in best:
                    kept += " · best" if len(best) == 1 else " · tied best"
                chosen = grid.chosen(i)
                if all(getattr(settings, name) == value for name, value in chosen.items()):
                    kept += " · in use"
                st.markdown(f"**{variation.label}**  \n:small[{kept}]")
                st.image(thumbs[i], width="stretch")
                st.audio(
                    ui.memo(
                        f"grid_wav_{i}", shown, lambda v=variation: ui.wav_bytes(v.render.audio)
                    )
                )
                st.button(
                    "Use this",
                    key=f"use_cell_{i}",
                    on_click=use_variation,
                    args=(page, shown, chosen, variation),
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
        picked = [variations[labels.index(label)] for label in compared]
        sources = ui.memo(
            "grid_ab",
            (shown, tuple(compared)),
            lambda: (
                {"Sketch": ui.wav_bytes(picked[0].render.source)}
                | {v.label: ui.wav_bytes(v.render.audio) for v in picked}
            ),
        )
        ab_player(sources, key="grid_ab", offset_s=picked[0].render.start_s, height=120)
