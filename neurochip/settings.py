"""The settings a composer chooses, as typed dataclasses whose help text is written once.

:class:`RenderSettings` decides one take (same settings + same seed + same device = same take);
:class:`TakeSetOptions` decides what is made from the takes (a stereo pair, a comparison with
the sketch). Each field carries a :class:`Setting` in its metadata: the label, the help text
and the useful range. The CLI's ``--help``, the app's tooltips and the README's settings table
all come from there (``tests/test_settings.py`` checks the README), so the three never disagree.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from neurochip.errors import NeuroChipError
from neurochip.phase import PHASE_MODES, PhaseSettings

#: Scheduler names users pick from. The diffusers class behind each is in :mod:`neurochip.model`.
SCHEDULER_NAMES: tuple[str, ...] = ("dpm++", "ddim", "pndm", "euler", "euler-a", "lms")

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class Setting:
    """What a composer is told about one setting."""

    label: str  # as the app shows it
    help: str  # one paragraph: what it does to the sound
    useful: str = ""  # the useful range, for the README table ("" keeps it out of the table)
    minimum: float | None = None  # for sliders; the dataclass checks the real limits
    maximum: float | None = None
    step: float | None = None


def _setting(default: Any, **about: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(**about)})


def describe(settings_class: type, name: str) -> Setting:
    """The :class:`Setting` of field ``name`` of a settings dataclass."""
    for f in dataclasses.fields(settings_class):
        if f.name == name:
            return f.metadata["setting"]
    raise KeyError(name)


def help_text(settings_class: type, name: str) -> str:
    return describe(settings_class, name).help


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise NeuroChipError(message[0].upper() + message[1:] + ".")


@dataclass(frozen=True)
class RenderSettings:
    """Everything that decides a take. Same settings + same seed + same device = same take."""

    prompt: str = _setting(
        "",
        label="Prompt",
        help="Describe the finished song as a fan wiki would: the band, the style, the energy. "
        "E.g. 'a funk band with slap bass', 'a string quartet in a concert hall'.",
    )
    negative_prompt: str = _setting(
        "",
        label="Negative prompt",
        help="What to steer away from, e.g. 'distorted, lo-fi, noisy'.",
    )
    denoise: float = _setting(
        0.35,
        label="Denoise",
        help="How much of your sketch is reimagined, 0-1. Below 0.15 only the timbre gets "
        "grungier; 0.2-0.4 is a note-for-note cover with new instruments; past 0.5 the notes "
        "drift.",
        useful="0.2-0.4 (start at 0.35)",
        minimum=0.0,
        maximum=1.0,
        step=0.01,
    )
    guidance: float = _setting(
        7.0,
        label="Guidance",
        help="How strongly the prompt is followed. 2-3 is lively but inconsistent (a trombone "
        "for one note, then a guitar); 7-8 the usual middle; past 12 harsh and squealing.",
        useful="3-8",
        minimum=0.0,
        maximum=20.0,
        step=0.5,
    )
    steps: int = _setting(
        50,
        label="Steps",
        help="Denoising steps at full strength (a render runs denoise x steps). More gives "
        "sharper articulation and dynamics, with diminishing returns past 50; very low values "
        "give fast 'intentional jank'.",
        useful="25-50",
        minimum=1,
        maximum=100,
        step=1,
    )
    seed: int = _setting(
        42,
        label="Seed",
        help="The noise the take grows from: same seed and settings, same take. Change it (the "
        "dice rolls one) for another interpretation.",
        useful="any",
        minimum=0,
        maximum=2**31 - 1,
        step=1,
    )
    scheduler: str = _setting(
        "dpm++",
        label="Scheduler",
        help="The sampling algorithm: " + ", ".join(SCHEDULER_NAMES) + ". dpm++ is fast and "
        "clean; euler-a is more varied.",
        useful="dpm++",
    )
    start_s: float = _setting(
        0.0,
        label="Start (s)",
        help="Where in the song the render begins, in seconds.",
        minimum=0.0,
    )
    duration_s: float | None = _setting(
        None,
        label="Duration (s)",
        help="How many seconds to render from Start; empty (None) renders to the end of the song.",
    )
    overlap: float = _setting(
        0.25,
        label="Window overlap",
        help="How much neighbouring 5-second model windows share, 0-0.75. More blends more "
        "smoothly and costs more time.",
        minimum=0.0,
        maximum=0.75,
        step=0.05,
    )
    phase: str = _setting(
        "source",
        label="Phase",
        help="How the sound's phase is rebuilt: 'source' takes it from your sketch (clean, "
        "punchy transients); 'random' is Riffusion's own method (smeared, 'phasey'), kept for "
        "comparison.",
    )
    phase_iterations: int | None = _setting(
        None,
        label="Griffin-Lim iterations",
        help="More makes the sound match the spectrogram more closely but takes longer "
        "(default: the phase mode's own).",
    )
    batch_size: int | None = _setting(
        None,
        label="Batch size",
        help="Model inputs per GPU call (default: as many as free memory allows). It never "
        "changes the take.",
    )

    def __post_init__(self) -> None:
        _check(
            [
                (
                    0.0 <= self.denoise <= 1.0,
                    f"denoise must be between 0 and 1, not {self.denoise}",
                ),
                (0.0 <= self.guidance <= 50.0, f"guidance must be 0-50, not {self.guidance}"),
                (1 <= self.steps <= 1000, f"steps must be 1-1000, not {self.steps}"),
                (0 <= self.seed < 2**63, f"seed must be a non-negative integer, not {self.seed}"),
                (self.start_s >= 0, f"start must be 0 or later, not {self.start_s}"),
                (
                    self.duration_s is None or self.duration_s > 0,
                    f"duration must be more than 0 s, not {self.duration_s}",
                ),
                (0.0 <= self.overlap <= 0.75, f"overlap must be 0-0.75, not {self.overlap}"),
                (
                    self.phase in PHASE_MODES,
                    f"phase must be one of {', '.join(PHASE_MODES)}, not {self.phase!r}",
                ),
                (
                    self.phase_iterations is None or self.phase_iterations >= 0,
                    "phase iterations must be 0 or more",
                ),
                (self.batch_size is None or self.batch_size >= 1, "batch size must be 1 or more"),
                (
                    self.scheduler in SCHEDULER_NAMES,
                    f"unknown scheduler {self.scheduler!r}: choose one of "
                    + ", ".join(SCHEDULER_NAMES),
                ),
            ]
        )

    @property
    def denoise_steps(self) -> int:
        """Scheduler steps actually run: img2img skips the first (1 - denoise) of them."""
        return min(int(self.steps * self.denoise), self.steps)

    @property
    def phase_settings(self) -> PhaseSettings:
        return PhaseSettings(mode=self.phase, iterations=self.phase_iterations)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> RenderSettings:
        """A copy with some settings changed (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"version": SETTINGS_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"version"}
        if unknown:
            raise NeuroChipError(f"Unknown render settings: {', '.join(sorted(unknown))}.")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> RenderSettings:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise NeuroChipError(f"These render settings are not valid JSON ({err}).") from err
        return cls.from_dict(data)


