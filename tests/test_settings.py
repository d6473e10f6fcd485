"""Settings: checked when made, serialised with every take, described once for every front end."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurochip.cli import build_parser
from neurochip.errors import NeuroChipError
from neurochip.settings import (
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
