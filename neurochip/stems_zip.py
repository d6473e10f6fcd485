"""A stems render as files, and back: the zip a DAW opens, and its ``stems.json`` as a recipe.

The zip holds each stem as a WAV from the song's start (so they line up on import), the mix,
``tempo.mid`` (the sketch's tempo map, for the DAW's grid) and ``stems.json``, which renders
the same stems again (:func:`stems_from_json`).
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

import mido
import numpy as np

from neurochip import __version__, untrusted
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import Audio
from neurochip.io.write import atomic_write, save_audio
from neurochip.library.names import numbered_apart
from neurochip.settings import RenderSettings
from neurochip.sketch import Sketch
from neurochip.stems import (
    MAX_STEMS_JSON_BYTES,
    STEMS_FORMAT,
    Stem,
    StemMix,
    StemTakes,
    _stem_entries,
)


def stem_file_names(names: Sequence[str]) -> list[str]:
    """Each stem's file name, without folder or extension: ``"Slap Bass"``, nothing a file
    system minds, and never one name for two stems ("Bass!" and "Bass?" -> "Bass" and
    "Bass-2", :func:`~neurochip.library.names.numbered_apart`): a second stem of one name
    would overwrite the first."""
    return numbered_apart([re.sub(r"[^\w \-]+", "", n).strip()[:60] or "stem" for n in names])


def write_stems_zip(
    target: str | Path | BinaryIO,
    sketch: Sketch,
    result: StemTakes,
    mixes: Sequence[StemMix],
    *,
    bit_depth: Literal["16", "24", "float"] = "24",
) -> list[str]:
    """A ZIP for a DAW.

    * ``stems/NN name.wav``: each stem (mono, or a stereo pair), all from the song's start
      and of one length (a span rendered later in the song is preceded by silence);
    * ``mix.wav``: the mixer's stereo mix, placed the same;
    * ``tempo.mid``: the sketch's tempo map: import it and the bars line up from bar 1;
    * ``stems.json``: everything that made the stems (:func:`stems_from_json`);
    * ``README.txt``: the above, for whoever opens the folder.

    Returns:
        The names in the ZIP.
    """
    first = result.audios[0]
    rate = first.sample_rate
    offset = round(result.start_s * rate)
    total = max(round(sketch.audio.duration_s * rate), offset + first.frames)
    files: dict[str, bytes] = {}
    entries = []
    file_names = stem_file_names([stem.name for stem in result.stems])
    for i, (stem, audio, settings, mix) in enumerate(
        zip(result.stems, result.audios, result.stem_settings, mixes, strict=True), start=1
    ):
        name = f"stems/{i:02d} {file_names[i - 1]}.wav"  # numbered in the map's order
        files[name] = _wav_bytes(_placed(audio, offset, total), bit_depth)
        entries.append(
            {
                "file": name,
                **stem.to_dict(),
                "mix": dataclasses.asdict(mix),
                "settings": settings.to_dict(),
            }
        )
    files["mix.wav"] = _wav_bytes(_placed(result.mix(mixes), offset, total), bit_depth)
    files["tempo.mid"] = tempo_map_midi(sketch)
    description = {
        "format": STEMS_FORMAT,
        "neurochip": __version__,
        "sketch": sketch.name,
        "sketch_key": sketch.key,
        "voices": dict(sketch.voices),
        "settings": result.settings.to_dict(),
        "sample_rate": rate,
        "frames": total,
        "span": {"start_s": result.start_s, "frames": first.frames},
        "pair_width": result.pair_width,
        "bars_s": sketch_bar_times(sketch),
        "stems": entries,
        "model": result.metadata[0].get("model"),
    }
    files["stems.json"] = json.dumps(description, indent=2).encode()
    files["README.txt"] = _readme(sketch, result, total / rate).encode()
    if isinstance(target, (str, Path)):
        with atomic_write(target) as temporary, open(temporary, "wb") as handle:
            _zip(handle, files)
    else:
        _zip(target, files)
    return list(files)


def _zip(handle: BinaryIO, files: Mapping[str, bytes]) -> None:
    # WAVs hardly compress: stored, so a DAW (and a person) can open them at once.
    with zipfile.ZipFile(handle, "w") as archive:
        for name, data in files.items():
            kind = zipfile.ZIP_STORED if name.endswith(".wav") else zipfile.ZIP_DEFLATED
            archive.writestr(name, data, compress_type=kind)


def _placed(audio: Audio, offset: int, total: int) -> Audio:
    """The audio at ``offset`` frames into ``total`` frames of silence."""
    samples = np.zeros((audio.channels, total), dtype=np.float32)
    samples[:, offset : offset + audio.frames] = audio.samples[:, : total - offset]
    return Audio(samples, audio.sample_rate)


def _wav_bytes(audio: Audio, bit_depth: Literal["16", "24", "float"]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="neurochip-stems-") as folder:
        return save_audio(Path(folder) / "stem.wav", audio, bit_depth=bit_depth).read_bytes()


def tempo_map_midi(sketch: Sketch) -> bytes:
    """A MIDI file of the sketch's tempo map for a DAW project. A MIDI sketch's own file
    (its tempo map and its notes); an audio sketch's bar grid as tempo and metre, with bar 1
    where the grid has it (an upbeat before it makes a bar 0)."""
    if sketch.midi is not None:
        return sketch.midi
    grid = sketch.bar_grid
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("track_name", name=f"{sketch.name} tempo", time=0))
    if grid is not None:
        track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(grid.bpm), time=0))
        track.append(
            mido.MetaMessage("time_signature", numerator=grid.beats_per_bar, denominator=4, time=0)
        )
    track.append(mido.MetaMessage("end_of_track", time=0))
    out = io.BytesIO()
    midi.save(file=out)
    return out.getvalue()


def _readme(sketch: Sketch, result: StemTakes, length_s: float) -> str:
    kind = "stereo pairs (two takes panned apart)" if result.pair_width is not None else "mono"
    tempo = (
        "tempo.mid is the sketch's own MIDI file: its tempo map (and its notes, should you want "
        "them); it ends at its last event, a little before the WAVs' release tails."
        if sketch.midi is not None
        else "tempo.mid holds the tempo and metre NeuroChip found (or you set) for the song."
    )
    lines = [
        f"Stems of {sketch.name}, rendered by NeuroChip {__version__}.",
        "",
        f"Every WAV is {length_s:.3f} s long and starts at the song's start (0:00): drop them",
        "all at the start of a project and they line up, sample for sample.",
        f"The stems are {kind} and pre-fader: gain, pan, mute and solo from the NeuroChip",
        "mixer are in mix.wav and stems.json only, for you to set again in the DAW.",
        tempo,
        "Import tempo.mid first and the bars of the project match the stems'.",
        "stems.json says how each stem was made (prompt, denoise, guidance, seed, mixer).",
        "",
        "Stems:",
    ]
    for stem in result.stems:
        parts = "+".join(stem.parts) or "the whole sketch"
        lines.append(f"  {stem.name}: {stem.prompt} (parts {parts})")
    return "\n".join(lines) + "\n"


def read_stems_json(data: bytes | str) -> dict[str, Any]:
    """The ``stems.json`` of an export, checked (its contents by :func:`stems_from_json`)."""
    description = untrusted.load_json_text(data, "stems.json", max_bytes=MAX_STEMS_JSON_BYTES)
    if not isinstance(description, dict) or description.get("format") != STEMS_FORMAT:
        raise NeuroChipError("This is not the stems.json of a NeuroChip stems export.")
    return description


class StemRecipe(NamedTuple):
    """What an export's ``stems.json`` says made its stems: :func:`render_stems` with these
    (on the same sketch, model and device) makes them again."""

    settings: RenderSettings
    stems: list[Stem]
    mixes: list[StemMix]
    pair_width: float | None


def stems_from_json(description: Mapping[str, Any]) -> StemRecipe:
    """The render settings, instrument map, mixer and pairing an export's ``stems.json``
    holds.

    Raises:
        NeuroChipError: "stems.json is damaged: ..." for a field missing or of a wrong type
            or range, naming it.
    """
    try:
        data = untrusted.table(description, "")
        settings = RenderSettings.from_dict(
            untrusted.table(untrusted.field(data, "settings", ""), '"settings"')
        )
        entries = _stem_entries(untrusted.field(data, "stems", ""))
        width = data.get("pair_width")
        if width is not None:
            width = untrusted.number(data, "pair_width", "", low=0.0, high=1.0)
    except NeuroChipError as err:
        raise NeuroChipError(f"stems.json is damaged: {err} Export the stems again.") from None
    return StemRecipe(settings, [e[0] for e in entries], [e[1] for e in entries], width)
