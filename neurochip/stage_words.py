"""An engine's progress stages as a composer reads them (the app's bars, the CLI's lines)."""

from __future__ import annotations

#: What each engine stage is, in a composer's words.
STAGE_WORDS = {
    "encode": "reading the sketch",
    "denoise": "denoising",
    "decode": "drawing the take's spectrogram",
    "phase": "rebuilding the sound",
}


def stage_words(stage: str) -> str:
    """A progress stage as a composer reads it: "denoise step 3 of 17" -> "denoising: step 3
    of 17", "phase" -> "rebuilding the sound"; anything else (a workflow's own words) as is."""
    name, _, rest = stage.partition(" ")
    if name not in STAGE_WORDS:
        return stage
    return STAGE_WORDS[name] + (f": {rest}" if rest else "")
