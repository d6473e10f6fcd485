"""``neurochip invert``: a spectrogram picture back to sound."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neurochip.cli.common import (
    EPILOG,
    add_output_options,
    add_phase_options,
    check_outputs,
    non_negative,
    progress_bar,
    write_audio,
)
from neurochip.device import resolve_device
from neurochip.io.decode import load_audio
from neurochip.phase import PhaseSettings, audio_from_image
from neurochip.spectrogram import amplitudes_from_image, load_image


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "invert",
        help="turn a spectrogram image back into audio",
        description="Rebuild audio from a spectrogram image. With --phase-from, the phase of "
        "that audio starts the reconstruction (much cleaner); without, Riffusion's random "
        "phase is used.",
        epilog=EPILOG,
    )
    parser.add_argument("image", type=Path, help="spectrogram image (PNG)")
    add_output_options(parser)
    parser.add_argument(
        "--phase-from",
        type=Path,
        default=None,
        metavar="AUDIO",
        help="the audio the image was made from (or is aligned with), for its phase",
    )
    parser.add_argument(
        "--phase-start",
        type=non_negative,
        default=0.0,
        metavar="SEC",
        help="where in --phase-from the image begins (default: 0)",
    )
    add_phase_options(parser, with_mode=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    check_outputs(args, [args.output], [args.image, args.phase_from])
    decoded = amplitudes_from_image(load_image(args.image))
    device = resolve_device(args.device)
    params = decoded.params
    source = None
    if args.phase_from is not None:
        source_audio = load_audio(args.phase_from, sample_rate=params.sample_rate)
        source = torch.from_numpy(source_audio.span(args.phase_start).samples).to(device)
    settings = PhaseSettings(
        mode="source" if source is not None else "random", iterations=args.iterations
    )
    with progress_bar("Rebuilding audio") as progress:
        audio = audio_from_image(decoded, settings, source, progress, device)
    write_audio(args, audio)
