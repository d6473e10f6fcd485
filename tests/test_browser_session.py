"""The composer's session survives what a composer does to a page (issue 23).

In a real browser, as tests/test_browser.py drives the app: what was set up on Arrange (the
Sections rows, the stems and their instruments, the span, the loop, the preview region, the
view toggles, an audio song's beat grid) is still there after a trip to Takes, a refresh and
a restart, and ``state.json`` in the workspace holds it (neurochip/session.py).

Nothing here renders: Auto preview is turned off before anything else, so the page only
loads songs (seconds with the tiny model on a busy 2-core machine).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf

from tests.chiptune import make_chiptune
from tests.test_browser import (
    CHROMIUM,
    FLAGS,
    app_command,
    edit_cell,
    open_page,
    serving,
    serving_process,
)

#: What the composer types into the Sections table: (Starts at, Prompt) per row.
SECTIONS = [("0", "soft strings"), ("bar 2", "a full funk band")]

#: Where the demo's instrument map puts the bass: its row, and the Instrument column's x.
BASS_ROW, INSTRUMENT_X = 2, 350


@pytest.fixture
def app_url(tmp_path, tiny_model_dir):
    """An app with the tiny model, its home in ``tmp_path``."""
    with serving(app_command(tiny_model_dir, tmp_path), tmp_path / "app.log") as url:
        yield url


def kept_session(tmp_path: Path):
    """The ComposerSession in the workspace of the app that ``app_command`` starts."""
    from neurochip.session import ComposerSession

    data = json.loads((tmp_path / "home" / "workspace" / "state.json").read_text())
    return ComposerSession.from_dict(data)


def wait_until_kept(tmp_path: Path, what: str, holds: Callable) -> None:
    """Wait until the workspace's state.json holds ``what`` (``holds(session)``): the server
    has taken the change. A page link clicked before that can lose it in Streamlit itself
    (its fast reruns stop the change's run before its callbacks, and a page link's request
    carries none of the old page's widget values), whatever the app does."""
    deadline = time.monotonic() + 240
    while True:
        try:
            if holds(kept_session(tmp_path)):
                return
        except (FileNotFoundError, KeyError):
            pass  # not written yet, or not this song yet (state.json is written whole)
        assert time.monotonic() < deadline, f"state.json never held {what}"
        time.sleep(0.1)  # how often to look, not what to conclude


def set_switch(page, label: str, on: bool) -> None:
    """Turn a toggle or checkbox on or off, by its label. While the page reruns Streamlit can
    show the old widget beside the new one: click only when there is one, until it is so."""
    page.wait_for_function(
        """([label, on]) => {
            const found = [...document.querySelectorAll("[data-testid='stCheckbox']")]
                .filter(e => e.innerText.trim() === label).map(e => e.querySelector('input'));
            if (found.length !== 1) return false;
            if (found[0].checked !== on) found[0].click();
            return found[0].checked === on;
        }""",
        arg=[label, on],
        polling=500,
    )


def expect_switch(page, label: str, on: bool) -> None:
    """The page shows the toggle or checkbox ``label`` on (or off), once it is drawn: one of
    it (a run may show the old copy beside the new one for a moment), in that state."""
    page.wait_for_function(
        """([label, on]) => {
            const found = [...document.querySelectorAll("[data-testid='stCheckbox']")]
                .filter(e => e.innerText.trim() === label).map(e => e.querySelector('input'));
            return found.length === 1 && found[0].checked === on;
        }""",
        arg=[label, on],
        polling=500,
        timeout=240_000,
    )


def unfold(page, title: str):
    """The expander whose title holds ``title``, opened (a click, as a composer does);
    a page drawn anew may show it folded."""
    from playwright.sync_api import expect

    expander = page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text=title))
    expect(expander).to_have_count(1)
    if expander.locator("details").get_attribute("open") is None:
        expander.locator("summary").click()
    expect(expander.locator("details")).to_have_attribute("open", "")
    return expander


def number_box(page, label: str):
    """The text field of the number box labelled ``label`` (its start)."""
    return page.get_by_test_id("stNumberInput").filter(has_text=label).locator("input")


