"""End to end in a real browser: upload a chip tune, move a slider, render, download.

Starts the app (``neurochip app``) on a free localhost port with the tiny random model and
drives Debian's headless Chromium through Playwright. ``make test`` installs Chromium; set
NEUROCHIP_CHROMIUM to use another binary.

The test screenshots the page into a temporary folder, so a test run leaves the tree as it was.
``make screenshots`` sets NEUROCHIP_SCREENSHOTS=docs to refresh the README's picture instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

from tests.chiptune import make_chiptune

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("NEUROCHIP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def screenshot_path(tmp_path: Path) -> Path:
    """Where the page's picture goes: the folder in NEUROCHIP_SCREENSHOTS (relative to the
    repository), or else ``tmp_path``."""
    folder = os.environ.get("NEUROCHIP_SCREENSHOTS")
    return (ROOT / folder if folder else tmp_path) / "arrange.png"


def test_screenshots_stay_out_of_the_tree_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("NEUROCHIP_SCREENSHOTS", raising=False)
    assert screenshot_path(tmp_path) == tmp_path / "arrange.png"
    monkeypatch.setenv("NEUROCHIP_SCREENSHOTS", "docs")
    assert screenshot_path(tmp_path) == ROOT / "docs" / "arrange.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving_process(command: list[str], log_path: Path, cwd: Path = ROOT, env=None):
    """Run a web server command on a free localhost port; yield its URL and its process once
    it is healthy (a test may kill the process itself, as a crash would).

    ``command`` has ``{port}`` where the port goes. The server's output goes to ``log_path``
    and is shown if it fails to start.
    """
    port = free_port()
    log = log_path.open("w")
    process = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in command],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"{command[2]} did not start:\n" + log_path.read_text())
            time.sleep(0.5)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


@contextlib.contextmanager
def serving(command: list[str], log_path: Path, cwd: Path = ROOT, env=None):
    """:func:`serving_process`, yielding the URL alone."""
    with serving_process(command, log_path, cwd, env) as (url, _process):
        yield url


def app_command(tiny_model_dir, tmp_path) -> list[str]:
    command = [sys.executable, "-m", "neurochip", "app", "--port", "{port}"]
    return command + ["--model", str(tiny_model_dir), "--home", str(tmp_path / "home")]


@pytest.fixture
def app_url(tmp_path, tiny_model_dir):
    with serving(app_command(tiny_model_dir, tmp_path), tmp_path / "app.log") as url:
        yield url


def test_upload_tweak_render_download(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    tune = tmp_path / "minuet-sketch.wav"
    sf.write(tune, make_chiptune(6.0).T, 44100, subtype="PCM_16")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        page.set_default_timeout(120_000)
        # Assertions wait as long as actions: on a loaded 2-core machine the first run of the
        # page (importing torch and diffusers) alone can take longer than Playwright's 5 s.
        expect.set_options(timeout=120_000)
        page.goto(app_url)
        expect(page.get_by_text("Drop a WAV")).to_be_visible()

        page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(tune)
        expect(page.get_by_text("minuet-sketch.wav").first).to_be_visible()
        expect(page.locator("[data-testid='stAudio']").first).to_be_visible()

        # Move the Steps slider with the keyboard, as a user can: Home = 1, then up to 3.
        steps = page.locator("[data-testid='stSlider']").filter(has_text="Steps")
        thumb = steps.get_by_role("slider")
        thumb.focus()
        thumb.press("Home")
        thumb.press("ArrowRight")
        thumb.press("ArrowRight")
        expect(thumb).to_have_value("3")

        page.get_by_role("button", name="Render", exact=True).click()
        expect(page.locator("[data-testid='stProgress']").first).to_be_visible()
        expect(page.get_by_text("Rendered in")).to_be_visible(timeout=240_000)
        expect(page.get_by_text("Stereo pair mix")).to_be_visible()
        # The sketch's player and one per take (pair, A, B): wait for the last to arrive.
        expect(page.locator("[data-testid='stAudio']").nth(3)).to_be_visible()

        with page.expect_download() as info:
            page.locator("[data-testid='stDownloadButton'] button").first.click()
        download = info.value
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)
        head = saved.read_bytes()[:64]
        assert head.startswith(b"RIFF"), f"{saved.name}: {saved.stat().st_size} bytes: {head!r}"
        data, rate = sf.read(saved, always_2d=True)
        assert saved.suffix == ".wav" and "minuet-sketch" in saved.name
        assert rate == 44100 and data.shape == (6 * 44100, 2)

        # Streamlit scrolls inside its main container: make the window tall enough for the
        # whole page and go back to the top (the upload and the settings).
        page.set_viewport_size({"width": 1400, "height": 3300})
        page.evaluate("document.querySelector(\"[data-testid='stMain']\")?.scrollTo(0, 0)")
        page.wait_for_timeout(500)
        screenshot = screenshot_path(tmp_path)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    assert screenshot.stat().st_size > 10_000


def player_frame(page):
    """The A/B player's frame (the first one whose page has the player)."""
    for frame in page.frames:
        try:
            if frame.evaluate("() => Boolean(window.abPlayer)"):
                return frame
        except Exception:  # a frame still loading  # noqa: BLE001
            continue
    return None


