"""``neurochip spectrogram``: the picture the model sees."""

from __future__ import annotations

import argparse
from pathlib import Path

from neurochip.cli.common import (
    EPILOG,
    add_device_option,
    add_input_options,
    add_overwrite_option,
    check_outputs,
    load_span,
)
from neurochip.device import resolve_device
from neurochip.spectrogram import SpectrogramParams, as_waveform, save_image, spectrogram_image


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "spectrogram",
        help="make the spectrogram image the model sees",
        description="Write the Riffusion spectrogram image (PNG with its settings in EXIF) "
        "of a song or part of it. Each column is 10 ms; 512 columns are 5.12 s.",
        epilog=EPILOG,
    )
    parser.add_argument("input", type=Path, help="audio file (WAV, MP3, FLAC, OGG, MIDI, ...)")
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT.png", help="image to write"
    )
    parser.add_argument(
        "--stereo",
        action="store_true",
        help="keep left and right apart (green = left, blue = right); default: mono mix",
    )
    add_input_options(parser)
    add_device_option(parser)
    add_overwrite_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    check_outputs(args, [args.output], [args.input])
    audio = load_span(args, args.input)
    params = SpectrogramParams(stereo=args.stereo)
    waveform = as_waveform(audio, params).to(resolve_device(args.device))
    image = spectrogram_image(waveform, params)
    path = save_image(image, args.output)
    print(
        f"Wrote {path}: {image.width} x {image.height} pixels, "
        f"{'stereo' if args.stereo else 'mono'}, {audio.duration_s:.2f} s."
    )
