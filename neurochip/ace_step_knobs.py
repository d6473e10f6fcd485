"""ACE-Step's knobs, and what it is told of the song: fields every :class:`~neurochip.settings.
RenderSettings` has (other engines leave them alone), defaults as ACE-Step publishes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from neurochip.setting_fields import _check, setting_field, within_limits


@dataclass(frozen=True)
class AceStepKnobs:
    """The render settings only ACE-Step reads."""

    cover_strength: float = setting_field(
        1.0,
        label="Cover strength",
        help="ACE-Step: how closely the take follows your sketch, 0-1. 1 (ACE-Step's "
        "default) covers it throughout; lower values let the prompt take over for part of "
        "each step, so the notes drift and the style grows. Riffusion's Denoise does this "
        "job there.",
        useful="ACE-Step: 0.6-1 (its default 1)",
        minimum=0.0,
        maximum=1.0,
        step=0.05,
        limits=(0.0, 1.0),
    )
    shift: float = setting_field(
        3.0,
        label="Shift",
        help="ACE-Step: where its steps spend their effort. Higher spends more of them on "
        "the rough shape of the music, lower on the fine detail; ACE-Step publishes 3 for "
        "its turbo models.",
        minimum=1.0,
        maximum=5.0,
        step=0.5,
        limits=(1.0, 5.0),
    )
    bpm: int | None = setting_field(
        None,
        label="Tempo (BPM)",
        help="ACE-Step: the song's tempo, told to the model. Empty: taken from the MIDI "
        "file's tempo map or the bar grid where the front end knows it, else the model's "
        "guess.",
        minimum=30,
        maximum=300,
    )
    time_signature: int | None = setting_field(
        None,
        label="Beats per bar",
        help="ACE-Step: the song's time signature as beats per bar (4 for 4/4, 3 for 3/4), "
        "told to the model. Empty: from the MIDI file or the bar grid, else the model's guess.",
        minimum=1,
        maximum=16,
    )
    key: str = setting_field(
        "",
        label="Key",
        help="ACE-Step: the song's key, told to the model, e.g. 'A minor', 'F# major'. Empty: "
        "from the MIDI file's key signature or estimated from the notes, else the model's "
        "guess.",
    )

    def check_ace_step(self) -> None:
        _check(
            [
                within_limits(AceStepKnobs, "cover_strength", self.cover_strength),
                within_limits(AceStepKnobs, "shift", self.shift),
                (
                    self.bpm is None or 30 <= self.bpm <= 300,
                    f"tempo must be 30-300 BPM, not {self.bpm}",
                ),
                (
                    self.time_signature is None or 1 <= self.time_signature <= 16,
                    f"beats per bar must be 1-16, not {self.time_signature}",
                ),
            ]
        )
