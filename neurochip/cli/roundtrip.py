"""``neurochip roundtrip``: hear what the model hears (a render at denoise 0)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neurochip.cli.common import (
    EPILOG,
    add_input_options,
    add_output_options,
    add_phase_options,
    check_outputs,
    load_span,
    progress_bar,
    write_audio,
)
from neurochip.device import resolve_device
from neurochip.io.audio import Audio, limit_peak
from neurochip.phase import ROUNDTRIP_SOURCE_ITERATIONS, PhaseSettings, roundtrip
from neurochip.spectrogram import SpectrogramParams


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "roundtrip",
        help="hear what the model hears (audio -> image -> audio)",
        description="Audio -> 8-bit spectrogram image -> audio: exactly what a render at "
        "denoise 0 gives back. The output has the input's length and stays aligned with it.",
        epilog=EPILOG,
    )
    parser.add_argument("input", type=Path, help="audio file (or MIDI sketch)")
    add_output_options(parser)
    add_input_options(parser)
    add_phase_options(parser, with_mode=True, source_iterations=ROUNDTRIP_SOURCE_ITERATIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    check_outputs(args, [args.output], [args.input])
    audio = load_span(args, args.input)
    device = resolve_device(args.device)
    settings = PhaseSettings(mode=args.phase, iterations=args.iterations)
    with progress_bar(f"Round trip ({args.phase} phase)") as progress:
        waveform = roundtrip(
            torch.from_numpy(audio.samples).to(device),
            SpectrogramParams(stereo=audio.channels == 2),
            settings,
            progress,
        )
    write_audio(args, Audio(limit_peak(waveform).cpu().numpy(), audio.sample_rate))
