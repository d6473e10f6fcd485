"""One sketch through the three engines, heard side by side (Riffusion, ACE-Step 1.5, Stable
Audio 3).

In a real browser, as tests/test_browser.py drives the app: a composer renders the same 4 s
of the demo song with Riffusion, switches the Model page to ACE-Step 1.5 and renders it again,
then to Stable Audio 3 and again; on the Takes page the three takes of the sketch are listed
side by side, each labelled with its engine (Riffusion, the default, unsaid) and each one's
big view naming the model that made it; Compare plays two takes of different engines in one
A/B player, first the two newest, then two picked by names the composer gives them (each
take's own name already says its engine, so the three can be told apart in Compare's boxes).
On the tests' tiny random-weight models: the workflow, never the sound.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile as sf

from tests.test_browser import (
    CHROMIUM,
    FLAGS,
    app_command,
    on_the_last_player,
    open_page,
    serving,
    set_two_steps,
)
from tests.test_browser_session import number_box, set_switch, type_number, unfold

#: The span rendered with each engine: the demo's first seconds.
SPAN_S = 4

#: Each engine (its kind in a take's model spec) in the order used, and its takes' sample rate.
ENGINES = {"riffusion": 44100, "ace-step": 48000, "stable-audio-3": 44100}

#: How the Takes page labels each engine's take (its settings; notes kept and chroma after
#: them in the Compare tool's captions).
LABELS = {
    "riffusion": r"seed \d+ · denoise [\d.]+ · guidance [\d.]+ · 2 steps",
    "ace-step": r"ACE-Step 1\.5 · seed \d+ · 8 steps",
    "stable-audio-3": r"Stable Audio 3 · seed \d+ · denoise [\d.]+ · 8 steps",
}

STEREO_PAIR = "Stereo pair (take A + take B)"
COMPARE = "Compare two takes, or build a stereo pair"

#: For each A/B player on the page: its sources' labels and the sample rates in their WAV
#: headers (bytes 24-27), read from the player's own config: which takes the player holds.
PLAYERS = """() => [...document.querySelectorAll('iframe')].flatMap((frame) => {
    try {
        if (!frame.contentWindow.abPlayer) return [];
        const config = frame.contentDocument.getElementById('config').textContent;
        return [JSON.parse(config).sources.map((source) => {
            const head = Uint8Array.from(atob(source.data.slice(0, 64)), (c) => c.charCodeAt(0));
            return [source.label, new DataView(head.buffer).getUint32(24, true)];
        })];
    } catch (e) { return []; }  // a frame still loading
})"""


def library_takes(tmp_path: Path):
    """The takes in the app's home (``app_command`` puts it in ``tmp_path / "home"``),
    oldest first."""
    from neurochip.library import TakeLibrary

    return list(reversed(TakeLibrary(tmp_path / "home").list()))


#: The ids of the takes whose results Arrange shows (each has a Download button keyed by it).
SHOWN_TAKES = """() => [...document.querySelectorAll("[class*='st-key-dl_']")].map(
    (e) => [...e.classList].find((c) => c.startsWith('st-key-dl_')).slice('st-key-dl_'.length))"""


def render_and_wait(page, tmp_path: Path, count: int):
    """Press Render on Arrange and wait until the page shows the render's new take (Arrange
    keeps the last render's take and "Rendered in" on the page while the next one runs);
    returns that take, the ``count``-th in the library."""
    from playwright.sync_api import expect

    before = page.evaluate(SHOWN_TAKES)
    render = page.get_by_role("button", name="Render", exact=True)
    expect(render).to_be_enabled()  # the engine loaded, no other render running
    render.click()
    page.wait_for_function(
        f"""(before) => {{
            const shown = ({SHOWN_TAKES})();
            return shown.length === 1 && !before.includes(shown[0]);
        }}""",
        arg=before,
        polling=500,
    )
    expect(page.get_by_text("Rendered in")).to_be_visible()
    [shown] = page.evaluate(SHOWN_TAKES)
    kept = library_takes(tmp_path)
    assert len(kept) == count and kept[-1].id == shown, [t.id for t in kept]
    return kept[-1]


def choose_engine(page, kind: str, folder: Path, rate_text: str) -> None:
    """On the Model page: the Engine ``kind``, its model folder typed, Use this model; returns
    once the page says it is loaded with its sample rate (``rate_text`` kHz), back on Arrange.
    """
    from playwright.sync_api import expect

    from neurochip.model_spec import ABOUT_KINDS, KIND_NAMES

    name = KIND_NAMES[kind]
    page.get_by_role("link", name="Model & device").click()
    engine = page.get_by_role("combobox", name="Engine", exact=True)
    engine.click()
    page.get_by_role("option", name=name, exact=True).click()
    expect(engine).to_have_value(name)
    source = page.get_by_role("textbox", name="Model", exact=True)
    source.fill(str(folder))
    source.press("Tab")
    page.get_by_role("button", name="Use this model").click()
    loaded = page.get_by_text(re.compile(r"^Loaded: "))
    expect(loaded).to_contain_text(f"Loaded: {name}")
    expect(loaded).to_contain_text(str(folder))
    expect(page.get_by_text(ABOUT_KINDS[kind])).to_be_visible()  # what the engine is
    expect(page.get_by_text(re.compile(rf"^{re.escape(rate_text)} kHz\. Does:"))).to_be_visible()
    page.get_by_role("link", name="Arrange").click()
    # The same song and span as left, with this engine.
    expect(page.get_by_text("greensleeves.mid").first).to_be_visible()
    expect(number_box(page, "Duration (s)")).to_have_value(re.compile(rf"^{SPAN_S}(\.0+)?$"))


def pick(page, box: str, name: str) -> None:
    """Choose the take named ``name`` in the Compare tool's box ``box`` (Take A or B)."""
    from playwright.sync_api import expect

    combobox = page.get_by_role("combobox", name=box, exact=True)
    combobox.click()
    page.get_by_role("option", name=re.compile(f"^{re.escape(name)} ")).click()
    expect(combobox).to_have_value(re.compile(f"^{re.escape(name)} "))


