"""Every error NeuroChip raises on purpose, in one place.

Every failure a user can cause (a file that does not decode, a setting out of range, missing
model weights) is raised as a :class:`NeuroChipError` whose message says what happened and
what to do. The CLI and the app print the message alone, never a traceback.
"""


class NeuroChipError(Exception):
    """A problem the user can fix; ``str(err)`` is written for them."""


class AudioLoadError(NeuroChipError):
    """An input file could not be read as audio (or as a MIDI sketch)."""


class TooLongError(AudioLoadError):
    """A sketch is longer than the length limit.

    The message says how long it is, the limit, and to trim it. Raising the limit is up to the
    front end (the CLI's ``--max-duration``, ``max_duration_s=`` in Python; the app has a fixed
    limit), so each adds that advice where it applies.
    """

    def __init__(self, message: str, *, duration_s: float, limit_s: float) -> None:
        super().__init__(message)
        self.duration_s = duration_s
        self.limit_s = limit_s


class ModelNotFoundError(NeuroChipError):
    """The model weights are not here; the message says how to get them."""


class RenderCancelled(NeuroChipError):
    """The render was cancelled; nothing was written."""


class ModelLoadError(NeuroChipError):
    """The model is here but a part of it cannot be used; the message names the part and why."""