def open_page(browser, url: str):
    """A tall page on the app, every wait as long as a loaded 2-core machine needs."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.set_default_timeout(240_000)
    expect.set_options(timeout=240_000)
    page.goto(url)
    return page


def upload_and_set_two_steps(page, tune: Path) -> None:
    """Upload a sketch and move Steps to 2 with the keyboard (the auto preview follows)."""
    from playwright.sync_api import expect

    page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files(tune)
    expect(page.get_by_text(tune.name).first).to_be_visible()
    set_two_steps(page)


def open_demo(browser, url: str):
    """The app with its demo song open, Auto preview off and Steps at 2."""
    from playwright.sync_api import expect

    page = open_page(browser, url)
    page.get_by_role("button", name="Try the demo").click()
    expect(page.get_by_text("greensleeves.mid").first).to_be_visible()
    auto_preview_off(page)
    set_two_steps(page)
    return page


def auto_preview_off(page) -> None:
    """Turn Auto preview off (no preview work meanwhile). While the page reruns Streamlit can
    show the old toggle beside the new one: click only when there is one, until it is off."""
    page.wait_for_function(
        """() => {
            const found = document.querySelectorAll('.st-key-view-auto_preview input');
            if (found.length !== 1) return false;
            if (found[0].checked) found[0].click();
            return !found[0].checked;
        }""",
        polling=500,
    )


def set_two_steps(page) -> None:
    thumb = page.locator("[data-testid='stSlider']").filter(has_text="Steps")
    thumb = thumb.get_by_role("slider")
    thumb.focus()
    thumb.press("Home")
    thumb.press("ArrowRight")


def wait_for_player(page):
    """The A/B player's frame, once one is on the page."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('iframe')].some(f => {"
        "  try { return Boolean(f.contentWindow.abPlayer) } catch (e) { return false } })"
    )
    return player_frame(page)


def on_the_last_player(page, check, tries: int = 3) -> None:
    """Run ``check(frame)`` on the A/B player. A preview of the keystrokes before the last one
    can still land and put new audio in the player (a new page in its frame): then the check
    starts again on the new one."""
    from playwright.sync_api import Error

    for attempt in range(tries):
        try:
            check(wait_for_player(page))
            return
        except Error as error:
            replaced = "detached" in str(error) or "destroyed" in str(error)
            if not replaced or attempt == tries - 1:
                raise


