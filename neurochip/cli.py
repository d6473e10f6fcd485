"""The ``neurochip`` command line.

Each sub-command is a thin layer over the library: parse options, call one or two library
functions, show progress, write the file. Every problem a user can cause ends as a one-line
message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm import tqdm

from neurochip.audio import DEFAULT_MAX_DURATION_S, Audio, limit_peak, load_audio, save_audio
from neurochip.device import DEVICE_CHOICES, resolve_device
from neurochip.errors import NeuroChipError
from neurochip.model import DEFAULT_MODEL_ID as DEFAULT_MODEL
from neurochip.model import SCHEDULERS
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
SCHEDULER_NAMES = tuple(SCHEDULERS)


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
    """A tqdm bar driven by a library progress callback.

    The callback takes the fraction done (0 to 1) and, from the engine, the current stage
    (encode, denoise step k of n, ...), which then follows the description.
    """
    with tqdm(
        total=1000,
        desc=description,
        leave=False,
        disable=None,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
    ) as bar:

        def update(fraction: float, stage: str | None = None) -> None:
            if stage is not None:
                bar.set_description_str(f"{description}: {stage}", refresh=False)
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
    _save(args, limit_peak(waveform), params.sample_rate)


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
    _save(args, limit_peak(waveform), audio.sample_rate)


def _output_variant(path: Path, suffix: str) -> Path:
    return path.with_name(f"{path.stem}-{suffix}{path.suffix}")


def cmd_render(args: argparse.Namespace) -> None:
    from neurochip.engine import Engine, RenderSettings, take_b_settings
    from neurochip.mix import crossfade_compare, stereo_pair
    from neurochip.model import load_model
    from neurochip.takes import save_take, take_metadata

    # Every setting is checked before the (slow) model load.
    settings = RenderSettings(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        denoise=args.denoise,
        guidance=args.guidance,
        steps=args.steps,
        seed=args.seed,
        scheduler=args.scheduler,
        start_s=args.start,
        duration_s=args.duration,
        overlap=args.overlap,
        phase=args.phase,
        phase_iterations=args.iterations,
        batch_size=args.batch_size,
    )
    settings_b = take_b_settings(
        settings, **({"seed": args.seed_b} if args.seed_b is not None else {})
    )
    if not 0 <= args.width <= 1:
        raise NeuroChipError(f"--width must be between 0 and 1, not {args.width}.")
    _output_kind(args.output)
    song = load_audio(args.input, max_duration_s=args.max_duration)
    span = song.span(settings.start_s, settings.duration_s)  # checks the span before loading
    print(f"Loading model {args.model} ...", file=sys.stderr)
    engine = Engine(load_model(args.model, device=args.device, dtype=args.dtype))
    print(f"Model: {engine.model.describe()}", file=sys.stderr)

    takes = {"A": settings} | ({"B": settings_b} if args.stereo_pair else {})
    renders = {}
    for name, take_settings in takes.items():
        label = f"take {name}" if args.stereo_pair else "render"
        with _progress_bar(label) as update:
            renders[name] = engine.render(song, take_settings, progress=update)

    source_name = args.input.name
    info = renders["A"].info
    written = []
    if args.stereo_pair:
        mix = stereo_pair(renders["A"].audio, renders["B"].audio, args.width)
        meta = take_metadata("stereo pair", takes, source_name, info, width=args.width)
        written.append(save_take(args.output, mix, meta, args.bit_depth))
        for name in ("A", "B"):
            meta = take_metadata("take", {name: takes[name]}, source_name, info)
            path = _output_variant(args.output, name)
            written.append(save_take(path, renders[name].audio, meta, args.bit_depth))
        result = mix
    else:
        meta = take_metadata("take", takes, source_name, info)
        written.append(save_take(args.output, renders["A"].audio, meta, args.bit_depth))
        result = renders["A"].audio
    if args.crossfade_compare:
        original = span.to_stereo() if result.channels == 2 else span.to_mono()
        fade_at = args.crossfade_at if args.crossfade_at is not None else span.duration_s / 3
        compare = crossfade_compare(
            original, result, fade_at, args.crossfade_length, args.crossfade_back
        )
        meta = take_metadata(
            "crossfade comparison",
            takes,
            source_name,
            info,
            fade_at_s=fade_at,
            fade_s=args.crossfade_length,
            back_at_s=args.crossfade_back,
        )
        written.append(
            save_take(_output_variant(args.output, "compare"), compare, meta, args.bit_depth)
        )
    for path in written:
        print(f"Wrote {path}")


def _output_kind(path: Path) -> None:
    if path.suffix.lower() not in (".wav", ".flac", ".ogg", ".mp3"):
        raise NeuroChipError(
            f"Write renders as .wav, .flac, .ogg or .mp3, not {path.suffix or 'no extension'}."
        )


def _voice_override(text: str) -> tuple[str, str]:
    track, sep, voice = text.partition("=")
    if not sep or not track or not voice:
        raise argparse.ArgumentTypeError(f"use TRACK=VOICE (e.g. 2=triangle), not {text!r}")
    return track.strip(), voice.strip()


def cmd_synth(args: argparse.Namespace) -> None:
    from neurochip.midi import read_midi, render_midi, render_soundfont

    song = read_midi(args.midi, max_seconds=args.max_duration)
    if args.soundfont is not None:
        if args.voice:
            raise NeuroChipError("--voice picks chip voices; it does not apply to --soundfont.")
        soundfont = None if args.soundfont == "default" else args.soundfont
        audio = render_soundfont(args.midi, soundfont)
        how = "the SoundFont"
    else:
        voices = dict(args.voice or [])
        with _progress_bar("Synthesising") as progress:
            audio = render_midi(song, voices=voices, progress=progress)
        how = "the chip synth"
        print("Voices:")
        for track in song.tracks:
            voice = voices.get(track.key, track.voice)
            notes = f"{track.notes:>5} notes"
            print(f"  {track.key:>5}  ch {track.channel:<2}  {notes}  {voice:<9} {track.name}")
    path = save_audio(args.output, audio, bit_depth=args.bit_depth)
    print(f"Wrote {path} ({audio.duration_s:.2f} s, rendered with {how}).")


def cmd_app(args: argparse.Namespace) -> None:
    root = Path(__file__).resolve().parents[1]
    script = root / "app" / "main.py"
    if not script.is_file():
        raise NeuroChipError(
            "The app is not part of this installation: run it from the NeuroChip source folder "
            "(make run)."
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"neurochip: serving on {args.host}: anyone who can reach this machine can use "
            "the app and its takes.",
            file=sys.stderr,
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    if args.model:
        env["NEUROCHIP_MODEL"] = args.model
    if args.home:
        env["NEUROCHIP_HOME"] = str(args.home)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        args.host,
        "--server.port",
        str(args.port),
        "--server.maxUploadSize",
        str(args.max_upload_mb),
    ]
    print(
        f"NeuroChip is starting: open http://{args.host}:{args.port} in your browser.", flush=True
    )
    # Streamlit replaces this process (so Ctrl-C and kill reach the server itself), started
    # from the repository root so that it reads .streamlit/config.toml (XSRF, limits).
    os.chdir(root)
    os.execve(sys.executable, command, env)


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

    render = commands.add_parser(
        "render",
        help="render a song as a live cover with Riffusion",
        description="Render a song (or a span of it) through Riffusion img2img as one piece: "
        "the output has exactly the input's length and stays aligned with it. Each output "
        "file carries its settings, so any take can be reproduced.",
        epilog=EPILOG,
    )
    render.add_argument(
        "input", type=Path, help="your sketch: WAV, MP3, FLAC, OGG, tracker file..."
    )
    _add_output_options(render)
    render.add_argument(
        "--prompt",
        required=True,
        help="what the cover should sound like, e.g. 'a funk band with slap bass'",
    )
    render.add_argument(
        "--negative-prompt",
        default="",
        metavar="TEXT",
        help="what to steer away from, e.g. 'distorted, noisy'",
    )
    render.add_argument(
        "--denoise",
        type=float,
        default=0.35,
        help="how much of the sketch is reimagined, 0-1: below 0.15 little changes, 0.2-0.4 is "
        "a note-for-note cover with new instruments, above 0.5 the notes drift (default 0.35)",
    )
    render.add_argument(
        "--guidance",
        type=float,
        default=7.0,
        help="how strongly the prompt is followed: 2-3 lively but inconsistent, 7-8 the usual "
        "middle, above 12 harsh and squealing (default 7)",
    )
    render.add_argument(
        "--steps",
        type=int,
        default=50,
        help="denoising steps at denoise 1 (a render runs denoise x steps): more is sharper and "
        "slower, with diminishing returns past 50 (default 50)",
    )
    render.add_argument(
        "--seed",
        type=int,
        default=42,
        help="the noise pattern the take grows from: same seed and settings, same take "
        "(default 42)",
    )
    render.add_argument(
        "--scheduler",
        default="dpm++",
        metavar="NAME",
        help="the sampling algorithm: " + ", ".join(SCHEDULER_NAMES) + " (default dpm++)",
    )
    render.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="ID|DIR|FILE",
        help="Hugging Face id, local diffusers folder, or .safetensors file "
        f"(default {DEFAULT_MODEL})",
    )
    render.add_argument(
        "--dtype",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
        help="number format: auto is fp16 on CUDA GPUs and fp32 elsewhere",
    )
    _add_input_options(render)
    render.add_argument(
        "--overlap",
        type=float,
        default=0.25,
        help="how much neighbouring 5 s model windows share, 0-0.75: more overlap blends more "
        "smoothly and costs more time (default 0.25)",
    )
    render.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="model inputs per GPU call (default: as many as free memory allows)",
    )
    render.add_argument(
        "--stereo-pair",
        action="store_true",
        help="render two takes (B with seed + 1) and pan them left and right; also writes "
        "OUT-A and OUT-B",
    )
    render.add_argument(
        "--seed-b",
        type=int,
        default=None,
        metavar="SEED",
        help="seed of take B in a stereo pair (default: --seed + 1)",
    )
    render.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="stereo width of the pair, 0-1: 0 = both takes centred, 1 = hard left/right",
    )
    render.add_argument(
        "--crossfade-compare",
        action="store_true",
        help="also write OUT-compare: your sketch crossfading into the render, level-matched",
    )
    render.add_argument(
        "--crossfade-at",
        type=_non_negative,
        default=None,
        metavar="SEC",
        help="when the comparison fades into the render (default: a third of the way in)",
    )
    render.add_argument(
        "--crossfade-length",
        type=_positive,
        default=2.0,
        metavar="SEC",
        help="length of each comparison fade (default 2 s)",
    )
    render.add_argument(
        "--crossfade-back",
        type=_non_negative,
        default=None,
        metavar="SEC",
        help="when the comparison fades back to the sketch (default: it stays on the render)",
    )
    _add_phase_options(render, with_mode=True)
    render.set_defaults(run=cmd_render)

    synth = commands.add_parser(
        "synth",
        help="render a MIDI sketch with the built-in chip synth (or a SoundFont)",
        description="Render a Standard MIDI File as chip music: pulse, triangle and noise "
        "voices that follow pitch bend, mod-wheel vibrato, volume and expression swells, "
        "sustain and pan. Every command that takes audio also takes .mid files directly.",
        epilog=EPILOG,
    )
    synth.add_argument("midi", type=Path, help="the MIDI file (.mid)")
    _add_output_options(synth)
    synth.add_argument(
        "--voice",
        action="append",
        type=_voice_override,
        metavar="TRACK=VOICE",
        help="give a track another voice, e.g. --voice 2=triangle (voices: pulse12, pulse25, "
        "pulse50, triangle, saw, noise); repeatable. The tracks are listed after rendering.",
    )
    synth.add_argument(
        "--soundfont",
        nargs="?",
        const="default",
        default=None,
        metavar="FILE.sf2",
        help="render with FluidSynth and this SoundFont instead (no file: the General MIDI "
        "SoundFont installed on this system)",
    )
    synth.add_argument(
        "--max-duration",
        type=_positive,
        default=DEFAULT_MAX_DURATION_S,
        metavar="SEC",
        help="refuse songs longer than this (default: 20 minutes)",
    )
    synth.set_defaults(run=cmd_synth)

    app = commands.add_parser(
        "app",
        help="start the NeuroChip app in your browser",
        description="Start the Streamlit app (Arrange, Takes, Model & device) on this machine.",
        epilog=EPILOG,
    )
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    app.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    app.add_argument(
        "--max-upload-mb",
        type=int,
        default=int(os.environ.get("NEUROCHIP_MAX_UPLOAD_MB", 200)),
        help="largest upload accepted, in MB (default 200)",
    )
    app.add_argument("--model", default=None, metavar="ID|DIR|FILE", help="model to load")
    app.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="where takes are kept (default ~/.neurochip, or NEUROCHIP_HOME)",
    )
    app.set_defaults(run=cmd_app)

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
