"""ACE-Step 1.5 (diffusers' ``AceStepPipeline``) as a NeuroChip backend.

- :mod:`.backend`: :class:`AceStepBackend`, what the engine calls: covers, repaint, parts;
- :mod:`.pipeline`: :func:`generate`, one call's conditions, noise, flow-matching loop, decode.
"""

from neurochip.engine.ace_step.backend import (
    DEFAULT_ACE_STEP_ID,
    PRIOR_RATES,
    TRACKS,
    AceStepBackend,
)

__all__ = ["DEFAULT_ACE_STEP_ID", "PRIOR_RATES", "TRACKS", "AceStepBackend"]