@dataclass(frozen=True)
class TakeSetOptions:
    """What is made from a render besides take A: take B and a stereo pair, a comparison."""

    stereo_pair: bool = _setting(
        False,
        label="Stereo pair (take A + take B)",
        help="Render a second take (seed + 1) and pan the two apart, as composers double a "
        "part by hand.",
    )
    seed_b: int | None = _setting(
        None,
        label="Seed of take B",
        help="Seed of take B in a stereo pair (default: seed + 1).",
    )
    width: float = _setting(
        1.0,
        label="Stereo width",
        help="0: both takes in the middle; 1: take A hard left, take B hard right. The mix "
        "always sums cleanly to mono.",
        useful="0.6-1.0",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
    )
    compare: bool = _setting(
        False,
        label="Crossfade comparison",
        help="Also make a mix that starts as your sketch and fades into the render, level-matched.",
    )
    compare_at_s: float | None = _setting(
        None,
        label="Fade into the render at (s)",
        help="When the comparison fades into the render, in seconds from the render's start "
        "(default: a third of the way in).",
        minimum=0.0,
    )
    compare_fade_s: float = _setting(
        2.0,
        label="Fade length (s)",
        help="Length of each comparison fade, in seconds.",
        minimum=0.1,
    )
    compare_back_s: float | None = _setting(
        None,
        label="Fade back at (s)",
        help="When the comparison fades back to the sketch (default: it stays on the render).",
        minimum=0.0,
    )

    def __post_init__(self) -> None:
        _check(
            [
                (
                    0.0 <= self.width <= 1.0,
                    f"stereo width must be between 0 and 1, not {self.width}",
                ),
                (
                    self.seed_b is None or 0 <= self.seed_b < 2**63,
                    f"the seed of take B must be a non-negative integer, not {self.seed_b}",
                ),
                (
                    self.compare_at_s is None or self.compare_at_s >= 0,
                    f"the comparison fade must start at 0 s or later, not {self.compare_at_s}",
                ),
                (self.compare_fade_s > 0, "the crossfade length must be more than 0 s"),
            ]
        )

    def take_b(self, settings: RenderSettings) -> RenderSettings:
        """Settings of take B: take A's with seed + 1 (or :attr:`seed_b`)."""
        return settings.replace(seed=settings.seed + 1 if self.seed_b is None else self.seed_b)


#: Settings listed in the README's table, in this order.
TABLE_SETTINGS: tuple[tuple[type, str], ...] = (
    (RenderSettings, "denoise"),
    (RenderSettings, "guidance"),
    (RenderSettings, "steps"),
    (RenderSettings, "seed"),
    (RenderSettings, "scheduler"),
    (TakeSetOptions, "width"),
)


def settings_table() -> str:
    """The README's settings table, in Markdown, from the settings' own help text."""
    rows = ["| setting | what it does to the sound | useful range |", "|---|---|---|"]
    for settings_class, name in TABLE_SETTINGS:
        about = describe(settings_class, name)
        rows.append(f"| **{about.label}** | {about.help} | {about.useful} |")
    return "\n".join(rows)
