"""MIDI sketches in: reading Standard MIDI Files and playing them as chip music.

The built-in chip synth (pulse, triangle, saw, noise voices and a drum kit) plays a MIDI file
with the expression the composer wrote; FluidSynth with a General MIDI SoundFont is the
alternative.

* :mod:`neurochip.synth.midi` reads the file: its parts, notes, controller changes and tempo
  map, and the chip voice each General MIDI program gets (:func:`read_midi`,
  :func:`default_voice`); how much work a song is to play (:func:`synth_work`), weighed
  before anything is played.
* :mod:`neurochip.synth.chip` is the chip synth (:func:`render_midi`): voices, wavetables,
  envelopes, and the controller curves (bend, vibrato, volume, pan). See it for what each
  control does. :func:`render_midi_parts` plays groups of parts alone (stems).
* :mod:`neurochip.synth.drums` is its drum kit, for channel 10.
* :mod:`neurochip.synth.soundfont` plays the file with FluidSynth instead
  (:func:`render_soundfont`).
* :mod:`neurochip.synth.common` holds what these share: the sample clock, voice stealing,
  progress reporting, the NES noise LFSR and the output level.

Every problem with an input is raised as :class:`~neurochip.errors.NeuroChipError` naming
the file.
"""

from neurochip.synth.chip import (
    CONTROL_BLOCK,
    MAX_VOICES_PER_CHANNEL,
    PEAK_LEVEL,
    VIBRATO_MAX_CENTS,
    VIBRATO_RATE_HZ,
    render_midi,
    render_midi_parts,
)
from neurochip.synth.midi import (
    DRUMS,
    MAX_MIDI_BYTES,
    MAX_MIDI_SECONDS,
    MAX_SYNTH_WORK,
    NOTE_COST_S,
    RELEASE_TAIL_S,
    VOICES,
    MidiSong,
    TrackInfo,
    default_voice,
    gm_program_name,
    read_midi,
    synth_work,
)
from neurochip.synth.soundfont import find_fluidsynth, find_soundfont, render_soundfont

__all__ = [
    "CONTROL_BLOCK",
    "DRUMS",
    "MAX_MIDI_BYTES",
    "MAX_MIDI_SECONDS",
    "MAX_SYNTH_WORK",
    "MAX_VOICES_PER_CHANNEL",
    "NOTE_COST_S",
    "PEAK_LEVEL",
    "RELEASE_TAIL_S",
    "VIBRATO_MAX_CENTS",
    "VIBRATO_RATE_HZ",
    "VOICES",
    "MidiSong",
    "TrackInfo",
    "default_voice",
    "find_fluidsynth",
    "find_soundfont",
    "gm_program_name",
    "read_midi",
    "render_midi",
    "render_midi_parts",
    "render_soundfont",
    "synth_work",
]
