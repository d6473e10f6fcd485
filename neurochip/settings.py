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
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from neurochip.ace_step_knobs import AceStepKnobs
from neurochip.errors import NeuroChipError
from neurochip.phase import MAX_ITERATIONS, PHASE_MODES, PhaseSettings
from neurochip.setting_fields import (  # noqa: F401 (the settings' own helpers, re-exported)
    Setting,
    _check,
    _check_numbers,
    _check_plain_types,
    _field,
    _shown,
    default_of,
    describe,
    help_text,
    setting_field,
    setting_like,
    table_of,
    within_limits,
)

#: Scheduler names users pick from. The diffusers class behind each is in :mod:`neurochip.model`.
SCHEDULER_NAMES: tuple[str, ...] = ("dpm++", "ddim", "pndm", "euler", "euler-a", "lms", "lcm")

SETTINGS_VERSION = 1

#: How the song is cut into model windows (see RenderSettings.windows).
WINDOW_MODES: tuple[str, ...] = ("overlap", "shifted")

#: Most denoising steps one full UNet evaluation serves (feature reuse). Past 5 the reused
#: features are from a noise level too far from the current one to help.
MAX_FEATURE_REUSE = 5

#: Largest seed: seeds are 0 to 2**32 - 1, the range the app's seed box takes (and numpy's
#: and most tools' seeds). Take B's default seed, seed + 1, wraps round to 0 after it.
MAX_SEED = 2**32 - 1

#: Longest time a setting names (start, duration, crossfade times): 24 hours. No sketch is
#: that long (the loader refuses more than 20 minutes unless told otherwise); more is a typo.
MAX_TIME_S = 24 * 3600.0

#: Most model inputs per GPU call: each needs ~0.35 GB of activations (measured, see
#: Engine._auto_batch, which picks at most 64), so 512 would want ~180 GB, more than any
#: one GPU has.
MAX_BATCH_SIZE = 512


