"""Walking the chunks of RIFF (WAV) and IFF (AIFF) files.

libsndfile hides two things NeuroChip needs: whether a WAV was cut off (its data chunk says
more than the file holds) and a long ``ICMT`` comment (where takes keep their settings).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, Literal


def iff_chunks(
    f: BinaryIO, start: int, end: int, big_endian: bool
) -> Iterator[tuple[bytes, int, int]]:
    """Yield (id, declared size, offset of the body) for RIFF/IFF chunks in [start, end)."""
    order: Literal["big", "little"] = "big" if big_endian else "little"
    position = start
    while position + 8 <= end:
        f.seek(position)
        header = f.read(8)
        if len(header) < 8:
            return
        size = int.from_bytes(header[4:], order)
        yield header[:4], size, position + 8
        position += 8 + size + (size & 1)