def type_number(page, label: str, value: str) -> None:
    """Type ``value`` into a number box and press Enter, as with a keyboard (once the page
    shows one such box: the last song's can stay until the run that opened another ends)."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stNumberInput").filter(has_text=label)).to_have_count(1)
    field = number_box(page, label)
    # As the box shows it: 4 as "4" or "4.00", 0.53 as "0.53" or "0.530".
    zeros = "0*" if "." in value else r"(\.0*)?"
    shown = re.compile(rf"^{re.escape(value)}{zeros}$")
    # A run that ends between the typing and Enter (the demo's first preview, started
    # before Auto preview went off) can draw the box anew with the value it had, and the
    # Enter then keeps that: type again, as a composer would, until the box holds it.
    for _ in range(4):
        field.fill(value)
        field.press("Enter")
        try:
            expect(field).to_have_value(shown, timeout=30_000)
            return
        except AssertionError:
            continue
    field.fill(value)  # the last try, with the tests' whole wait: its failure is the test's
    field.press("Enter")
    expect(field).to_have_value(shown)


def cells(table):
    """A data editor's cells, row by row (its accessible table: the grid is a canvas)."""
    return table.locator("[role='gridcell']")


def audio_sketch(tmp_path: Path, name: str, seconds: float, seed: int = 0) -> Path:
    """A chip tune as a WAV file (another length or drum pattern: another song)."""
    path = tmp_path / name
    sf.write(path, make_chiptune(seconds, seed=seed).T, 44100, subtype="PCM_16")
    return path


def upload(page, path: Path, seconds: float) -> None:
    """Upload an audio sketch; returns once it is the song open (its length on the page)."""
    from playwright.sync_api import expect

    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(path)
    expect(page.get_by_text(f"({seconds:.2f} s)")).to_be_visible()


def bars_title(page):
    """The title of the open audio song's Bars expander."""
    return page.get_by_test_id("stExpander").locator("summary").filter(has_text="Bars:")


def press_until_moved(thumb, key: str) -> None:
    """Press ``key`` on a slider until its value text leaves 0.00. A run that ends just as
    the key goes down (the demo's first preview, started before Auto preview went off)
    redraws the slider with the value it had: press again, as a composer would, until it
    moves (as :func:`set_switch` clicks until a toggle is so)."""
    from playwright.sync_api import expect

    for _ in range(5):
        thumb.focus()
        thumb.press(key)
        try:
            expect(thumb).not_to_have_attribute("aria-valuetext", "0.00", timeout=30_000)
            return
        except AssertionError:
            continue
    # The last try, with the tests' whole wait: its failure is the test's.
    thumb.press(key)
    expect(thumb).not_to_have_attribute("aria-valuetext", "0.00")


def region_slider(page):
    # While a run draws the page, Streamlit can show an element's copy from the run before
    # beside the new one (when something above it moved it down): the last one is the new.
    return (
        page.get_by_test_id("stSlider")
        .filter(has_text="Preview region start")
        .get_by_role("slider")
        .last
    )