def test_preview_ab_grid_and_a_refresh(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    tune = tmp_path / "minuet-sketch.wav"
    sf.write(tune, make_chiptune(6.0).T, 44100, subtype="PCM_16")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, app_url)
        upload_and_set_two_steps(page, tune)

        # The preview: its A/B player plays sketch and take on one clock.
        expect(page.get_by_text("Previewed in")).to_be_visible()

        def switch_at_the_same_place(frame) -> None:
            frame.get_by_role("button", name="A: Sketch").click()
            frame.get_by_role("button", name="Play").click()
            frame.wait_for_function("() => window.abPlayer.currentTime() > 0.3")
            before = frame.evaluate("() => window.abPlayer.currentTime()")
            frame.get_by_role("button", name="B: Take").click()
            after = frame.evaluate("() => window.abPlayer.currentTime()")
            assert frame.evaluate("() => window.abPlayer.active") == 1
            assert before <= after < before + 1.0  # the same place, still moving on

        on_the_last_player(page, switch_at_the_same_place)

        # A variation grid of the region: two seeds x two denoise values, in one render.
        seeds = page.get_by_role("textbox", name="Seeds")
        seeds.fill("5, 6")
        seeds.press("Enter")
        values = page.get_by_role("textbox", name="Denoise values")
        values.fill("0.3, 0.6")
        values.press("Enter")
        page.get_by_role("button", name="Render the grid").click()
        expect(page.get_by_role("button", name="Use this")).to_have_count(4)
        expect(page.get_by_text("notes kept").first).to_be_visible()
        if os.environ.get("NEUROCHIP_SCREENSHOTS"):
            page.evaluate("document.querySelector(\"[data-testid='stMain']\")?.scrollTo(0, 0)")
            page.screenshot(
                path=str(screenshot_path(tmp_path).with_name("arrange-grid.png")), full_page=True
            )
        page.get_by_role("button", name="Use this").last.click()
        expect(page.get_by_label("Seed", exact=True)).to_have_value("6")

        # A refresh brings the song, the settings and the last preview back.
        page.reload()
        expect(page.get_by_text("minuet-sketch.wav").first).to_be_visible()
        expect(page.get_by_label("Seed", exact=True)).to_have_value("6")
        expect(page.get_by_text("Notes kept:")).to_be_visible()
        browser.close()


def test_a_restarted_server_brings_back_the_settings_as_they_were(tiny_model_dir, engine, tmp_path):
    """A fresh server finds the workspace's song and settings while its model still loads: the
    rerun pushed when the model is ready cuts the first page run short. The settings must come
    back as kept (the browser once put every slider at its minimum then, and kept that)."""
    from playwright.sync_api import expect, sync_playwright

    from neurochip.faithfulness import note_faithfulness
    from neurochip.settings import RenderSettings
    from neurochip.sketch import load_sketch
    from neurochip.workspace import Preview, Workspace

    kept = {"denoise": 0.55, "guidance": 11.0, "steps": 3, "seed": 1234, "width": 0.4}
    workspace = Workspace(tmp_path / "home")
    # A MIDI sketch (synthesised again as the page first runs, while the model loads) and its
    # last preview (drawn in those first runs): the page's first runs are long ones.
    midi = (ROOT / "assets" / "greensleeves.mid").read_bytes()
    workspace.keep_sketch(midi, "greensleeves.mid")
    song = load_sketch(midi, name="greensleeves.mid")
    settings = RenderSettings(steps=2, phase_iterations=0)
    render = engine.preview(song.audio, settings, 0.0)
    faithfulness = note_faithfulness(render.source, render.audio)
    workspace.keep_preview(Preview(song.key, "an older key", render, faithfulness))
    workspace.keep_state({"settings": kept, "auto_preview": True, "quick_preview": True})
    command = app_command(tiny_model_dir, tmp_path)
    with serving(command, tmp_path / "app.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, url)
        # The model loaded and the kept settings' preview made: every pushed rerun is over.
        expect(page.get_by_text("Previewed in")).to_be_visible()
        expect(page.get_by_label("Seed", exact=True)).to_have_value("1234")
        for label, value in (("Steps", "3"), ("Denoise", "0.55"), ("Guidance", "11")):
            slider = page.get_by_test_id("stSlider").filter(has_text=label).first
            expect(slider.get_by_role("slider")).to_have_value(value)
        expect(page.get_by_role("switch", name="Quick previews")).to_be_checked()
        browser.close()
    settings = Workspace(tmp_path / "home").state()["settings"]  # (read as the session's)
    assert {name: settings[name] for name in kept} == kept  # and kept so for the next time


def test_finished_work_reaches_the_page_without_waiting_for_a_poll(tiny_model_dir, tmp_path):
    """Pages poll running work every 10 minutes here, far longer than this test may take:
    the upload, the model load and the preview only reach the page because each job pushes
    a rerun of its page when it ends (app/push.py)."""
    from playwright.sync_api import expect, sync_playwright

    tune = tmp_path / "minuet-sketch.wav"
    sf.write(tune, make_chiptune(6.0).T, 44100, subtype="PCM_16")
    env = {**os.environ, "NEUROCHIP_POLL_S": "600"}
    command = app_command(tiny_model_dir, tmp_path)
    with serving(command, tmp_path / "app.log", env=env) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, url)
        upload_and_set_two_steps(page, tune)
        expect(page.get_by_text("Previewed in")).to_be_visible()
        # And again: a change to a take on the page (the last preview stays, marked out of
        # date, until the new one is pushed in).
        page.get_by_test_id("stNumberInput").filter(has_text="Seed").get_by_test_id(
            "stNumberInputStepUp"
        ).click()
        expect(page.get_by_text("Out of date")).to_have_count(1)
        expect(page.get_by_text("Out of date")).to_have_count(0)
        expect(page.get_by_text("Previewed in")).to_be_visible()
        browser.close()


