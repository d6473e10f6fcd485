"""The ``neurochip`` command line.

Each sub-command is a thin layer over the library: parse options, call one or two library
functions, show progress, write the file. Every problem a user can cause ends as a one-line
message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from neurochip.audio import DEFAULT_MAX_DURATION_S, Audio, load_audio, save_audio
from neurochip.device import DEVICE_CHOICES, resolve_device
from neurochip.errors import NeuroChipError
from neurochip.phase import (
    DEFAULT_ITERATIONS,
    PHASE_MODES,
    PhaseSettings,
    roundtrip,
    waveform_from_amplitudes,
)
from neurochip.spectrogram import (
    SpectrogramParams,
    amplitudes_from_image,
    load_image,
    save_image,
    spectrogram_image,
)

EPILOG = "Run 'neurochip doctor' to check what this machine can do."


# --- shared options ----------------------------------------------------------------------------


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _iterations(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--start",
        type=_non_negative,
        default=0.0,
        metavar="SEC",
        help="where in the song to begin, in seconds (default: the beginning)",
    )
    parser.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SEC",
        help="how many seconds to use from --start (default: to the end of the song)",
    )
    parser.add_argument(
        "--max-duration",
        type=_positive,
        default=DEFAULT_MAX_DURATION_S,
        metavar="SEC",
        help="refuse inputs longer than this, to protect against a wrong file "
        f"(default: {DEFAULT_MAX_DURATION_S / 60:.0f} minutes)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="OUT",
        help="the audio file to write: .wav, .flac, .ogg or .mp3",
    )
    parser.add_argument(
        "--bit-depth",
        choices=("16", "24", "float"),
        default="16",
        help="sample format of WAV/FLAC output (default: 16-bit, what DAWs and players expect)",
    )


def _add_phase_options(parser: argparse.ArgumentParser, with_mode: bool) -> None:
    if with_mode:
        parser.add_argument(
            "--phase",
            choices=PHASE_MODES,
            default="source",
            help="how the sound's phase is rebuilt: 'source' takes it from your input "
            "(clean, punchy transients; the default) and 'random' is Riffusion's own method "
            "(smeared, 'phasey'), kept for comparison",
        )
    parser.add_argument(
        "--iterations",
        type=_iterations,
        default=None,
        metavar="N",
        help="Griffin-Lim iterations: more makes the sound match the spectrogram more closely "
        f"but takes longer (default: {DEFAULT_ITERATIONS['source']} from source phase, "
        f"{DEFAULT_ITERATIONS['random']} from random phase)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="where to compute: a CUDA GPU or Apple MPS is much faster (default: the best found)",
    )


# --- progress ----------------------------------------------------------------------------------


@contextmanager
def _progress_bar(description: str):
    """A tqdm bar driven by a library progress callback (a fraction from 0 to 1)."""
    with tqdm(
        total=1000,
        desc=description,
        unit="‰",
        leave=False,
        disable=None,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
    ) as bar:

        def update(fraction: float) -> None:
            bar.update(round(fraction * 1000) - bar.n)

        yield update


def _load(args: argparse.Namespace, path: Path, stereo: bool | None = None) -> Audio:
    audio = load_audio(path, max_duration_s=args.max_duration)
    audio = audio.span(args.start, args.duration)
    if stereo is True:
        audio = audio.to_stereo()
    elif stereo is False:
        audio = audio.to_mono()
    return audio


def _tensor(audio: Audio, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(audio.samples).to(device)


def _save(args: argparse.Namespace, waveform: torch.Tensor, sample_rate: int) -> None:
    audio = Audio(waveform.detach().cpu().numpy(), sample_rate)
    path = save_audio(args.output, audio, bit_depth=args.bit_depth)
    print(f"Wrote {path} ({audio.duration_s:.2f} s, {audio.channels} channel(s)).")


# --- commands ----------------------------------------------------------------------------------


def cmd_spectrogram(args: argparse.Namespace) -> None:
    audio = _load(args, args.input, stereo=args.stereo)
    params = SpectrogramParams(stereo=args.stereo)
    device = resolve_device(args.device)
    image = spectrogram_image(_tensor(audio, device), params)
    path = save_image(image, args.output)
    print(
        f"Wrote {path}: {image.width} x {image.height} pixels, "
        f"{'stereo' if args.stereo else 'mono'}, {audio.duration_s:.2f} s."
    )


def cmd_invert(args: argparse.Namespace) -> None:
    decoded = amplitudes_from_image(load_image(args.image))
    device = resolve_device(args.device)
    params = decoded.params
    source = None
    if args.phase_from is not None:
        source_audio = load_audio(args.phase_from, sample_rate=params.sample_rate)
        source = _tensor(source_audio.span(args.phase_start), device)
    settings = PhaseSettings(
        mode="source" if source is not None else "random", iterations=args.iterations
    )
    with _progress_bar("Rebuilding audio") as progress:
        waveform = waveform_from_amplitudes(
            decoded.amplitudes.to(device),
            params,
            decoded.num_samples,
            settings,
            source=source,
            progress=progress,
        )
    if decoded.max_value is None:
        # Without the level tag the scale is arbitrary: normalise, as Riffusion does.
        waveform = waveform / waveform.abs().max().clamp_min(1e-9) * 0.99
    _save(args, _limit_peak(waveform), params.sample_rate)


def cmd_roundtrip(args: argparse.Namespace) -> None:
    audio = _load(args, args.input)
    device = resolve_device(args.device)
    settings = PhaseSettings(mode=args.phase, iterations=args.iterations)
    with _progress_bar(f"Round trip ({args.phase} phase)") as progress:
        waveform = roundtrip(
            _tensor(audio, device),
            SpectrogramParams(stereo=audio.channels == 2),
            settings,
            progress,
        )
    _save(args, _limit_peak(waveform), audio.sample_rate)


def _limit_peak(waveform: torch.Tensor) -> torch.Tensor:
    """Scale down (never up) so the file cannot clip."""
    peak = float(waveform.abs().max())
    return waveform * (0.99 / peak) if peak > 0.99 else waveform


def cmd_doctor(args: argparse.Namespace) -> int:
    from neurochip.doctor import run_checks

    ok = True
    for check in run_checks():
        print(check.line())
        ok &= check.ok or not check.essential
    print("All essentials are in place." if ok else "Something essential is missing: see above.")
    return 0 if ok else 1


# --- parser ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurochip",
        description="Turn chiptune and MIDI sketches into live arrangement mockups with "
        "Riffusion: a song's spectrogram is re-imagined by Stable Diffusion and comes back as "
        "a note-for-note cover.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    spectrogram = commands.add_parser(
        "spectrogram",
        help="make the spectrogram image the model sees",
        description="Write the Riffusion spectrogram image (PNG with its settings in EXIF) "
        "of a song or part of it. Each column is 10 ms; 512 columns are 5.12 s.",
        epilog=EPILOG,
    )
    spectrogram.add_argument("input", type=Path, help="audio file (WAV, MP3, FLAC, OGG, ...)")
    spectrogram.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT.png", help="image to write"
    )
    spectrogram.add_argument(
        "--stereo",
        action="store_true",
        help="keep left and right apart (green = left, blue = right); default: mono mix",
    )
    _add_input_options(spectrogram)
    spectrogram.add_argument(
        "--device", choices=DEVICE_CHOICES, default="auto", help="where to compute"
    )
    spectrogram.set_defaults(run=cmd_spectrogram)

    invert = commands.add_parser(
        "invert",
        help="turn a spectrogram image back into audio",
        description="Rebuild audio from a spectrogram image. With --phase-from, the phase of "
        "that audio starts the reconstruction (much cleaner); without, Riffusion's random "
        "phase is used.",
        epilog=EPILOG,
    )
    invert.add_argument("image", type=Path, help="spectrogram image (PNG)")
    _add_output_options(invert)
    invert.add_argument(
        "--phase-from",
        type=Path,
        default=None,
        metavar="AUDIO",
        help="the audio the image was made from (or is aligned with), for its phase",
    )
    invert.add_argument(
        "--phase-start",
        type=_non_negative,
        default=0.0,
        metavar="SEC",
        help="where in --phase-from the image begins (default: 0)",
    )
    _add_phase_options(invert, with_mode=False)
    invert.set_defaults(run=cmd_invert)

    trip = commands.add_parser(
        "roundtrip",
        help="hear what the model hears (audio -> image -> audio)",
        description="Audio -> 8-bit spectrogram image -> audio: exactly what a render at "
        "denoise 0 gives back. The output has the input's length and stays aligned with it.",
        epilog=EPILOG,
    )
    trip.add_argument("input", type=Path, help="audio file")
    _add_output_options(trip)
    _add_input_options(trip)
    _add_phase_options(trip, with_mode=True)
    trip.set_defaults(run=cmd_roundtrip)

    doctor = commands.add_parser(
        "doctor",
        help="check Python, PyTorch, GPU, ffmpeg, chip formats and model weights",
        description="Check what this machine can do, with a fix for anything missing.",
    )
    doctor.set_defaults(run=cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int | None] = args.run
    try:
        return run(args) or 0
    except NeuroChipError as err:
        print(f"neurochip: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurochip: cancelled.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
