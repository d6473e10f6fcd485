"""A prompt timeline (issue 13): sections with their own prompt and denoise, one render."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neurochip.engine import Engine
from neurochip.engine.riffusion.lanes import Lane
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings, Section
from tests.chiptune import make_chiptune

SR = 44100
FAST = RenderSettings(prompt="a string quartet", steps=6, denoise=0.5, phase_iterations=0)
COLUMN_S = 8 * 441 / SR  # seconds a latent column


def recording_unet(monkeypatch, model) -> None:
    """A UNet whose prediction is one number per item: its prompt embedding's signature.
    Every column's blended prediction then says which prompts it heard, and how much."""

    class Out:
        def __init__(self, sample):
            self.sample = sample

    def forward(self, sample, t, encoder_hidden_states=None, **kwargs):
        level = signature(encoder_hidden_states).view(-1, 1, 1, 1)
        return Out(level.expand_as(sample).clone().to(sample.dtype))

    monkeypatch.setattr(type(model.unet), "forward", forward)


def first_predictions(monkeypatch) -> list[torch.Tensor]:
    """Each lane's blended noise prediction at its first step, per latent column."""
    seen: list[torch.Tensor] = []
    step = Lane.step

    def recording(self, noise_pred, k):
        if k == 0:
            seen.append(noise_pred[0, 0, 0].clone())
        return step(self, noise_pred, k)

    monkeypatch.setattr(Lane, "step", recording)
    return seen


def signature(embedding: torch.Tensor) -> torch.Tensor:
    """A number that differs between prompts (CLIP's outputs are normalised: their mean is not
    one), per batch item: the first word's first few features."""
    return embedding[:, 1, :8].sum(dim=-1)


def prompt_level(engine: Engine, prompt: str) -> float:
    return float(signature(engine.backend.prompt_embedding(prompt)))


def heard(engine, tiny_model, monkeypatch, audio, **timeline) -> torch.Tensor:
    """Render ``FAST`` with ``timeline`` (no guidance pair: each prediction is its prompt's
    alone) and return the first step's blended prediction per latent column."""
    recording_unet(monkeypatch, tiny_model)
    seen = first_predictions(monkeypatch)
    engine.render(audio, dataclasses.replace(FAST, guidance=1.0, **timeline))
    return seen[0]


@pytest.fixture
def audio() -> Audio:
    return Audio(make_chiptune(12.0, seed=4), SR)


def test_a_section_boundary_changes_the_prompt_exactly_where_it_is_set(
    engine, tiny_model, monkeypatch, audio
):
    sections = (Section(0.0, "soft strings"), Section(6.0, "a full funk band"))
    prediction = heard(engine, tiny_model, monkeypatch, audio, sections=sections, transition_s=0)
    strings = prompt_level(engine, "soft strings")
    funk = prompt_level(engine, "a full funk band")
    assert abs(strings - funk) > 1e-4  # the recording can tell them apart
    centres = (torch.arange(prediction.shape[-1]) + 0.5) * COLUMN_S
    before, after = centres < 6.0, centres >= 6.0
    torch.testing.assert_close(prediction[before], torch.full_like(prediction[before], strings))
    torch.testing.assert_close(prediction[after], torch.full_like(prediction[after], funk))


def test_across_a_transition_the_two_prompts_blend_over_its_length(
    engine, tiny_model, monkeypatch, audio
):
    sections = (Section(0.0, "soft strings"), Section(6.0, "a full funk band"))
    prediction = heard(
        engine, tiny_model, monkeypatch, audio, sections=sections, transition_s=2.0
    ).numpy()
    strings = prompt_level(engine, "soft strings")
    funk = prompt_level(engine, "a full funk band")
    centres = (np.arange(prediction.shape[-1]) + 0.5) * COLUMN_S
    share = np.clip((centres - 5.0) / 2.0, 0, 1)  # 0 before 5 s, 1 after 7 s
    np.testing.assert_allclose(prediction, strings + share * (funk - strings), atol=1e-5)


def test_a_section_before_the_first_keeps_the_takes_own_prompt_and_a_span_counts_in_song_time(
    engine, tiny_model, monkeypatch, audio
):
    sections = (Section(7.0, "a full funk band"),)
    prediction = heard(
        engine,
        tiny_model,
        monkeypatch,
        audio,
        start_s=2.0,
        duration_s=8.0,
        sections=sections,
        transition_s=0.0,
    )
    centres = 2.0 + (torch.arange(prediction.shape[-1]) + 0.5) * COLUMN_S  # song seconds
    own = prompt_level(engine, FAST.prompt)
    funk = prompt_level(engine, "a full funk band")
    assert torch.allclose(prediction[centres < 7.0], torch.tensor(own))
    assert torch.allclose(prediction[(centres >= 7.0) & (centres < 10.0)], torch.tensor(funk))


