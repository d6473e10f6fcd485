"""ACE-Step 1.5 as a second engine (issue 25), on the tests' tiny random-weight pipeline:
covers of the exact span, takes together equal takes alone, repaint that keeps the rest of a
take sample for sample, an added part, loops, the song's facts told to the model. The tiny
model's output is noise: these check the workflow, never the sound."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from neurochip.errors import NeuroChipError, RenderCancelled
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings, Section
from tests.chiptune import make_chiptune

RATE = 48000
BASE = RenderSettings(prompt="a funk band with slap bass", steps=3, seed=7)


@pytest.fixture(scope="module")
def song() -> Audio:
    return Audio(make_chiptune(6.3, seed=3), 44100)


@pytest.fixture(scope="module")
def take(ace_engine, song):
    return ace_engine.render(song, BASE)


def close(a: Audio, b: Audio) -> bool:
    return a.frames == b.frames and np.allclose(a.samples, b.samples, atol=1e-5)


def test_a_cover_has_the_spans_exact_length_and_says_its_engine(ace_engine, song, take):
    assert take.audio.sample_rate == RATE and take.audio.channels == 1
    assert take.audio.frames == round(6.3 * RATE)  # sample-exact, not whole latent frames
    assert take.source.frames == take.audio.frames
    assert take.info["engine"] == "ace-step" and take.info["spec"]["kind"] == "ace-step"
    assert take.output_image.shape[-1] == take.input_image.shape[-1]
    span = ace_engine.render(song, BASE.replace(start_s=1.0, duration_s=2.5))
    assert span.audio.frames == round(2.5 * RATE) and span.start_s == 1.0


def test_the_same_seed_gives_the_same_take_and_another_seed_another(ace_engine, song, take):
    again = ace_engine.render(song, BASE)
    assert np.array_equal(again.audio.samples, take.audio.samples)
    other = ace_engine.render(song, BASE.replace(seed=8))
    assert not np.allclose(other.audio.samples, take.audio.samples, atol=1e-3)


def test_takes_rendered_together_equal_takes_rendered_alone(ace_engine, song, take):
    settings = [
        BASE,
        BASE.replace(seed=11, cover_strength=0.5),
        BASE.replace(prompt="a string quartet in a concert hall, warm", steps=2),
    ]
    together = ace_engine.render_many(song, settings)
    assert close(together[0].audio, take.audio)
    for one, settings_one in zip(together[1:], settings[1:], strict=True):
        assert close(one.audio, ace_engine.render(song, settings_one).audio)


def test_a_variation_grid_of_seeds_and_cover_strengths_is_one_call_equal_to_singles(
    ace_engine, song
):
    cells = [BASE.replace(seed=s, cover_strength=c) for s in (1, 2) for c in (0.6, 1.0)]
    grid = ace_engine.preview_many(song, cells, 1.0)
    assert len(grid) == 4 and grid[0].audio.frames == round(5.12 * RATE)
    for cell, settings in zip(grid, cells, strict=True):
        assert close(cell.audio, ace_engine.preview(song, settings, 1.0).audio)
    assert not np.allclose(grid[0].audio.samples, grid[1].audio.samples, atol=1e-4)


def test_a_preview_is_its_region_of_the_full_render_when_it_sees_the_whole_song(
    ace_engine, song, take
):
    preview = ace_engine.preview(song, BASE, 0.5)
    start = round(0.5 * RATE)
    region = take.audio.samples[:, start : start + preview.audio.frames]
    assert preview.start_s == 0.5
    assert np.allclose(preview.audio.samples, region, atol=1e-5)


def test_stems_each_with_their_own_prompt_render_together_as_alone(ace_engine):
    lead = Audio(make_chiptune(4.0, seed=5), 44100)
    bass = Audio(make_chiptune(4.0, seed=6), 44100)
    takes = [BASE.replace(prompt="a lead guitar"), BASE.replace(prompt="a slap bass")]
    together = ace_engine.render_many([lead, bass], takes)
    assert close(together[1].audio, ace_engine.render(bass, takes[1]).audio)


def test_a_reroll_repaints_the_region_and_keeps_the_rest_sample_for_sample(ace_engine, song, take):
    candidates = [BASE.replace(seed=21), BASE.replace(seed=22)]
    rerolled = ace_engine.reroll_many(song, take.audio, candidates, (2.0, 3.0), margin_s=0.25)
    before, after = round(1.75 * RATE), round(3.25 * RATE)
    for new in rerolled:
        assert new.audio.frames == take.audio.frames
        assert np.array_equal(new.audio.samples[:, :before], take.audio.samples[:, :before])
        assert np.array_equal(new.audio.samples[:, after:], take.audio.samples[:, after:])
        assert not np.allclose(
            new.audio.samples[:, round(2.2 * RATE) : round(2.8 * RATE)],
            take.audio.samples[:, round(2.2 * RATE) : round(2.8 * RATE)],
        )
        assert new.info["reroll"]["region_s"] == [2.0, 3.0]
    alone = ace_engine.reroll_many(song, take.audio, candidates[1:], (2.0, 3.0), margin_s=0.25)
    assert close(alone[0].audio, rerolled[1].audio)


def test_a_part_is_made_alone_over_the_song_and_only_by_an_engine_that_can(
    ace_engine, engine, song, take
):
    drums = ace_engine.render_many(song, [BASE.replace(prompt="a live drum kit")], part="drums")[0]
    assert drums.audio.frames == take.audio.frames and drums.info["part"] == "drums"
    assert not np.allclose(drums.audio.samples, take.audio.samples, atol=1e-3)
    with pytest.raises(NeuroChipError, match="choose one of"):
        ace_engine.render_many(song, [BASE], part="kazoo")
    with pytest.raises(NeuroChipError, match="cannot add a part"):
        engine.render_many(song, [BASE], part="drums")  # Riffusion


def test_a_loop_flows_from_its_last_moment_into_its_first(ace_engine, song):
    from tests.test_loop import seam_scores

    looped = ace_engine.render(song, BASE.replace(loop=True, start_s=0.5, duration_s=4.0))
    assert looped.audio.frames == 4 * RATE and looped.info["loop"]["crossfade_s"] == 0.25
    scores = seam_scores(looped.audio.samples[0])
    assert scores["step"] < 99 and scores["flux"] < 95
    plain = ace_engine.render(song, BASE.replace(start_s=0.5, duration_s=4.0))
    assert seam_scores(plain.audio.samples[0])["step"] > 99  # the check can fail


def test_the_songs_facts_reach_the_model(ace_engine, song, take):
    told = ace_engine.render(song, BASE.replace(bpm=96, time_signature=3, key="A minor"))
    assert told.settings.key == "A minor"
    assert not np.allclose(told.audio.samples, take.audio.samples, atol=1e-4)
    prompt, _ = ace_engine.model._format_prompt(
        "a funk band", bpm=96, keyscale="A minor", timesignature="3", audio_duration=6.3
    )
    assert "bpm: 96" in prompt and "keyscale: A minor" in prompt


def test_what_ace_step_cannot_do_is_refused_with_the_reason(ace_engine, song):
    timeline = BASE.replace(sections=(Section(0.0, "soft strings"), Section(3.0, "a band")))
    with pytest.raises(NeuroChipError, match="sections"):
        ace_engine.render(song, timeline)
    with pytest.raises(NeuroChipError, match="Interpolate to"):
        ace_engine.preview(song, BASE.replace(prompt_end="a brass band", alpha=0.5), 0.0)
    caps = ace_engine.backend.capabilities
    assert "denoise" not in caps.knobs and "cover_strength" in caps.knobs
    assert "guidance" not in caps.knobs  # a turbo checkpoint: guidance is distilled


def test_cancel_stops_a_render(ace_engine, song):
    cancel = threading.Event()

    def progress(fraction: float, stage: str | None = None) -> None:
        if stage == "denoise":
            cancel.set()

    with pytest.raises(RenderCancelled):
        ace_engine.render(song, BASE.replace(seed=99), progress=progress, cancel=cancel)


def test_riffusion_only_model_options_are_refused_for_ace_step():
    from neurochip.model_spec import DEFAULT_ACE_STEP_ID, ModelSpec

    spec = ModelSpec.for_kind("ace-step")
    assert spec.source == DEFAULT_ACE_STEP_ID and "ace-step" in spec.describe()
    with pytest.raises(NeuroChipError, match="LoRA is a Riffusion option"):
        ModelSpec.for_kind("ace-step", lora="style.safetensors").check(files=False)


def test_the_cli_renders_with_ace_step_and_rerolls_with_the_engine_that_made_the_take(
    tiny_ace_step_dir, tmp_path
):
    import soundfile as sf

    from neurochip.cli import main
    from neurochip.library.metadata import read_take_metadata

    sketch, out, again = tmp_path / "sketch.wav", tmp_path / "take.wav", tmp_path / "reroll.wav"
    sf.write(sketch, make_chiptune(4.2, seed=4).T, 44100)
    common = ["--prompt", "a funk band", "--steps", "2", "--no-library"]
    model = ["--engine", "ace-step", "--model", str(tiny_ace_step_dir), "--device", "cpu"]
    assert main(["render", str(sketch), "-o", str(out), *model, *common,
                 "--add-part", "drums=a live drum kit"]) == 0  # fmt: skip
    take, rate = sf.read(out)
    assert rate == RATE and len(take) == round(4.2 * RATE)  # the sketch's exact length
    metadata = read_take_metadata(out)
    assert metadata["model_spec"]["kind"] == "ace-step" and metadata["engine"] == "ace-step"
    assert (tmp_path / "take-part-drums.wav").exists()
    # No --engine: the take's own engine and model re-roll it.
    assert main(["reroll", str(sketch), str(out), "--seconds", "1.5-2.5", "-o", str(again),
                 "--seed", "5", "--no-library"]) == 0  # fmt: skip
    new, _ = sf.read(again)
    before, after = round(1.25 * RATE), round(2.75 * RATE)
    assert np.array_equal(new[:before], take[:before]) and np.array_equal(new[after:], take[after:])
    assert not np.array_equal(new, take)