def test_fix_a_bar_comp_two_takes_and_loop_for_the_game(app_url, tmp_path):
    """Issue 12 as a game composer does it: render the demo as a loop with a stereo pair,
    hear it loop, re-roll bars of take B, comp bars of A and B, save the comp."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_demo(browser, app_url)
        page.locator("[data-testid='stSlider']").filter(has_text="Steps").get_by_role(
            "slider"
        ).press("ArrowRight")  # 3 steps: one denoising step at denoise 0.35
        # Click the label, as a composer does: Streamlit's input itself is a 1-pixel box
        # that Playwright sometimes finds outside the viewport.
        page.locator("[data-testid='stCheckbox']").filter(has_text="Seamless loop").locator(
            "label"
        ).click()
        expect(page.get_by_role("checkbox", name="Seamless loop")).to_be_checked()
        page.get_by_role("button", name="Render", exact=True).click()
        expect(page.get_by_text("Rendered in")).to_be_visible()

        # The loop plays on repeat in the A/B player, its loop on.
        expect(page.get_by_text("A seamless loop")).to_be_visible()
        frame = wait_for_player(page)
        frame.get_by_role("button", name="Play").click()
        frame.wait_for_function("() => window.abPlayer.currentTime() > 0.2")
        assert frame.locator("#player").get_attribute("data-loop") == "true"

        # Takes: open take B, re-roll two bars with two candidates.
        page.get_by_role("link", name="Takes").click()
        expect(page.get_by_text("Take · settings")).to_be_visible()
        rows = page.locator("[data-testid='stHorizontalBlock']").filter(has_text="seed 43")
        rows.first.get_by_role("button", name="More").click()
        expect(page.get_by_text("Fix a part")).to_be_visible()
        bars = page.locator("[data-testid='stSlider']").filter(has_text="Bars to re-roll")
        high = bars.get_by_role("slider").last
        high.focus()
        high.press("ArrowRight")  # bars n to n+1
        page.get_by_role("button", name="Re-roll", exact=True).click()
        expect(page.get_by_text("Candidate 2 ·")).to_be_visible()
        expect(page.get_by_text("re-rolled bars").first).to_be_visible()

        # Comp: takes A and B as lanes, B from the third bar on, saved as a take.
        page.get_by_text("Comp bars of several takes").click()
        picker = page.locator("[data-testid='stMultiSelect']").filter(has_text="Takes to comp")
        for seed in ("(seed 42)", "(seed 43)"):
            field = picker.locator("input")
            field.click()
            field.fill(seed)  # type to find it, as with a keyboard
            page.get_by_role("option").filter(has_text=seed).first.click()
            page.keyboard.press("Escape")
            expect(picker.get_by_text(seed)).to_be_visible()
        expect(page.locator(".st-key-comp_1_4 button").first).to_be_visible()
        for segment in (2, 3, 4):
            page.locator(f".st-key-comp_1_{segment} button").first.click()
            expect(page.locator(f".st-key-comp_1_{segment} button").first).to_have_attribute(
                "data-testid", "stBaseButton-primary"
            )
        page.get_by_role("button", name="Save the comp as a take").click()
        expect(page.get_by_text("Added").first).to_be_visible()
        expect(page.get_by_text("comp", exact=False).first).to_be_visible()
        browser.close()


def settled_box(page, element) -> dict:
    """Where an element is once the page has stopped moving it (a rerun can still be adding
    things above it): its box, the same two looks in a row."""
    box = element.bounding_box()
    while True:
        page.wait_for_timeout(300)
        again = element.bounding_box()
        if again == box:
            return box
        box = again


def edit_cell(page, grid, row: int, column_x: float, text: str, new_row=False) -> None:
    """Type ``text`` into a data editor's cell, as with a keyboard: click the cell (row 0
    is the first under the header), Enter, type, Enter. A click on the row past the last
    (``new_row``) adds a row and opens its cell's editor itself."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    editor = page.locator(".gdg-input").last
    for _ in range(5):  # a rerun can remount the grid between the click and Enter: again
        grid.scroll_into_view_if_needed()
        box = settled_box(page, grid)
        page.mouse.click(box["x"] + column_x, box["y"] + 35 * (row + 1) + 17)
        if not new_row:
            page.keyboard.press("Enter")
        try:
            editor.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            new_row = False  # the row was added by the first click
    else:
        raise AssertionError("The table's cell editor never opened.")
    editor.fill(text)
    page.keyboard.press("Enter")
    editor.wait_for(state="detached")


