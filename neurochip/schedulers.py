"""The sampling algorithms a composer picks by name, and the diffusers class behind each."""

from __future__ import annotations

from typing import Any

from neurochip.errors import NeuroChipError
from neurochip.settings import SCHEDULER_NAMES

#: Scheduler names users pick from, and the diffusers class (and options) behind each.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    # Latent consistency: 4-8 steps with an LCM-LoRA (neurochip.lora), guidance 1-2.
    "lcm": ("LCMScheduler", {}),
}
DEFAULT_SCHEDULER = "dpm++"
# The names composers choose from are listed with the settings; each needs its class here.
assert tuple(SCHEDULERS) == SCHEDULER_NAMES, "neurochip.settings.SCHEDULER_NAMES is out of date"


def scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise NeuroChipError(
            f"Unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}."
        ) from None
