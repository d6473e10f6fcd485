"""``neurochip synth``: a MIDI sketch played by the chip synth (or a SoundFont)."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_max_duration,
    add_output_options,
    check_outputs,
    progress_bar,
)
from neurochip.errors import NeuroChipError
from neurochip.io.write import save_audio


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "synth",
        help="render a MIDI sketch with the built-in chip synth (or a SoundFont)",
        description="Render a Standard MIDI File as chip music: pulse, triangle and noise "
        "voices that follow pitch bend, mod-wheel vibrato, volume and expression swells, "
        "sustain and pan. Every command that takes audio also takes .mid files directly.",
        epilog=EPILOG,
    )
    parser.add_argument("midi", type=Path, help="the MIDI file (.mid)")
    add_output_options(parser)
    parser.add_argument(
        "--voice",
        action="append",
        type=_voice_override,
        metavar="TRACK=VOICE",
        help="give a track another voice, e.g. --voice 2=triangle (voices: pulse12, pulse25, "
        "pulse50, triangle, saw, noise); repeatable. The tracks are listed after rendering.",
    )
    parser.add_argument(
        "--soundfont",
        nargs="?",
        const="default",
        default=None,
        metavar="FILE.sf2",
        help="render with FluidSynth and this SoundFont instead (no file: the General MIDI "
        "SoundFont installed on this system)",
    )
    add_max_duration(parser, "songs")
    parser.set_defaults(run=run)


def _voice_override(text: str) -> tuple[str, str]:
    track, sep, voice = text.partition("=")
    if not sep or not track or not voice:
        raise argparse.ArgumentTypeError(f"use TRACK=VOICE (e.g. 2=triangle), not {text!r}")
    return track.strip(), voice.strip()


def run(args: argparse.Namespace) -> None:
    from neurochip.synth import read_midi, render_midi, render_soundfont

    soundfont = None if args.soundfont in (None, "default") else Path(args.soundfont)
    check_outputs(args, [args.output], [args.midi, soundfont])
    song = read_midi(args.midi, max_seconds=args.max_duration)
    if args.soundfont is not None:
        if args.voice:
            raise NeuroChipError("--voice picks chip voices; it does not apply to --soundfont.")
        soundfont = None if args.soundfont == "default" else args.soundfont
        audio = render_soundfont(args.midi, soundfont, max_seconds=args.max_duration)
        how = "the SoundFont"
    else:
        voices = dict(args.voice or [])
        with progress_bar("Synthesising") as progress:
            audio = render_midi(song, voices=voices, progress=progress)
        how = "the chip synth"
        print("Voices:")
        for track in song.tracks:
            voice = voices.get(track.key, track.voice)
            notes = f"{track.notes:>5} notes"
            print(f"  {track.key:>5}  ch {track.channel:<2}  {notes}  {voice:<9} {track.name}")
    path = save_audio(args.output, audio, bit_depth=args.bit_depth)
    print(f"Wrote {path} ({audio.duration_s:.2f} s, rendered with {how}).")
