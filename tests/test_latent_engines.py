"""What every engine over a latent audio model keeps (ACE-Step 1.5 and Stable Audio 3, issues
25 and 26), on the tests' tiny random-weight pipelines: takes of the span's exact length that
say their engine, the same seed the same take, takes together equal takes alone (grids,
stems), a preview that is its region of the full render, a re-roll that keeps the rest of the
take sample for sample, loops, cancel. Each engine's own: tests/test_ace_step.py,
tests/test_stable_audio_3.py. The tiny models' output is noise: the workflow, never the sound."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from neurochip.errors import RenderCancelled
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings
from tests.chiptune import make_chiptune


@dataclass(frozen=True)
class Case:
    fixture: str  # the engine's conftest fixture
    kind: str
    rate: int
    base: RenderSettings
    knob: dict  # a change of the engine's own knob that changes a take


CASES = {
    "ace-step": Case(
        "ace_engine",
        "ace-step",
        48000,
        RenderSettings(prompt="a funk band with slap bass", steps=3, seed=7),
        {"cover_strength": 0.5},
    ),
    "stable-audio-3": Case(
        "sa3_engine",
        "stable-audio-3",
        44100,
        RenderSettings(prompt="a funk band with slap bass", steps=4, denoise=0.7, seed=7),
        {"denoise": 0.4},
    ),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return CASES[request.param]


@pytest.fixture(scope="module")
def latent_engine(case, request):
    return request.getfixturevalue(case.fixture)


@pytest.fixture(scope="module")
def song() -> Audio:
    return Audio(make_chiptune(6.3, seed=3), 44100)


@pytest.fixture(scope="module")
def take(latent_engine, case, song):
    return latent_engine.render(song, case.base)


def close(a: Audio, b: Audio) -> bool:
    return a.frames == b.frames and np.allclose(a.samples, b.samples, atol=1e-5)


def test_a_take_has_the_spans_exact_length_and_says_its_engine(latent_engine, case, song, take):
    assert take.audio.sample_rate == case.rate and take.audio.channels == 1
    assert take.audio.frames == round(6.3 * case.rate)  # sample-exact, not whole latent frames
    assert take.source.frames == take.audio.frames
    assert take.info["engine"] == case.kind and take.info["spec"]["kind"] == case.kind
    assert take.output_image.shape[-1] == take.input_image.shape[-1]
    span = latent_engine.render(song, case.base.replace(start_s=1.0, duration_s=2.5))
    assert span.audio.frames == round(2.5 * case.rate) and span.start_s == 1.0


def test_the_same_seed_gives_the_same_take_and_another_seed_or_knob_another(
    latent_engine, case, song, take
):
    again = latent_engine.render(song, case.base)
    assert np.array_equal(again.audio.samples, take.audio.samples)
    for change in ({"seed": 8}, case.knob):
        other = latent_engine.render(song, case.base.replace(**change))
        # Another take, not float noise (the tiny models move little with some knobs).
        assert np.abs(other.audio.samples - take.audio.samples).max() > 1e-4


def test_takes_rendered_together_equal_takes_rendered_alone(latent_engine, case, song, take):
    settings = [
        case.base,
        case.base.replace(seed=11, **case.knob),
        case.base.replace(prompt="a string quartet in a concert hall, warm", steps=2),
    ]
    together = latent_engine.render_many(song, settings)
    assert close(together[0].audio, take.audio)
    for one, settings_one in zip(together[1:], settings[1:], strict=True):
        assert close(one.audio, latent_engine.render(song, settings_one).audio)


def test_a_variation_grid_of_seeds_and_the_engines_knob_is_one_call_equal_to_singles(
    latent_engine, case, song
):
    ((name, value),) = case.knob.items()
    cells = [case.base.replace(seed=s, **{name: v}) for s in (1, 2) for v in (value, 0.9)]
    grid = latent_engine.preview_many(song, cells, 1.0)
    assert len(grid) == 4 and grid[0].audio.frames == round(5.12 * case.rate)
    for cell, settings in zip(grid, cells, strict=True):
        assert close(cell.audio, latent_engine.preview(song, settings, 1.0).audio)
    assert not np.allclose(grid[0].audio.samples, grid[1].audio.samples, atol=1e-4)


def test_a_preview_is_its_region_of_the_full_render_when_it_sees_the_whole_song(
    latent_engine, case, song, take
):
    preview = latent_engine.preview(song, case.base, 0.5)
    start = round(0.5 * case.rate)
    region = take.audio.samples[:, start : start + preview.audio.frames]
    assert preview.start_s == 0.5
    assert np.allclose(preview.audio.samples, region, atol=1e-5)


def test_stems_each_with_their_own_prompt_render_together_as_alone(latent_engine, case):
    lead = Audio(make_chiptune(4.0, seed=5), 44100)
    bass = Audio(make_chiptune(4.0, seed=6), 44100)
    takes = [case.base.replace(prompt="a lead guitar"), case.base.replace(prompt="a slap bass")]
    together = latent_engine.render_many([lead, bass], takes)
    assert close(together[1].audio, latent_engine.render(bass, takes[1]).audio)


def test_a_reroll_makes_the_region_anew_and_keeps_the_rest_sample_for_sample(
    latent_engine, case, song, take
):
    rate = case.rate
    candidates = [case.base.replace(seed=21), case.base.replace(seed=22)]
    rerolled = latent_engine.reroll_many(song, take.audio, candidates, (2.0, 3.0), margin_s=0.25)
    before, after = round(1.75 * rate), round(3.25 * rate)
    inside = slice(round(2.2 * rate), round(2.8 * rate))
    for new in rerolled:
        assert new.audio.frames == take.audio.frames
        assert np.array_equal(new.audio.samples[:, :before], take.audio.samples[:, :before])
        assert np.array_equal(new.audio.samples[:, after:], take.audio.samples[:, after:])
        assert not np.allclose(new.audio.samples[:, inside], take.audio.samples[:, inside])
        assert new.info["reroll"]["region_s"] == [2.0, 3.0]
        assert new.info["engine"] == case.kind
    assert not np.allclose(rerolled[0].audio.samples, rerolled[1].audio.samples)
    alone = latent_engine.reroll_many(song, take.audio, candidates[1:], (2.0, 3.0), margin_s=0.25)
    assert close(alone[0].audio, rerolled[1].audio)


def test_a_loop_flows_from_its_last_moment_into_its_first(latent_engine, case, song):
    from tests.test_loop import seam_scores

    looped = latent_engine.render(song, case.base.replace(loop=True, start_s=0.5, duration_s=4.0))
    assert looped.audio.frames == 4 * case.rate and looped.info["loop"]["crossfade_s"] == 0.25
    scores = seam_scores(looped.audio.samples[0])
    assert scores["step"] < 99 and scores["flux"] < 95
    plain = latent_engine.render(song, case.base.replace(start_s=0.5, duration_s=4.0))
    assert seam_scores(plain.audio.samples[0])["step"] > 99  # the check can fail


def test_cancel_stops_a_render(latent_engine, case, song):
    cancel = threading.Event()

    def progress(fraction: float, stage: str | None = None) -> None:
        if stage == "denoise":
            cancel.set()

    with pytest.raises(RenderCancelled):
        latent_engine.render(song, case.base.replace(seed=99), progress=progress, cancel=cancel)
