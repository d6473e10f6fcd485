"""Takes kept: the metadata every take file carries, their names, thumbnails, and the store.

``metadata`` is the JSON inside every file NeuroChip writes, ``names`` turns what composers
typed into titles and safe file names, ``thumbnails`` draws small spectrograms, and ``store``
is the :class:`TakeLibrary` (folders on disk + an SQLite index). Nothing here renders or mixes:
:mod:`neurochip.takeset` does that and hands the results to the store.
"""

from neurochip.library.metadata import (
    read_take_metadata,
    save_take,
    settings_from_take,
    take_metadata,
)
from neurochip.library.names import default_take_name, take_filename
from neurochip.library.store import Take, TakeLibrary, default_home
from neurochip.library.thumbnails import spectrogram_thumbnail

__all__ = [
    "Take",
    "TakeLibrary",
    "default_home",
    "default_take_name",
    "read_take_metadata",
    "save_take",
    "settings_from_take",
    "spectrogram_thumbnail",
    "take_filename",
    "take_metadata",
]