def test_stems_from_the_instrument_map_with_sections_solo_mute_and_the_zip(app_url, tmp_path):
    """Issue 13 as a chip composer does it: the demo's parts as stems, the bass made a slap
    bass in the instrument map, a section from bar 2 in the timeline, render, solo and mute
    on the mixer, and the ZIP for the DAW."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_demo(browser, app_url)

        # The timeline: a new band from bar 2.
        page.get_by_text("Sections: a prompt timeline").click()
        sections = page.locator(".st-key-sections_expander [data-testid='stDataFrame']")
        expect(sections).to_be_visible()
        edit_cell(page, sections, 0, 60, "bar 2", new_row=True)
        edit_cell(page, sections, 0, 250, "a full funk band")
        expect(page.get_by_text("needs both")).to_have_count(0)

        # The instrument map: a stem per part; the bass becomes a slap bass.
        page.get_by_text("Stems: an instrument per part").click()
        stems = page.locator(".st-key-stems_expander [data-testid='stDataFrame']")
        expect(stems).to_be_visible()
        edit_cell(page, stems, 2, 350, "slap bass")
        page.get_by_text("Render as stems").click()
        expect(page.get_by_text("Bass (triangle) → slap bass")).to_be_visible()  # as rendered
        render = page.get_by_role("button", name="Render stems")
        expect(render).to_be_enabled()
        render.click()
        expect(page.get_by_text("Rendered in")).to_be_visible()
        expect(page.get_by_text("Stem mixer")).to_be_visible()
        wait_for_player(page)

        # Solo the bass, mute the lead: the mix follows, and can be kept.
        keep = page.get_by_role("button", name="Keep this mix")
        expect(keep).to_be_disabled()  # the mix as rendered is kept already
        page.locator("[class*='st-key-mix_'][class*='_2_solo'] label").click()
        page.locator("[class*='st-key-mix_'][class*='_0_mute'] label").click()
        expect(keep).to_be_enabled()
        keep.click()
        expect(keep).to_be_disabled()

        # The ZIP: a WAV per stem, the mix, the tempo map, the settings.
        with page.expect_download() as download:
            page.get_by_role("button", name="Download stems (ZIP)").click()
        target = tmp_path / "stems.zip"
        download.value.save_as(target)
        browser.close()

    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        description = json.loads(archive.read("stems.json"))
        lengths = {sf.info(io.BytesIO(archive.read(n))).frames for n in names if n.endswith(".wav")}
    assert len([n for n in names if n.startswith("stems/")]) == 4
    assert {"mix.wav", "tempo.mid", "stems.json", "README.txt"} <= set(names)
    assert len(lengths) == 1  # every file the song's length: they line up in a DAW
    by_name = {entry["name"]: entry for entry in description["stems"]}
    assert by_name["Bass (triangle)"]["prompt"] == "slap bass"
    assert by_name["Bass (triangle)"]["mix"]["solo"] and by_name["Lead (pulse 25%)"]["mix"]["mute"]
    assert [s["prompt"] for s in description["settings"]["sections"]] == ["a full funk band"]