@dataclass(frozen=True)
class RenderSettings(AceStepKnobs):
    """Everything that decides a take. Same settings + same seed + same device = same take."""

    prompt: str = setting_field(
        "",
        label="Prompt",
        help="Describe the finished song as a fan wiki would: the band, the style, the energy. "
        "E.g. 'a funk band with slap bass', 'a string quartet in a concert hall'.",
    )
    negative_prompt: str = setting_field(
        "",
        label="Negative prompt",
        help="What to steer away from, e.g. 'distorted, lo-fi, noisy'.",
    )
    denoise: float = setting_field(
        0.35,
        label="Denoise",
        help="How much of your sketch is reimagined, 0-1. Below 0.15 only the timbre gets "
        "grungier; 0.2-0.4 is a note-for-note cover with new instruments; past 0.5 the notes "
        "drift.",
        useful="0.2-0.4 (start at 0.35)",
        minimum=0.0,
        maximum=1.0,
        step=0.01,
        limits=(0.0, 1.0),
    )
    guidance: float = setting_field(
        7.0,
        label="Guidance",
        help="How strongly the prompt is followed. 2-3 is lively but inconsistent (a trombone "
        "for one note, then a guitar); 7-8 the usual middle; past 12 harsh and squealing.",
        useful="3-8",
        minimum=0.0,
        maximum=20.0,
        step=0.5,
        limits=(0.0, 50.0),
    )
    steps: int = setting_field(
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
    seed: int = setting_field(
        42,
        label="Seed",
        help="The noise the take grows from: same seed and settings, same take. Change it (the "
        "dice rolls one) for another interpretation.",
        useful="any",
        minimum=0,
        maximum=MAX_SEED,
        step=1,
    )
    scheduler: str = setting_field(
        "dpm++",
        label="Scheduler",
        help="The sampling algorithm: " + ", ".join(SCHEDULER_NAMES) + ". dpm++ is fast and "
        "clean; euler-a is more varied; lcm is for 4-8 step drafts with an LCM-LoRA (guidance "
        "1-2).",
        useful="dpm++",
    )
    start_s: float = setting_field(
        0.0,
        label="Start (s)",
        help="Where in the song the render begins, in seconds.",
        minimum=0.0,
        maximum=MAX_TIME_S,
    )
    duration_s: float | None = setting_field(
        None,
        label="Duration (s)",
        help="How many seconds to render from Start; empty (None) renders to the end of the song.",
    )
    overlap: float = setting_field(
        0.25,
        label="Window overlap",
        help="How much neighbouring 5-second model windows share, 0-0.75. More blends more "
        "smoothly and costs more time.",
        minimum=0.0,
        maximum=0.75,
        step=0.05,
    )
    windows: str = setting_field(
        "overlap",
        label="Windows",
        help="How the song is cut into 5-second model windows at each step. 'overlap': fixed "
        "windows sharing Window overlap, blended (the default). 'shifted': windows that do not "
        "overlap but move by a different offset at every step (wrapping from the song's end to "
        "its start), so seams average away at about 3/4 of the model work; a draft option "
        "until checked by ear on the real model.",
    )
    sections: tuple[Section, ...] = setting_field(
        (),
        label="Sections",
        help="A prompt timeline: parts of the song with their own prompt (and denoise, "
        "guidance), e.g. soft strings in the intro, the full band from bar 17. Each model "
        "window follows the section it sits in; across a boundary the two are blended over "
        "Transition, and a section's denoise applies to its part of the song alone.",
    )
    transition_s: float = setting_field(
        2.0,
        label="Transition (s)",
        help="How long the band takes to change at a section boundary (the app and CLI make "
        "it one bar where the bars are known).",
        minimum=0.0,
        maximum=30.0,
        step=0.1,
    )
    loop: bool = setting_field(
        False,
        label="Seamless loop",
        help="Render the span as a loop for a game: it is rendered in the company of its own "
        "end before its start and its start after its end, with noise that repeats the same "
        "way, and its last moment flows into its first (a short crossfade with what the model "
        "made after the end). Play it on repeat: no seam, no click, no change of band.",
    )
    prompt_end: str = setting_field(
        "",
        label="Interpolate to",
        help="Riffusion's interpolation: a second prompt the take moves toward by Alpha (the "
        "prompts' embeddings mixed, 0 the prompt alone, 1 this one alone). Empty: none.",
    )
    seed_end: int | None = setting_field(
        None,
        label="Interpolate to seed",
        help="With Alpha, the noise moves from the seed's toward this seed's (spherically, "
        "as Riffusion's does). Empty: the seed's noise alone.",
        minimum=0,
        maximum=MAX_SEED,
    )
    alpha: float = setting_field(
        0.0,
        label="Alpha",
        help="How far toward Interpolate to (its prompt and seed) the take goes, 0-1.",
        minimum=0.0,
        maximum=1.0,
        step=0.01,
    )
    feature_reuse: int = setting_field(
        1,
        label="Feature reuse",
        help="Run the whole model only every N denoising steps and reuse its deep features "
        "in between (DeepCache): 2 runs about half the full evaluations, 3 a third. 1: every "
        "step (the default). A draft option until checked by ear on the real model.",
        minimum=1,
        maximum=MAX_FEATURE_REUSE,
        step=1,
    )
    guidance_until: float = setting_field(
        1.0,
        label="Guidance for the first",
        help="Share of the denoising steps that follow the prompt with guidance (1: all, the "
        "default). The last steps mostly refine detail, so 0.5 saves about a quarter of the "
        "model work; a draft option until checked by ear on the real model.",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
    )
    phase: str = setting_field(
        "source",
        label="Phase",
        help="How the sound's phase is rebuilt: 'source' takes it from your sketch (clean, "
        "punchy transients); 'random' is Riffusion's own method (smeared, 'phasey'), kept for "
        "comparison.",
    )
    phase_iterations: int | None = setting_field(
        None,
        label="Griffin-Lim iterations",
        help="More makes the sound match the spectrogram more closely but takes longer "
        f"(default: the phase mode's own; at most {MAX_ITERATIONS}).",
        minimum=0,
        maximum=MAX_ITERATIONS,
    )
    batch_size: int | None = setting_field(
        None,
        label="Batch size",
        help="Model inputs per GPU call (default: as many as free memory allows). It never "
        "changes the take.",
        minimum=1,
        maximum=MAX_BATCH_SIZE,
    )

    def __post_init__(self) -> None:
        _check_numbers(self)
        self.check_ace_step()
        _check(
            [
                within_limits(RenderSettings, "denoise", self.denoise),
                within_limits(RenderSettings, "guidance", self.guidance),
                (1 <= self.steps <= 1000, f"steps must be 1-1000, not {self.steps}"),
                (
                    0 <= self.seed <= MAX_SEED,
                    f"seed must be a whole number from 0 to {MAX_SEED}, not {self.seed}",
                ),
                (
                    0 <= self.start_s <= MAX_TIME_S,
                    f"start must be 0-{MAX_TIME_S:.0f} s, not {self.start_s}",
                ),
                (
                    self.duration_s is None or 0 < self.duration_s <= MAX_TIME_S,
                    f"duration must be more than 0 s and at most {MAX_TIME_S:.0f} s, "
                    f"not {self.duration_s}",
                ),
                (0.0 <= self.overlap <= 0.75, f"overlap must be 0-0.75, not {self.overlap}"),
                (
                    self.windows in WINDOW_MODES,
                    f"windows must be one of {', '.join(WINDOW_MODES)}, not {self.windows!r}",
                ),
                (
                    1 <= self.feature_reuse <= MAX_FEATURE_REUSE,
                    f"feature reuse must be 1-{MAX_FEATURE_REUSE} (1: off), "
                    f"not {self.feature_reuse}",
                ),
                (
                    0.0 <= self.guidance_until <= 1.0,
                    f"guidance for the first part must be 0-1 (a share of the steps), "
                    f"not {self.guidance_until}",
                ),
                (
                    self.phase in PHASE_MODES,
                    f"phase must be one of {', '.join(PHASE_MODES)}, not {self.phase!r}",
                ),
                (
                    self.phase_iterations is None or 0 <= self.phase_iterations <= MAX_ITERATIONS,
                    f"Griffin-Lim iterations must be 0-{MAX_ITERATIONS} (more only takes "
                    f"longer), not {self.phase_iterations}",
                ),
                (
                    self.batch_size is None or 1 <= self.batch_size <= MAX_BATCH_SIZE,
                    f"batch size must be 1-{MAX_BATCH_SIZE}, not {self.batch_size}",
                ),
                (
                    self.scheduler in SCHEDULER_NAMES,
                    f"unknown scheduler {self.scheduler!r}: choose one of "
                    + ", ".join(SCHEDULER_NAMES),
                ),
                (
                    0.0 <= self.transition_s <= 30.0,
                    f"a section transition must be 0-30 s, not {self.transition_s}",
                ),
                (0.0 <= self.alpha <= 1.0, f"alpha must be between 0 and 1, not {self.alpha}"),
                (
                    self.seed_end is None or 0 <= self.seed_end <= MAX_SEED,
                    f"the seed to interpolate to must be 0 to {MAX_SEED}, not {self.seed_end}",
                ),
                (
                    isinstance(self.sections, tuple)
                    and all(isinstance(x, Section) for x in self.sections),
                    "sections must be Section objects (use RenderSettings.from_dict for JSON)",
                ),
                (
                    all(
                        a.start_s < b.start_s
                        for a, b in zip(self.sections, self.sections[1:], strict=False)
                    ),
                    "sections must be in order of their start, each starting after the last",
                ),
            ]
        )

    @property
    def strongest_denoise(self) -> float:
        """The highest denoise anywhere in the take (a section's may be above the take's)."""
        values = [s.denoise for s in self.sections if s.denoise is not None]
        return max([self.denoise, *values])

    @property
    def denoise_steps(self) -> int:
        """Scheduler steps actually run: img2img skips the first (1 - denoise) of them (of the
        strongest denoise anywhere: weaker parts of the song join the loop later)."""
        return min(int(self.steps * self.strongest_denoise), self.steps)

    def warnings(self) -> list[str]:
        """Valid settings that are probably not what was meant, said for a composer."""
        if self.denoise > 0 and self.denoise_steps == 0:
            return [
                f"Steps x denoise is {self.steps * self.denoise:.2f}: less than one denoising "
                "step, so the model does nothing and the take is your sketch unchanged. Raise "
                "Steps or Denoise."
            ]
        return []

    @property
    def guided_steps(self) -> int:
        """Denoising steps run with classifier-free guidance (the first ones)."""
        if self.guidance <= 1.0:
            return 0
        return math.ceil(self.denoise_steps * self.guidance_until - 1e-9)

    @property
    def draft(self) -> bool:
        """True when a draft option (less model work, not yet checked by ear) is on."""
        return self.windows != "overlap" or self.feature_reuse > 1 or self.guidance_until < 1

    @property
    def phase_settings(self) -> PhaseSettings:
        return PhaseSettings(mode=self.phase, iterations=self.phase_iterations)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> RenderSettings:
        """A copy with some settings changed (checked like the original)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = {"version": SETTINGS_VERSION, **dataclasses.asdict(self)}
        data["sections"] = list(data["sections"])  # as JSON gives it back
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderSettings:
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise NeuroChipError(f"Render settings must be a table, not {_shown(data)}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"version"}
        if unknown:
            raise NeuroChipError(f"Unknown render settings: {', '.join(sorted(unknown))}.")
        values = {k: v for k, v in data.items() if k in known}
        _check_plain_types(cls, values)
        if "sections" in values:
            sections = values["sections"]
            if not isinstance(sections, (list, tuple)):
                raise NeuroChipError(f"Sections must be a list, not {sections!r}.")
            values["sections"] = tuple(Section.from_dict(d) for d in sections)
        return cls(**values)

    def section_at(self, time_s: float) -> Section | None:
        """The section playing at ``time_s`` of the song (None before the first)."""
        playing = None
        for section in self.sections:
            if section.start_s <= time_s + 1e-9:
                playing = section
        return playing

    @classmethod
    def from_json(cls, text: str) -> RenderSettings:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise NeuroChipError(f"These render settings are not valid JSON ({err}).") from err
        return cls.from_dict(data)


class Voice(NamedTuple):
    """What plays in one part of a take: a prompt, with the take's values where its
    :class:`Overrides` keep them (the engine's conditioning of a section, in this order)."""

    prompt: str
    negative_prompt: str
    guidance: float
    denoise: float


def _override(name: str, help: str) -> Any:
    """A field of :class:`Overrides`: ``None`` (the take's value), or a value checked against
    the limits of the take's field ``name`` (its label, step and range too)."""
    take = describe(RenderSettings, name)
    return field(
        default=None, metadata={"setting": dataclasses.replace(take, help=help, useful="")}
    )


@dataclass(frozen=True)
class Overrides:
    """A prompt and the take's values it changes: a section of a prompt timeline
    (:class:`Section`) and a line of the instrument map (:class:`~neurochip.stems.Stem`) are
    each one. ``None`` keeps the take's own value; a value is checked against the take's own
    limits (the :attr:`Setting.limits` of its :class:`RenderSettings` field), so an override
    can be whatever a take can be.
    """

    prompt: str = setting_field(
        "",
        label="Prompt",
        help="What plays here, e.g. 'soft strings', 'slap bass'.",
    )
    negative_prompt: str | None = _override(
        "negative_prompt",
        "What to steer away from here (empty: the take's negative prompt).",
    )
    denoise: float | None = _override(
        "denoise",
        "How much of the sketch is reimagined here, 0-1 (empty: the take's denoise). A bass "
        "at 0.2 keeps its notes while the drums run freer at 0.5.",
    )
    guidance: float | None = _override(
        "guidance",
        "How strongly this prompt is followed here (empty: the take's guidance).",
    )

    def __post_init__(self) -> None:
        _check_plain_types(Overrides, dataclasses.asdict(self))
        _check_numbers(self)
        _check(
            [
                (self.prompt.strip() != "", "say what plays: the prompt is empty"),
                *(
                    within_limits(Overrides, name, getattr(self, name))
                    for name in ("denoise", "guidance")
                    if getattr(self, name) is not None
                ),
            ]
        )

    def resolve(self, settings: RenderSettings) -> Voice:
        """What plays: this prompt, with this negative prompt, guidance and denoise where
        given and the take's (``settings``') elsewhere. Values are as given (an int stays an
        int)."""
        return Voice(
            self.prompt,
            settings.negative_prompt if self.negative_prompt is None else self.negative_prompt,
            settings.guidance if self.guidance is None else self.guidance,
            settings.denoise if self.denoise is None else self.denoise,
        )


class WithOverrides:
    """A dataclass whose ``prompt``, ``negative_prompt``, ``denoise`` and ``guidance`` fields
    are :class:`Overrides` of the take's (:class:`Section`, :class:`~neurochip.stems.Stem`):
    checked once, resolved once, the same way for both."""

    prompt: str
    negative_prompt: str | None
    denoise: float | None
    guidance: float | None

    @property
    def overrides(self) -> Overrides:
        return Overrides(self.prompt, self.negative_prompt, self.denoise, self.guidance)

    def resolve(self, settings: RenderSettings) -> Voice:
        """What plays here in a take of ``settings`` (:meth:`Overrides.resolve`)."""
        return self.overrides.resolve(settings)

    def _check_overrides(self, what: str) -> None:
        """Raise for an override a take could not have, saying whose (``what``)."""
        try:
            self.overrides  # noqa: B018 - made to be checked
        except NeuroChipError as err:
            said = str(err)
            raise NeuroChipError(f"{what}: {said[:1].lower()}{said[1:]}") from None


@dataclass(frozen=True)
class Section(WithOverrides):
    """A part of the song with its own band: from ``start_s`` (seconds of the song) until the
    next section, windows follow this prompt; ``None`` keeps the take's own value (see
    :class:`Overrides`, whose limits are the take's)."""

    start_s: float
    prompt: str
    negative_prompt: str | None = None
    denoise: float | None = None
    guidance: float | None = None

    def __post_init__(self) -> None:
        _check(
            [
                (
                    isinstance(self.start_s, (int, float))
                    and not isinstance(self.start_s, bool)
                    and math.isfinite(self.start_s)
                    and self.start_s >= 0,
                    f"a section must start at 0 s or later, not {self.start_s!r}",
                ),
                (
                    isinstance(self.prompt, str) and self.prompt.strip() != "",
                    f"the section at {self.start_s} s needs a prompt",
                ),
            ]
        )
        self._check_overrides(f"The section at {self.start_s} s")

    @classmethod
    def from_dict(cls, data: Any) -> Section:
        if isinstance(data, Section):
            return data
        values = table_of(cls, data, "section")
        if "start_s" not in values or "prompt" not in values:
            raise NeuroChipError(f"A section needs a start (start_s) and a prompt: {_shown(data)}.")
        _check_plain_types(cls, values)
        return cls(**values)


@dataclass(frozen=True)
class TakeSetOptions:
    """What is made from a render besides take A: take B and a stereo pair, a comparison."""

    stereo_pair: bool = setting_field(
        False,
        label="Stereo pair (take A + take B)",
        help="Render a second take (seed + 1) and pan the two apart, as composers double a "
        "part by hand.",
    )
    seed_b: int | None = setting_field(
        None,
        label="Seed of take B",
        help=f"Seed of take B in a stereo pair, 0 to {MAX_SEED} (default: seed + 1, or 0 "
        "after the largest seed).",
        minimum=0,
        maximum=MAX_SEED,
    )
    width: float = setting_field(
        1.0,
        label="Stereo width",
        help="0: both takes in the middle; 1: take A hard left, take B hard right. The mix "
        "always sums cleanly to mono.",
        useful="0.6-1.0",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
    )
    compare: bool = setting_field(
        False,
        label="Crossfade comparison",
        help="Also make a mix that starts as your sketch and fades into the render, level-matched.",
    )
    compare_at_s: float | None = setting_field(
        None,
        label="Fade into the render at (s)",
        help="When the comparison fades into the render, in seconds from the render's start "
        "(default: a third of the way in).",
        minimum=0.0,
        maximum=MAX_TIME_S,
    )
    compare_fade_s: float = setting_field(
        2.0,
        label="Fade length (s)",
        help="Length of each comparison fade, in seconds.",
        minimum=0.1,
        maximum=MAX_TIME_S,
    )
    compare_back_s: float | None = setting_field(
        None,
        label="Fade back at (s)",
        help="When the comparison fades back to the sketch (default: it stays on the render).",
        minimum=0.0,
        maximum=MAX_TIME_S,
    )
    loop_intro: bool = setting_field(
        True,
        label="Intro before the loop",
        help="For a seamless loop that starts after the song's start: also render the song "
        "up to the loop as an intro, whose end flows into the loop's start (play the intro "
        "once, then the loop on repeat).",
    )

    def __post_init__(self) -> None:
        _check_numbers(self)
        _check(
            [
                (
                    0.0 <= self.width <= 1.0,
                    f"stereo width must be between 0 and 1, not {self.width}",
                ),
                (
                    self.seed_b is None or 0 <= self.seed_b <= MAX_SEED,
                    f"the seed of take B must be a whole number from 0 to {MAX_SEED}, "
                    f"not {self.seed_b}",
                ),
                (
                    self.compare_at_s is None or 0 <= self.compare_at_s <= MAX_TIME_S,
                    f"the comparison fade must start 0-{MAX_TIME_S:.0f} s into the render, "
                    f"not {self.compare_at_s}",
                ),
                (
                    0 < self.compare_fade_s <= MAX_TIME_S,
                    f"the crossfade length must be more than 0 s and at most "
                    f"{MAX_TIME_S:.0f} s, not {self.compare_fade_s}",
                ),
                (
                    self.compare_back_s is None or 0 <= self.compare_back_s <= MAX_TIME_S,
                    f"the fade back to the sketch must be 0-{MAX_TIME_S:.0f} s into the render, "
                    f"not {self.compare_back_s}",
                ),
            ]
        )

    def take_b(self, settings: RenderSettings) -> RenderSettings:
        """Settings of take B: take A's with :attr:`seed_b`, or seed + 1 (0 after the largest)."""
        seed = (settings.seed + 1) % (MAX_SEED + 1) if self.seed_b is None else self.seed_b
        return settings.replace(seed=seed)


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