def open_the_demo(page) -> None:
    """The demo song open, with Auto preview off (nothing renders meanwhile)."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Try the demo").click()
    expect(page.get_by_text("greensleeves.mid").first).to_be_visible()
    set_switch(page, "Auto preview", False)


def takes_and_back_then_refresh(page, as_left) -> None:
    """To Takes and back, then a refresh (a new browser session, read from the workspace):
    ``as_left(after)`` checks the page after each."""
    from playwright.sync_api import expect

    page.get_by_role("link", name="Takes").click()
    expect(page.get_by_text("No takes yet")).to_be_visible()
    page.get_by_role("link", name="Arrange").click()
    as_left("a trip to Takes")
    page.reload()
    as_left("a refresh")


def test_takes_and_back_a_refresh_and_state_json_keep_the_arrange_setup(app_url, tmp_path):
    """Sections rows, stems on with an edited instrument, a 10 s span and the loop: as left
    after a trip to Takes, after a refresh, and in the workspace's state.json."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    sections_cells = [cell for start, prompt in SECTIONS for cell in (start, prompt, "", "")]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, app_url)
        open_the_demo(page)

        # Two rows of the timeline, typed cell by cell (a click on the row past the last
        # adds a row).
        sections = unfold(page, "Sections: a prompt timeline").get_by_test_id("stDataFrame")
        expect(sections).to_be_visible()
        for row, (start, prompt) in enumerate(SECTIONS):
            edit_cell(page, sections, row, 60, start, new_row=True)
            edit_cell(page, sections, row, 250, prompt)
        expect(cells(sections)).to_have_text(sections_cells)
        expect(page.get_by_text("needs both")).to_have_count(0)

        # Stems on, the bass a slap bass.
        stems = unfold(page, "Stems: an instrument per part").get_by_test_id("stDataFrame")
        expect(stems).to_be_visible()
        set_switch(page, "Render as stems", True)
        expect(page.get_by_role("button", name="Render stems")).to_be_visible()
        edit_cell(page, stems, BASS_ROW, INSTRUMENT_X, "slap bass")
        expect(page.get_by_text("Bass (triangle) → slap bass")).to_be_visible()  # as rendered

        # A 10 s span, as a seamless loop.
        type_number(page, "Duration (s)", "10")
        expect(number_box(page, "Duration (s)")).to_have_value(re.compile(r"^10(\.0+)?$"))
        set_switch(page, "Seamless loop", True)
        wait_until_kept(tmp_path, "the loop", lambda kept: kept.songs[kept.song_key or ""].loop)

        def as_left(how: str) -> None:
            expect(page.get_by_text("greensleeves.mid").first).to_be_visible()
            expect(number_box(page, "Duration (s)"), f"Duration after {how}").to_have_value(
                re.compile(r"^10(\.0+)?$")
            )
            expect_switch(page, "Seamless loop", True)
            expect_switch(page, "Auto preview", False)
            table = unfold(page, "Sections: a prompt timeline").get_by_test_id("stDataFrame")
            expect(cells(table), f"Sections rows after {how}").to_have_text(sections_cells)
            table = unfold(page, "Stems: an instrument per part").get_by_test_id("stDataFrame")
            expect_switch(page, "Render as stems", True)
            expect(
                cells(table).filter(has_text=re.compile("^slap bass$")),
                f"the edited instrument after {how}",
            ).to_have_count(1)
            expect(page.get_by_text("Bass (triangle) → slap bass")).to_be_visible()

        takes_and_back_then_refresh(page, as_left)
        browser.close()

    session = kept_session(tmp_path)
    assert session.song_key is not None, "state.json: no song open"
    setup = session.songs[session.song_key]
    assert [(row["start"], row["prompt"]) for row in setup.sections] == SECTIONS
    assert setup.stems_on
    assert setup.stems is not None and setup.stems[BASS_ROW]["prompt"] == "slap bass"
    assert setup.duration_s == 10.0
    assert setup.loop


