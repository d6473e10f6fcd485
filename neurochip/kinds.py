"""The kinds of engine NeuroChip knows, as front ends and take labels speak of them.

Their names, the render settings each reads and its defaults, and what a composer is told of
each (licence, what it is good at). Plain data, imported by the model choice
(:mod:`neurochip.model_spec`), the app and the take library alike.
"""

from __future__ import annotations

from typing import Any

#: The kinds of engine NeuroChip can load: Riffusion (or any Stable Diffusion 1.x model), the
#: default and the reference, ACE-Step 1.5 and Stable Audio 3.
KINDS: tuple[str, ...] = ("riffusion", "ace-step", "stable-audio-3")

#: Each kind as a composer reads it.
KIND_NAMES = {
    "riffusion": "Riffusion",
    "ace-step": "ACE-Step 1.5",
    "stable-audio-3": "Stable Audio 3",
}

#: The render settings each kind reads, as front ends show them before its model has loaded
#: (a loaded backend's ``capabilities.knobs`` is the last word); Riffusion reads them all.
KIND_KNOBS: dict[str, tuple[str, ...] | None] = {
    "riffusion": None,
    "ace-step": ("prompt", "cover_strength", "steps", "shift", "seed"),
    "stable-audio-3": ("prompt", "denoise", "steps", "seed"),
}

#: What a composer is told of each kind: its licence and what it is good at.
ABOUT_KINDS = {
    "riffusion": "Riffusion 1 (2022, CreativeML OpenRAIL-M): a 5-second spectrogram model, "
    "44.1 kHz mono; every NeuroChip tool, sections and interpolation included.",
    "ace-step": "ACE-Step 1.5 (2026, MIT): whole-song covers at 48 kHz in a few steps, "
    "repaint for re-rolls, an instrument added as its own part; no sections.",
    "stable-audio-3": "Stable Audio 3 (2026, Stability AI Community License: free for research "
    "and for individuals and organisations under USD 1M annual revenue, above that an "
    "enterprise licence; its output is yours to use; the text encoder is under Gemma's terms "
    "of use): variations of the sketch at 44.1 kHz in 8 steps, inpainting for re-rolls, up to "
    "384 s a piece (Small Music: 120 s, and it runs on a laptop CPU). "
    "Denoise is the noise level the sketch's latents are mixed to (1: the prompt alone); by "
    "signal-to-noise ratio Riffusion's 0.2 / 0.35 / 0.5 / 0.8 are about 0.36 / 0.5 / 0.62 / "
    "0.84 here. No sections, no guidance knob (distilled). See the model card for the licence.",
}

#: Render settings whose default differs by kind (ACE-Step's turbo models and Stable Audio 3's
#: distilled ones are made for 8 steps, as each publishes): front ends start a composer there.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "riffusion": {},
    "ace-step": {"steps": 8},
    "stable-audio-3": {"steps": 8},
}

#: Seconds each engine took for 10 s of the same song on the project's 2-core CPU, full-size
#: architectures with random weights, each with its own defaults (``bench/engines.py``;
#: ``bench/results/cpu-engines.json``, a busy machine): what a CPU user is told when choosing.
CPU_SECONDS_PER_10S = {
    "stable-audio-3-small": 20.4,
    "ace-step": 106.8,
    "stable-audio-3": 142.4,
    "riffusion": 1183.8,
}


def cpu_advice() -> str:
    """What a composer rendering on a CPU should pick, from the bench's measured times."""
    said = {
        "stable-audio-3-small": "Stable Audio 3 Small Music",
        "ace-step": "ACE-Step 1.5",
        "stable-audio-3": "Stable Audio 3 Medium",
        "riffusion": "Riffusion",
    }
    times = ", ".join(
        f"{said[kind]} about {_spoken(seconds)}" for kind, seconds in CPU_SECONDS_PER_10S.items()
    )
    return (
        f"On a CPU, 10 s of song took {times} (a 2-core machine, full-size models; "
        "bench/engines.py). For quick tries choose Stable Audio 3 with "
        "stabilityai/stable-audio-3-small-music."
    )


def _spoken(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