def test_each_column_joins_the_loop_at_the_step_its_sections_denoise_implies(
    engine, monkeypatch, audio
):
    """Differential diffusion: 12 steps, the take at denoise 0.25 (3 steps), a section from 6 s
    at 0.5 (6 steps): its columns run all 6 steps, the others join for the last 3 only."""
    moved: list[torch.Tensor] = []
    step = Lane.step

    def recording(self, noise_pred, k):
        step(self, noise_pred, k)
        # Which columns this step moved away from the sketch's noised latents.
        if k + 1 < len(self.timesteps):
            held = self.scheduler.add_noise(self.init, self.noise, self.timesteps[k + 1 : k + 2])
            moved.append((self.latents - held).abs().amax(dim=(0, 1, 2)) > 1e-6)

    monkeypatch.setattr(Lane, "step", recording)
    timeline = dataclasses.replace(
        FAST,
        steps=12,
        denoise=0.25,
        sections=(Section(6.0, "a full funk band", denoise=0.5),),
        transition_s=0.0,
    )
    assert timeline.denoise_steps == 6  # the strongest denoise sets the schedule
    engine.render(audio, timeline)
    centres = (torch.arange(moved[0].shape[-1]) + 0.5) * COLUMN_S
    weak, strong = centres < 6.0, centres >= 6.0
    for k, columns in enumerate(moved):  # after step k (0-based), before step k + 1
        assert bool(columns[strong].all())  # denoise 0.5: in the loop from the start
        assert bool(columns[weak].any()) == (k + 1 >= 3)  # denoise 0.25: the last 3 steps


def test_sections_travel_as_json_and_are_checked():
    timeline = dataclasses.replace(
        FAST, sections=(Section(0.0, "strings"), Section(8.0, "funk", denoise=0.5, guidance=9.0))
    )
    again = RenderSettings.from_json(timeline.to_json())
    assert again == timeline and again.section_at(9.0).prompt == "funk"
    assert again.section_at(3.0).prompt == "strings"
    with pytest.raises(NeuroChipError, match="in order"):
        dataclasses.replace(FAST, sections=(Section(8.0, "funk"), Section(1.0, "strings")))
    with pytest.raises(NeuroChipError, match="needs a prompt"):
        Section(1.0, " ")
    with pytest.raises(NeuroChipError, match="section at 1.0 s: denoise must be between 0 and 1"):
        Section(1.0, "funk", denoise=1.5)
    with pytest.raises(NeuroChipError, match="section at 1.0 s: guidance must be 0-50, not 70"):
        Section(1.0, "funk", guidance=70)
    loud = Section(1.0, "funk", denoise=0.0, guidance=40.0)  # the take's own ranges
    assert RenderSettings.from_json(dataclasses.replace(FAST, sections=(loud,)).to_json()) == (
        dataclasses.replace(FAST, sections=(loud,))
    )
    with pytest.raises(NeuroChipError, match="Unknown section"):
        RenderSettings.from_dict({"sections": [{"start_s": 0, "prompt": "x", "tempo": 3}]})


def test_a_timeline_take_rendered_with_others_equals_it_alone(engine, audio):
    timeline = dataclasses.replace(
        FAST,
        sections=(Section(4.0, "a full funk band", denoise=0.8, guidance=3.0),),
        transition_s=1.0,
    )
    takes = [timeline, dataclasses.replace(FAST, seed=9)]
    for together, settings in zip(engine.render_many(audio, takes), takes, strict=True):
        alone = engine.render(audio, settings)
        np.testing.assert_allclose(together.output_image, alone.output_image, atol=1e-4)


# --- the timeline as text, and on the command line --------------------------------------------


def test_sections_are_read_as_composers_write_them():
    from neurochip.timeline import one_bar_s, parse_section, parse_timeline

    bars = [0.0, 2.0, 4.0, 6.0]
    assert parse_section("0=soft strings") == Section(0.0, "soft strings")
    assert parse_section("bar 3=full funk band:0.5", bars) == Section(
        4.0, "full funk band", denoise=0.5
    )
    assert parse_section("12.5=brass: loud") == Section(12.5, "brass: loud")  # a colon in words
    assert [s.start_s for s in parse_timeline(["bar 2=b", "0=a"], bars)] == [0.0, 2.0]
    assert one_bar_s(bars) == 2.0 and one_bar_s(None) is None
    for text, message in [
        ("soft strings", "START=PROMPT"),
        ("bar 3=funk", "not known"),
        ("soon=funk", "seconds or at"),
        ("-1=funk", "0 s or later"),
    ]:
        with pytest.raises(NeuroChipError, match=message):
            parse_section(text)
    with pytest.raises(NeuroChipError, match="Two sections"):
        parse_timeline(["0=a", "0.0=b"])


def test_render_with_sections_on_the_command_line(tmp_path, tiny_model_dir):
    from pathlib import Path

    from neurochip.cli import main
    from neurochip.faithfulness import sketch_bar_times
    from neurochip.library.metadata import settings_from_take
    from neurochip.sketch import load_sketch

    midi = Path(__file__).resolve().parents[1] / "assets" / "greensleeves.mid"
    out = tmp_path / "cover.wav"
    args = ["render", str(midi), "-o", str(out), "--prompt", "a band", "--steps", "3"]
    sections = ["--section", "0=soft strings", "--section", "bar 3=full funk band:0.6"]
    assert main([*args, *sections, "--no-library", "--model", str(tiny_model_dir)]) == 0
    settings = settings_from_take(out)
    bars = sketch_bar_times(load_sketch(midi))
    assert [s.prompt for s in settings.sections] == ["soft strings", "full funk band"]
    assert settings.sections[1].start_s == pytest.approx(bars[2])
    assert settings.sections[1].denoise == 0.6
    assert settings.transition_s == pytest.approx(bars[1] - bars[0])  # one bar
