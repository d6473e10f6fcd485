"""ACE-Step 1.5 as a second engine (issue 25), on the tests' tiny random-weight pipeline: an
added part, the song's facts told to the model, what it cannot do refused, the CLI. What every
latent-audio engine keeps (exact spans, takes together equal takes alone, re-rolls, loops):
tests/test_latent_engines.py. The tiny model's output is noise: the workflow, never the sound."""

from __future__ import annotations

import numpy as np
import pytest

from neurochip.errors import NeuroChipError
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


def test_riffusion_only_model_options_are_refused_for_ace_step():
    from neurochip.model_spec import DEFAULT_ACE_STEP_ID, ModelSpec

    spec = ModelSpec.for_kind("ace-step")
    assert spec.source == DEFAULT_ACE_STEP_ID and spec.describe().startswith("ACE-Step 1.5 ")
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