def test_a_restart_keeps_an_audio_songs_typed_beat_grid(tiny_model_dir, tmp_path):
    """Tempo 152 and bar 1 at 0.53 s, typed on an audio sketch: a new server on the same
    home shows that grid, not beat tracking's guess (nor 120 BPM); and it is that song's:
    another song's grid typed meanwhile leaves it as it was."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    tune = audio_sketch(tmp_path, "minuet-sketch.wav", 6.0)
    other = audio_sketch(tmp_path, "reel-sketch.wav", 5.0, seed=1)
    typed = re.compile(r"Bars: 152 BPM, \d+ beats, bar 1 at 0\.53 s \(typed\)")
    command = app_command(tiny_model_dir, tmp_path)  # both servers: the same --home
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        with serving_process(command, tmp_path / "app.log") as (url, process):
            page = open_page(browser, url)
            upload(page, tune, 6.0)
            set_switch(page, "Auto preview", False)
            bars = unfold(page, "Bars:")
            type_number(page, "Tempo (BPM)", "152")
            expect(bars.locator("summary")).to_contain_text("152 BPM")
            type_number(page, "Bar 1 starts at", "0.53")
            expect(bars.locator("summary")).to_have_text(typed)
            process.kill()  # the server dies, as in a crash
            process.wait(30)
            page.close()

        with serving(command, tmp_path / "app-again.log") as url:
            page = open_page(browser, url)
            expect(page.get_by_text("(6.00 s)")).to_be_visible()  # the song reloaded
            expect(bars_title(page), "the typed grid after a restart").to_have_text(typed)
            unfold(page, "Bars:")
            expect(number_box(page, "Tempo (BPM)")).to_have_value(re.compile(r"^152(\.0+)?$"))
            expect(number_box(page, "Bar 1 starts at")).to_have_value("0.53")

            # Another song, its own grid typed; then this one again: its grid as typed.
            upload(page, other, 5.0)
            expect(bars_title(page)).not_to_have_text(typed)
            unfold(page, "Bars:")
            type_number(page, "Tempo (BPM)", "100")
            expect(bars_title(page)).to_contain_text(re.compile(r"Bars: 100 BPM.*\(typed\)"))
            upload(page, tune, 6.0)
            expect(bars_title(page), "the typed grid after another song").to_have_text(typed)
        browser.close()

    grids = {
        setup.bar_grid.bpm: (setup.bar_grid.downbeat_s, setup.bar_grid_source)
        for setup in kept_session(tmp_path).songs.values()
        if setup.bar_grid is not None
    }
    assert grids[152.0] == (0.53, "typed")
    assert grids[100.0][1] == "typed"


def test_a_refresh_keeps_the_preview_region_and_quick_previews(app_url, tmp_path):
    """The preview region moved to the song's last window and Quick previews on: both as
    left after a trip to Takes and after a refresh; the region is the song's (another song
    and back finds it), and state.json holds them."""
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    other = audio_sketch(tmp_path, "reel-sketch.wav", 8.0, seed=1)  # longer than a preview
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, app_url)
        open_the_demo(page)

        thumb = region_slider(page)
        press_until_moved(thumb, "End")  # the last window of the song, by keyboard
        last_start = thumb.get_attribute("aria-valuetext") or ""
        assert float(last_start) > 20  # the demo is 29.84 s
        wait_until_kept(
            tmp_path,
            "the preview region moved",
            lambda kept: kept.songs[kept.song_key or ""].preview_start_s > 20,
        )
        set_switch(page, "Quick previews", True)
        wait_until_kept(tmp_path, "Quick previews on", lambda kept: kept.view.quick_preview)

        def as_left(after: str) -> None:
            expect(page.get_by_text("(29.84 s)")).to_be_visible()
            expect(region_slider(page), f"the preview region after {after}").to_have_attribute(
                "aria-valuetext", last_start
            )
            expect_switch(page, "Quick previews", True)

        takes_and_back_then_refresh(page, as_left)
        expect_switch(page, "Auto preview", False)

        # Another song (its own region, from 0), then the demo again: its region as left.
        upload(page, other, 8.0)
        expect(region_slider(page)).to_have_attribute("aria-valuetext", "0.00")
        page.get_by_role("button", name="Try the demo").click()
        expect(page.get_by_text("(29.84 s)")).to_be_visible()
        expect(region_slider(page), "the demo's region after another song").to_have_attribute(
            "aria-valuetext", last_start
        )
        expect_switch(page, "Quick previews", True)
        browser.close()

    session = kept_session(tmp_path)
    assert session.view.quick_preview and not session.view.auto_preview
    demo = session.songs[session.song_key or ""]
    assert demo.preview_start_s == pytest.approx(float(last_start), abs=0.01)


def quick_previews_page() -> None:
    """A page with one view of the session: the Quick previews toggle."""
    import streamlit as st

    from app import state

    state.toggle(st, "view.quick_preview", "Quick previews")


@pytest.mark.parametrize("arrives", ["as its callback starts", "as the session is written"])
def test_a_page_link_clicked_during_a_toggles_callback_keeps_the_toggle(
    tmp_path, monkeypatch, arrives
):
    """What the test above met by chance, every time: a rerun request (a page link clicked
    right after the toggle) stops the run at its next yield point, the toggle's ``on_change``
    included (Streamlit's ``runner.fastReruns``), and no later run calls that callback again.
    The toggle's change is still in the session, in state.json, and on the next page (a
    refresh) too."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.testing.v1 import AppTest

    from app import state
    from neurochip.session import ComposerSession

    monkeypatch.setenv("NEUROCHIP_HOME", str(tmp_path))
    monkeypatch.delenv("NEUROCHIP_MODEL", raising=False)
    in_callback: list[bool] = []

    def link_clicked() -> None:
        get_script_run_ctx().script_requests.request_stop()  # as Streamlit does for a rerun

    writer, to_dict = state._writer, ComposerSession.to_dict

    def writer_meeting_a_click(*args, **kwargs):
        changed = writer(*args, **kwargs)

        def callback() -> None:
            in_callback.append(True)
            if arrives == "as its callback starts":
                link_clicked()
            try:
                changed()
            finally:
                in_callback.clear()

        return callback

    def to_dict_meeting_a_click(session):
        if in_callback and arrives == "as the session is written":
            link_clicked()
        return to_dict(session)

    monkeypatch.setattr(state, "_writer", writer_meeting_a_click)
    monkeypatch.setattr(ComposerSession, "to_dict", to_dict_meeting_a_click)
    page = AppTest.from_function(quick_previews_page).run()
    page.toggle[0].set_value(True).run()  # stopped by the click

    assert page.session_state["composer"].view.quick_preview
    assert json.loads((tmp_path / "workspace" / "state.json").read_text())["view"]["quick_preview"]
    refreshed = AppTest.from_function(quick_previews_page).run()
    assert refreshed.toggle[0].value is True
