"""Every error NeuroChip raises on purpose, in one place.

Every failure a user can cause (a file that does not decode, a setting out of range, missing
model weights) is raised as a :class:`NeuroChipError` whose message says what happened and
what to do. The CLI and the app print the message alone, never a traceback.
"""


class NeuroChipError(Exception):
    """A problem the user can fix; ``str(err)`` is written for them."""


class AudioLoadError(NeuroChipError):
    """An input file could not be read as audio (or as a MIDI sketch)."""


class ModelNotFoundError(NeuroChipError):
    """The model weights are not here; the message says how to get them."""


class RenderCancelled(NeuroChipError):
    """The render was cancelled; nothing was written."""


class ModelLoadError(NeuroChipError):
    """The model is here but a part of it cannot be used; the message names the part and why."""
