"""Notes counted later: the note measure of a take kept before it existed, made on demand.

Takes rendered before notes were counted carry the chroma score alone (``"faithfulness"``
without ``"notes"``). :func:`count_notes` measures such a take again, as a render measures a
new one (:func:`~neurochip.takeset.measure_take`): against the song copy the library kept of
its sketch (``sources/<sketch key>``, what the Takes page's *Open* brings back), over the
take's span (its settings' ``start_s``, the take's length), per bar of the song where its
bars are known (a MIDI sketch's tempo map, the bar grid an audio take was rendered on), the
notes it should keep being the sketch's own (a MIDI file's, an audio sketch's transcription).
The result goes into the take's metadata and index row together
(:meth:`~neurochip.library.store.TakeLibrary.set_faithfulness`).

What a file holds decides what is measured: a take (or a comp, a mix of stems, an intro,
a variation) as it is; a stereo pair as its two takes, taken apart again from the pan
law (:func:`~neurochip.mix.stereo_pair`), and their mean as the pair's, as a render's pair
carries them. A comparison starts as the sketch itself and a stem is one part played alone,
so neither is measured against the whole song here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from neurochip.bars import BarGrid
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import bars_of_span, sketch_bar_times, span_faithfulness
from neurochip.io.audio import Audio
from neurochip.library.metadata import combined_faithfulness, notes_kept_score
from neurochip.library.record import Take
from neurochip.library.store import TakeLibrary
from neurochip.sketch import Sketch, load_sketch

__all__ = ["NOT_COUNTED_HERE", "count_notes", "has_notes", "take_song"]

#: Kinds of take whose notes are not counted against the whole song (and why).
NOT_COUNTED_HERE = {
    "crossfade comparison": "a comparison starts as the sketch itself: count the notes of "
    "its takes (A and B) instead",
    "stem": "a stem is one part played alone, not the whole song: its notes are counted "
    "when it is rendered",
    "added part": "an added part is played alone, not the whole song",
}


def has_notes(take: Take) -> bool:
    """Whether a take's notes were counted (its metadata holds notes kept)."""
    return take.notes_kept is not None or notes_kept_score(take.metadata) is not None


def take_song(library: TakeLibrary, take: Take) -> Sketch:
    """The sketch a take was rendered from, as the library kept it (with the bar grid an
    audio take was rendered on).

    Raises:
        NeuroChipError: The library holds no copy of it (a take made before songs were
            kept, or its copy removed), or the copy cannot be read.
    """
    key = take.metadata.get("sketch_key")
    source = library.source(key) if isinstance(key, str) else None
    if source is None:
        raise NeuroChipError(
            f"The song of “{take.name}” was not kept with it (made before NeuroChip kept "
            "songs, or its copy was removed from the library's sources folder), so its notes "
            "cannot be counted here: `neurochip faithfulness SKETCH TAKE` counts them against "
            "the sketch file."
        )
    sketch = load_sketch(
        source.data, name=source.decode_as, voices=source.voices, max_duration_s=None
    )
    sketch = dataclasses.replace(sketch, name=source.name)
    if sketch.midi is None:  # audio: the grid the take was rendered on, if it had one
        sketch = sketch.with_bar_grid(BarGrid.from_dict(take.metadata.get("bar_grid")))
    return sketch


def count_notes(library: TakeLibrary, take_id: str) -> Take:
    """Measure a kept take again with its notes counted, and keep the result with it.

    The new ``"faithfulness"`` (chroma score and strip, and ``"notes"``) replaces the old in
    the metadata its file carries and in its index row, in one step (the audio is written
    back bit for bit: see :func:`~neurochip.library.edits.write_faithfulness`). Returns the
    take as it now is.

    Raises:
        NeuroChipError: An unknown or damaged take, one whose song copy is missing (see
            :func:`take_song`), a kind that is not measured against the song
            (:data:`NOT_COUNTED_HERE`), a stereo pair with no width between its takes, or
            basic-pitch missing. The take is then left as it was.
    """
    take = library.get(take_id)
    why = NOT_COUNTED_HERE.get(take.kind)
    if why is not None:
        raise NeuroChipError(f"The notes of “{take.name}” are not counted: {why}.")
    audio = library.load_audio(take.id)  # refuses a damaged take
    song = take_song(library, take)
    start_s = take.settings().start_s
    heard = _takes_in(take, audio)
    measured = {
        name: _measure(song, start_s, take_audio, take.name) for name, take_audio in heard.items()
    }
    found = combined_faithfulness(measured)
    if found is None:  # not reached: every take was measured
        raise NeuroChipError(f"The notes of “{take.name}” could not be counted.")
    return library.set_faithfulness(take.id, found, audio)


def _takes_in(take: Take, audio: Audio) -> dict[str, Audio]:
    """The takes a file holds, by name: itself, or a stereo pair's A and B taken apart."""
    takes = take.metadata.get("takes")
    if take.kind != "stereo pair" or not isinstance(takes, dict) or set(takes) != {"A", "B"}:
        return {"A": audio}
    width = take.metadata.get("width", 1.0)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise NeuroChipError(
            f"“{take.name}” has its takes in the middle (width {width}): they cannot be "
            "told apart to count their notes. Count the notes of takes A and B themselves."
        )
    if audio.channels != 2:
        raise NeuroChipError(f"“{take.name}” is not stereo: it does not hold a pair of takes.")
    # stereo_pair: left = near·A + far·B, right = far·A + near·B (one gain on both after a
    # limiter, which notes do not hear), near + far = 1, near - far = width.
    near, far = (1 + width) / 2, (1 - width) / 2
    left, right = audio.samples.astype(np.float64)
    a = (near * left - far * right) / width
    b = (near * right - far * left) / width
    return {
        "A": Audio(a[None].astype(np.float32), audio.sample_rate),
        "B": Audio(b[None].astype(np.float32), audio.sample_rate),
    }


def _measure(song: Sketch, start_s: float, take: Audio, name: str) -> dict[str, Any]:
    """One take's note faithfulness to the song's span it covers, notes counted."""
    duration_s = take.duration_s
    if not math.isfinite(start_s) or start_s >= song.audio.duration_s:
        raise NeuroChipError(
            f"“{name}” starts at {start_s:g} s, past the end of its song "
            f"({song.audio.duration_s:.1f} s): its notes cannot be counted."
        )
    span = song.audio.span(start_s, duration_s)
    _, first_bar = bars_of_span(sketch_bar_times(song), start_s)
    found = span_faithfulness(song, span, take, start_s, sketch_bar_times(song))
    if found.notes is None:
        raise NeuroChipError(
            "Counting notes needs basic-pitch and onnxruntime, which are not installed: run "
            "`make install`. The chroma score the take has stays as it is."
        )
    data = found.to_dict()
    if first_bar is not None and found.segment == "bar":
        data["first_bar"] = first_bar
    return data