def switch_at_the_same_place(frame) -> None:
    """Play take A in the A/B player, switch to B: B plays on from where A was."""
    frame.get_by_role("button", name="A: Take A").click()
    frame.get_by_role("button", name="Play").click()
    frame.wait_for_function("() => window.abPlayer.currentTime() > 0.3")
    before = frame.evaluate("() => window.abPlayer.currentTime()")
    frame.get_by_role("button", name="B: Take B").click()
    after = frame.evaluate("() => window.abPlayer.currentTime()")
    assert frame.evaluate("() => window.abPlayer.active") == 1
    assert before <= after < before + 1.0  # the same place, in the other engine's take
    frame.get_by_role("button", name="Pause").click()


def player_holds(page, expected: list[list]) -> None:
    """Wait until the page has one A/B player, holding sources of these labels and rates."""
    page.wait_for_function(
        f"""(expected) => {{
            const players = ({PLAYERS})();
            return players.length === 1 && JSON.stringify(players[0]) === JSON.stringify(expected);
        }}""",
        arg=expected,
        polling=500,
    )


@pytest.mark.slow
def test_one_sketch_rendered_by_three_engines_and_compared_on_takes(
    tiny_model_dir, tiny_ace_step_dir, tiny_sa3_dir, tmp_path
):
    from playwright.sync_api import expect, sync_playwright

    from neurochip.model_spec import KIND_NAMES, ModelSpec

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    command = app_command(tiny_model_dir, tmp_path)
    with serving(command, tmp_path / "app.log") as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = open_page(browser, url)

        # 1. The demo, nothing previewing, 4 s as one take (no stereo pair), with Riffusion.
        page.get_by_role("button", name="Try the demo").click()
        expect(page.get_by_text("greensleeves.mid").first).to_be_visible()
        set_switch(page, "Auto preview", False)
        type_number(page, "Duration (s)", str(SPAN_S))
        expect(number_box(page, "Duration (s)")).to_have_value(re.compile(rf"^{SPAN_S}(\.0+)?$"))
        set_switch(page, STEREO_PAIR, False)
        set_two_steps(page)
        takes = [render_and_wait(page, tmp_path, 1)]

        # 2. ACE-Step 1.5, from the tiny folder: the same span again, with its own knobs.
        choose_engine(page, "ace-step", tiny_ace_step_dir, "48")
        expect(page.get_by_test_id("stSlider").filter(has_text="Cover strength")).to_have_count(1)
        takes.append(render_and_wait(page, tmp_path, 2))

        # 3. Stable Audio 3, likewise.
        choose_engine(page, "stable-audio-3", tiny_sa3_dir, "44.1")
        expect(page.get_by_test_id("stSlider").filter(has_text="Cover strength")).to_have_count(0)
        takes.append(render_and_wait(page, tmp_path, 3))

        kinds = [ModelSpec.of_take(take.metadata).kind for take in takes]
        assert kinds == list(ENGINES), f"the takes' engines, in render order: {kinds}"
        # One song, prompt and seed: the names tell the engines apart.
        assert len({take.name for take in takes}) == 3, [take.name for take in takes]

        # 4. Takes: the three takes of the sketch listed side by side, newest first.
        page.get_by_role("link", name="Takes").click()
        expect(page.get_by_text("3 takes", exact=True)).to_be_visible()
        # Each row names its take's engine before the settings, Riffusion's (the default)
        # unsaid; the settings an engine did not read (ACE-Step: denoise, guidance) left out.
        labels = {kind: re.compile(f"^{label}$") for kind, label in LABELS.items()}
        tops = []
        for take, kind in zip(takes, ENGINES, strict=True):
            row = (
                page.get_by_test_id("stHorizontalBlock")
                .filter(has=page.locator(f".st-key-more_{take.id}"))
                .filter(visible=True)
                .last
            )
            expect(row.get_by_text(labels[kind])).to_be_visible()
            expect(row).to_contain_text(take.name)
            tops.append(row.bounding_box()["y"])
        assert tops[2] < tops[1] < tops[0], f"newest first: {tops}"  # SA3, ACE-Step, Riffusion

        # Compare: at first the two newest, Stable Audio 3 and ACE-Step, in the one player,
        # each box's take labelled under it with its engine.
        set_switch(page, COMPARE, True)
        player_holds(page, [["Take A", 44100], ["Take B", 48000]])
        for kind, shown in (("stable-audio-3", 2), ("ace-step", 2), ("riffusion", 1)):
            measured = r"( · notes kept \d+%( · chroma [\d.]+)?| · faithfulness [\d.]+)?"
            label = re.compile(f"^{LABELS[kind]}{measured}$")
            expect(page.get_by_text(label).filter(visible=True)).to_have_count(shown)
        on_the_last_player(page, switch_at_the_same_place)

        # Each take's big view says the model that made it; the composer names each take
        # after its engine, and picks them by those names.
        folders = [tiny_model_dir, tiny_ace_step_dir, tiny_sa3_dir]
        for take, kind, folder in zip(takes, ENGINES, folders, strict=True):
            # (Streamlit keeps a hidden copy of a fragment's button beside the one shown.)
            more = page.locator(f".st-key-more_{take.id} button").locator("visible=true")
            expect(more).to_have_count(1)
            # The mouse off the last button first: its tooltip can stay over this one.
            page.mouse.move(0, 0)
            more.click()
            expect(more).to_have_text("Less")
            settings = unfold(page, "Settings")
            said = ("" if kind == "riffusion" else f"{KIND_NAMES[kind]} ") + str(folder)
            expect(settings.get_by_text("Model:")).to_have_text(f"Model: {said}")
            name = page.locator(f".st-key-name_{take.id} input")
            name.fill(f"{KIND_NAMES[kind]} take")
            page.get_by_role("button", name="Save name and note").click()
            renamed = page.get_by_text(f"{KIND_NAMES[kind]} take", exact=True)
            expect(renamed.filter(visible=True)).to_have_count(1)  # the row's new name
            page.mouse.move(0, 0)
            more.click()
            expect(more).to_have_text("More")
            expect(more).to_have_count(1)

        # ACE-Step against Riffusion, picked by name: a 48 kHz take and a 44.1 kHz one.
        pick(page, "Take A", "ACE-Step 1.5 take")
        pick(page, "Take B", "Riffusion take")
        player_holds(page, [["Take A", 48000], ["Take B", 44100]])
        on_the_last_player(page, switch_at_the_same_place)
        browser.close()

    for take, (kind, rate) in zip(takes, ENGINES.items(), strict=True):
        info = sf.info(take.audio_path)
        assert info.samplerate == rate, f"{kind}: {info.samplerate} Hz"
        assert info.duration == pytest.approx(SPAN_S, abs=0.05), f"{kind}: {info.duration} s"
        assert take.source_name == "greensleeves.mid"
        assert take.metadata.get("engine", "riffusion") == kind
