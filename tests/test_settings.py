"""Settings: checked when made, serialised with every take, described once for every front end."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from neurochip.cli import build_parser
from neurochip.errors import NeuroChipError
from neurochip.phase import MAX_ITERATIONS
from neurochip.settings import (
    MAX_SEED,
    TABLE_SETTINGS,
    RenderSettings,
    TakeSetOptions,
    describe,
    settings_table,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"denoise": 1.2}, "denoise"),
        ({"denoise": -0.1}, "denoise"),
        ({"steps": 0}, "steps"),
        ({"guidance": -1}, "guidance"),
        ({"scheduler": "turbo"}, "scheduler"),
        ({"overlap": 0.9}, "overlap"),
        ({"phase": "magic"}, "phase"),
        ({"duration_s": 0}, "duration"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_settings_are_clear_errors(change, message):
    with pytest.raises(NeuroChipError, match=f"(?i){message}"):
        RenderSettings(**change)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"width": 1.5}, "width"), ({"seed_b": -2}, "take B"), ({"compare_fade_s": 0}, "length")],
)
def test_invalid_take_set_options_are_clear_errors(change, message):
    with pytest.raises(NeuroChipError, match=message):
        TakeSetOptions(**change)


def number_fields(kind: str) -> list[tuple[type, str]]:
    """(class, field) of every ``kind`` ("int" or "float") setting, optional or not."""
    return [
        (settings_class, f.name)
        for settings_class in (RenderSettings, TakeSetOptions)
        for f in dataclasses.fields(settings_class)
        if str(f.type).startswith(kind)
    ]


FLOAT_FIELDS = number_fields("float")
INT_FIELDS = number_fields("int")


def test_the_number_fields_are_all_found():
    assert {name for _, name in FLOAT_FIELDS} == {
        "denoise", "guidance", "start_s", "duration_s", "overlap", "guidance_until",
        "width", "compare_at_s", "compare_fade_s", "compare_back_s", "transition_s", "alpha",
        "cover_strength", "shift",
    }  # fmt: skip
    assert {name for _, name in INT_FIELDS} == {
        "steps",
        "seed",
        "seed_end",
        "phase_iterations",
        "batch_size",
        "feature_reuse",
        "seed_b",
        "bpm",
        "time_signature",
    }


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(("settings_class", "name"), FLOAT_FIELDS)
def test_non_finite_numbers_are_refused_in_every_float_field(settings_class, name, value):
    # JSON has no NaN or infinity: "--duration inf" once wrote "Infinity" into a sidecar.
    label = describe(settings_class, name).label
    with pytest.raises(NeuroChipError) as caught:
        settings_class(**{name: value})
    assert str(caught.value) == f"{label} must be a finite number, not {value}."


@pytest.mark.parametrize(("settings_class", "name"), FLOAT_FIELDS + INT_FIELDS)
def test_every_number_setting_has_an_upper_bound(settings_class, name):
    with pytest.raises(NeuroChipError, match=r"not 1000000000000\.$"):
        settings_class(**{name: 10**12})


@pytest.mark.parametrize(
    ("settings_class", "change", "message"),
    [
        (RenderSettings, {"denoise": "0.3"}, "Denoise must be a number, not '0.3'"),
        (RenderSettings, {"steps": 2.5}, "Steps must be a whole number, not 2.5"),
        (RenderSettings, {"seed": True}, "Seed must be a whole number, not True"),
        (TakeSetOptions, {"width": None}, "Stereo width must be a number, not None"),
    ],
)
def test_numbers_of_the_wrong_type_are_clear_errors(settings_class, change, message):
    with pytest.raises(NeuroChipError, match=message):
        settings_class(**change)


def test_griffin_lim_iterations_are_bounded():
    assert RenderSettings(phase_iterations=MAX_ITERATIONS).phase_settings.iterations == 1000
    with pytest.raises(NeuroChipError, match=r"Griffin-Lim iterations must be 0-1000"):
        RenderSettings(phase_iterations=10**8)


def test_seeds_are_the_range_the_app_offers():
    assert RenderSettings(seed=MAX_SEED).seed == 2**32 - 1
    assert describe(RenderSettings, "seed").maximum == MAX_SEED
    for too_big in ({"seed": 2**63 - 1}, {"seed": MAX_SEED + 1}):
        with pytest.raises(
            NeuroChipError, match=r"Seed must be a whole number from 0 to 4294967295"
        ):
            RenderSettings(**too_big)
    with pytest.raises(NeuroChipError, match=r"seed of take B must be .* 0 to 4294967295"):
        TakeSetOptions(seed_b=MAX_SEED + 1)


def test_take_b_of_the_largest_seed_wraps_to_zero():
    # seed + 1 once failed for the largest seed, even when no pair was made.
    settings = RenderSettings(seed=MAX_SEED)
    assert TakeSetOptions().take_b(settings) == settings.replace(seed=0)
    assert TakeSetOptions(seed_b=MAX_SEED).take_b(settings).seed == MAX_SEED


def test_settings_serialise_and_come_back():
    settings = RenderSettings(prompt="slap bass, ünïcödé", seed=5, duration_s=12.5)
    assert RenderSettings.from_json(settings.to_json()) == settings
    with pytest.raises(NeuroChipError, match="Unknown"):
        RenderSettings.from_dict({"prompt": "x", "sparkle": 3})
    with pytest.raises(NeuroChipError, match="JSON"):
        RenderSettings.from_json("{not json")


def test_take_b_is_seed_plus_one_unless_a_seed_is_given():
    settings = RenderSettings(seed=9, guidance=4.0)
    assert TakeSetOptions().take_b(settings) == settings.replace(seed=10)
    assert TakeSetOptions(seed_b=3).take_b(settings) == settings.replace(seed=3)


def test_the_readme_settings_table_is_the_settings_own_help():
    assert settings_table() in (ROOT / "README.md").read_text(encoding="utf-8")


def _option_help(command: str, flag: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a.help for a in sub._actions if flag in a.option_strings)


@pytest.mark.parametrize(
    ("flag", "settings_class", "name"),
    [
        ("--denoise", RenderSettings, "denoise"),
        ("--guidance", RenderSettings, "guidance"),
        ("--steps", RenderSettings, "steps"),
        ("--seed", RenderSettings, "seed"),
        ("--scheduler", RenderSettings, "scheduler"),
        ("--width", TakeSetOptions, "width"),
        ("--stereo-pair", TakeSetOptions, "stereo_pair"),
    ],
)
def test_cli_help_comes_from_the_settings(flag, settings_class, name):
    assert _option_help("render", flag).startswith(describe(settings_class, name).help)


def test_every_table_setting_has_a_useful_range_and_slider_limits():
    for settings_class, name in TABLE_SETTINGS:
        about = describe(settings_class, name)
        assert about.useful and about.help.endswith((".", ")"))


def test_settings_that_make_no_denoising_step_are_warned_about():
    quiet = RenderSettings(steps=4, denoise=0.2)
    assert quiet.denoise_steps == 0
    [warning] = quiet.warnings()
    assert "less than one denoising step" in warning and "0.80" in warning
    assert RenderSettings(steps=5, denoise=0.2).warnings() == []
    assert RenderSettings(denoise=0.0).warnings() == []  # a roundtrip on purpose


# --- overrides: a section's and a stem's prompt and values, one notion ------------------------

TAKE = RenderSettings(prompt="funk", negative_prompt="noisy", denoise=0.35, guidance=7.0)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"denoise": 0.2},
        {"guidance": 9},  # an int stays an int, as the engine used it
        {"negative_prompt": "distorted", "denoise": 0.6, "guidance": 3.0},
        {"negative_prompt": "", "denoise": 0.0, "guidance": 0},
    ],
)
def test_a_section_resolves_as_the_engine_resolved_it(overrides):
    from neurochip.settings import Section

    section = Section(12.0, "slap bass", **overrides)
    engine_did = (
        section.prompt,
        TAKE.negative_prompt if section.negative_prompt is None else section.negative_prompt,
        TAKE.guidance if section.guidance is None else section.guidance,
        TAKE.denoise if section.denoise is None else section.denoise,
    )
    voice = section.resolve(TAKE)
    assert tuple(voice) == engine_did
    assert [type(v) for v in voice] == [type(v) for v in engine_did]


def test_a_section_and_a_stem_of_the_same_overrides_are_one_voice():
    from neurochip.settings import Overrides, Section, Voice
    from neurochip.stems import Stem

    section = Section(12.0, "slap bass", negative_prompt="thin", denoise=0.2, guidance=9.0)
    stem = Stem("Bass", ("2",), "slap bass", negative_prompt="thin", denoise=0.2, guidance=9.0)
    assert section.overrides == stem.overrides == Overrides("slap bass", "thin", 0.2, 9.0)
    assert section.resolve(TAKE) == stem.resolve(TAKE) == Voice("slap bass", "thin", 9.0, 0.2)
    plain = Voice("slap bass", "noisy", 7.0, 0.35)  # nothing overridden: the take's values
    assert Section(0.0, "slap bass").resolve(TAKE) == Stem("B", (), "slap bass").resolve(TAKE)
    assert Overrides("slap bass").resolve(TAKE) == plain


@pytest.mark.parametrize(
    ("name", "fine", "bad", "message"),
    [
        ("guidance", 40.0, 70, "guidance must be 0-50, not 70"),
        ("guidance", 0.0, -1.0, "guidance must be 0-50, not -1.0"),
        ("denoise", 0.0, 1.5, "denoise must be between 0 and 1, not 1.5"),
        ("denoise", 1.0, "0.5", "denoise must be a number, not '0.5'"),
        ("guidance", 1, math.nan, "guidance must be a finite number, not nan"),
    ],
)
def test_sections_and_stems_are_checked_as_the_take_is_with_one_message(name, fine, bad, message):
    from neurochip.settings import Overrides, Section
    from neurochip.stems import Stem

    # The take's limits, from its field's metadata: a section's guidance may be 40 now.
    assert describe(Overrides, name).limits == describe(RenderSettings, name).limits
    assert Section(12.0, "brass", **{name: fine}).resolve(TAKE)._asdict()[name] == fine
    assert getattr(Stem("Bass", (), "brass", **{name: fine}).settings_for(TAKE), name) == fine
    for make, whose in [
        (lambda v: Section(12.0, "brass", **{name: v}), "The section at 12.0 s: "),
        (lambda v: Stem("Bass", (), "brass", **{name: v}), "The stem Bass: "),
        (lambda v: Overrides("brass", **{name: v}), ""),
    ]:
        said = message if whose else message[0].upper() + message[1:]
        with pytest.raises(NeuroChipError, match=f"^{re.escape(whose + said)}\\.$"):
            make(bad)
    with pytest.raises(NeuroChipError, match=f"^{re.escape(message[0].upper() + message[1:])}"):
        RenderSettings(**{name: bad})  # the take's own check says the same


def test_the_apps_override_columns_take_the_settings_range_and_help():
    from app.arrange.settings import NUMBERS
    from neurochip.settings import Overrides

    for name, column in NUMBERS.items():
        about = describe(Overrides, name)
        kind = column["type_config"]
        assert (kind["min_value"], kind["max_value"]) == describe(RenderSettings, name).limits
        assert kind["step"] == about.step and column["help"] == about.help
