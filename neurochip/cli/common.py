"""What the commands share: option groups, the progress bar, loading the input span."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from neurochip import untrusted
from neurochip.device import DEVICE_CHOICES
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.io.decode import DEFAULT_MAX_DURATION_S
from neurochip.io.write import save_audio
from neurochip.library.metadata import check_output_files, sidecar_path
from neurochip.library.store import default_home
from neurochip.model import COMPILE_MODES, DTYPES
from neurochip.model_spec import KIND_DEFAULTS, KINDS, ModelSpec
from neurochip.phase import DEFAULT_ITERATIONS, PHASE_MODES
from neurochip.settings import WINDOW_MODES, RenderSettings, default_of, describe, help_text
from neurochip.sketch import load_sketch
from neurochip.stage_words import stage_words

EPILOG = "Run 'neurochip doctor' to check what this machine can do."


def non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def add_setting(parser, flag: str, settings_class: type, name: str, **options) -> None:
    """An option whose help and default come from the settings dataclass."""
    default = default_of(settings_class, name)
    shown = "" if default in (None, "", False) else f" (default {default})"
    parser.add_argument(
        flag,
        dest=name,
        default=default,
        help=describe(settings_class, name).help + shown,
        **options,
    )


#: What --draft turns on: about a third of the model work (shifted windows ~0.75x, feature
#: reuse every 3 steps, guidance on the first half of the steps). Not yet heard on real
#: weights: for trying ideas fast, not for the finished take.
DRAFT_OPTIONS: dict[str, Any] = {"windows": "shifted", "feature_reuse": 3, "guidance_until": 0.5}

#: The RenderSettings fields :func:`add_engine_options` declares.
ENGINE_FIELDS = ("overlap", "batch_size", "windows", "feature_reuse", "guidance_until")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """How the engine works through the song, for every command that renders."""
    add_setting(parser, "--overlap", RenderSettings, "overlap", type=float)
    add_setting(parser, "--batch-size", RenderSettings, "batch_size", type=int, metavar="N")
    add_setting(parser, "--windows", RenderSettings, "windows", choices=WINDOW_MODES)
    add_setting(parser, "--feature-reuse", RenderSettings, "feature_reuse", type=int, metavar="N")
    add_setting(
        parser, "--guidance-until", RenderSettings, "guidance_until", type=float, metavar="SHARE"
    )
    parser.add_argument(
        "--draft",
        action="store_true",
        help="draft quality, about a third of the model work: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in DRAFT_OPTIONS.items())
        + " (each unless given). Not yet checked by ear on the real model.",
    )


def engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The RenderSettings fields of :func:`add_engine_options`, --draft filling the draft
    options left at their defaults."""
    values = {name: getattr(args, name) for name in ENGINE_FIELDS}
    if args.draft:
        for name, value in DRAFT_OPTIONS.items():
            if values[name] == default_of(RenderSettings, name):
                values[name] = value
    return values


def render_settings(args: argparse.Namespace, **chosen: Any) -> RenderSettings:
    """The RenderSettings every rendering command's options give (prompt, steps, span,
    phase, engine options), with ``chosen`` (the command's own: denoise, seed, ...)."""
    return RenderSettings(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        steps=args.steps,
        scheduler=args.scheduler,
        start_s=args.start,
        duration_s=args.duration,
        phase=args.phase,
        phase_iterations=args.iterations,
        **engine_settings(args),
        **chosen,
    )


#: ACE-Step's knobs and what it is told of the song (:func:`add_ace_step_options`).
ACE_STEP_FIELDS = ("cover_strength", "shift", "bpm", "time_signature", "key")


def add_ace_step_options(parser: argparse.ArgumentParser) -> None:
    """--cover-strength, --shift, --bpm, --beats-per-bar, --key: read by ACE-Step only."""
    group = parser.add_argument_group("ACE-Step (--engine ace-step)")
    add_setting(group, "--cover-strength", RenderSettings, "cover_strength", type=float)
    add_setting(group, "--shift", RenderSettings, "shift", type=float)
    add_setting(group, "--bpm", RenderSettings, "bpm", type=int)
    add_setting(group, "--beats-per-bar", RenderSettings, "time_signature", type=int)
    add_setting(group, "--key", RenderSettings, "key", metavar="KEY")


def ace_step_settings(args: argparse.Namespace, sketch: Any = None) -> dict[str, Any]:
    """The ACE-Step fields ``args`` give; with ACE-Step chosen, the song's tempo, metre and
    key filled in from the sketch where not given (:mod:`neurochip.song_facts`)."""
    values = {
        name: getattr(args, name, default_of(RenderSettings, name)) for name in ACE_STEP_FIELDS
    }
    if getattr(args, "engine", KINDS[0]) == "ace-step" and sketch is not None:
        from neurochip.song_facts import facts_of

        facts = facts_of(sketch)
        values["bpm"] = values["bpm"] or facts.bpm
        values["time_signature"] = values["time_signature"] or facts.beats_per_bar
        values["key"] = values["key"] or facts.key or ""
    return values


def default_steps(args: argparse.Namespace) -> None:
    """--steps left out: the engine's own default (ACE-Step's turbo models: 8)."""
    if getattr(args, "steps", 0) is None:
        kind = getattr(args, "engine", KINDS[0])
        args.steps = KIND_DEFAULTS[kind].get("steps", default_of(RenderSettings, "steps"))


def add_home_option(parser: argparse.ArgumentParser) -> None:
    """--home: where a server (the app, the API) keeps its takes."""
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        metavar="DIR",
        help="where takes are kept (default ~/.neurochip, or NEUROCHIP_HOME)",
    )


def add_library_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-library",
        action="store_true",
        help="do not keep the takes in the take library (~/.neurochip, or NEUROCHIP_HOME)",
    )


def _model_help(name: str) -> str:
    """A ModelSpec field's help, written once in :mod:`neurochip.model_spec`."""
    return describe(ModelSpec, name).help


def add_model_options(parser: argparse.ArgumentParser, per_engine: bool = False) -> None:
    """--model, --dtype, --lora, ...: the ModelSpec fields, as every command that renders
    takes them (--device comes with :func:`add_device_option`).

    ``per_engine``: the command renders with several engines (``--engines``), so --model may
    be given once per engine as ``KIND=SOURCE`` (:func:`engine_specs`)."""
    parser.add_argument(
        "--engine", choices=KINDS, default=KINDS[0], dest="engine", help=_model_help("kind")
    )
    if per_engine:
        parser.add_argument(
            "--model",
            action="append",
            default=None,
            metavar="[KIND=]ID|DIR|FILE",
            help=_model_help("source") + " (default: the engine's). With --engines, once per "
            "engine whose model is not its default: --model stable-audio-3=DIR",
        )
    else:
        parser.add_argument(
            "--model",
            default=None,
            metavar="ID|DIR|FILE",
            help=_model_help("source") + " (default: the engine's)",
        )
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="auto", help=_model_help("dtype"))
    parser.add_argument("--lora", default=None, metavar="FILE|DIR|ID", help=_model_help("lora"))
    parser.add_argument(
        "--lora-scale",
        type=float,
        default=default_of(ModelSpec, "lora_scale"),
        metavar="S",
        help=_model_help("lora_scale"),
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help=_model_help("compile").removesuffix(" Empty: off.")
        + " --compile alone: mode default.",
    )
    parser.add_argument("--channels-last", action="store_true", help=_model_help("channels_last"))


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The :class:`ModelSpec` the model options of ``args`` say (:func:`add_model_options`,
    :func:`add_device_option`); checked when loaded (:func:`load_spec`)."""
    model = args.model[-1] if isinstance(args.model, list) else args.model
    return ModelSpec.for_kind(
        getattr(args, "engine", KINDS[0]),
        **({"source": model} if model else {}),
        device=getattr(args, "device", "auto"),
        dtype=args.dtype,
        lora=args.lora or "",
        lora_scale=args.lora_scale,
        compile=args.compile or "",
        channels_last=args.channels_last,
        preview_vae=getattr(args, "preview_vae", None) or "",
    )


def engine_specs(args: argparse.Namespace, kinds: list[str]) -> list[ModelSpec]:
    """One :class:`ModelSpec` per engine of ``kinds`` (``--engines``): each one's default
    source unless ``--model KIND=SOURCE`` names one; the device and number format shared;
    Riffusion's own options (--lora, --compile, ...) for Riffusion alone."""
    sources: dict[str, str] = {}
    for given in args.model or []:
        kind, _, source = given.partition("=")
        if kind not in KINDS or not source:
            raise NeuroChipError(
                f"With --engines, say whose model --model {given!r} is: --model KIND=SOURCE, "
                f"KIND one of {', '.join(KINDS)} (e.g. --model stable-audio-3=DIR)."
            )
        if kind not in kinds:
            raise NeuroChipError(
                f"--model {given!r} is for {kind}, which --engines does not compare: add it "
                "there, or leave this --model out."
            )
        sources[kind] = source
    riffusion = model_spec(
        argparse.Namespace(**{**vars(args), "engine": "riffusion", "model": None})
    )
    specs = []
    for kind in kinds:
        if kind == "riffusion":
            spec = riffusion
        else:
            spec = ModelSpec.for_kind(kind, device=riffusion.device, dtype=riffusion.dtype)
        specs.append(dataclasses.replace(spec, source=sources.get(kind, spec.source)))
    return specs


def load_spec(spec: ModelSpec):
    """The engine ``spec`` asks for, with progress lines on stderr.

    What can be found wrong without the model (a LoRA's path, a pickle file, its strength) is
    said before the slow load; a compiled model compiles here, on one window, not mid-render.
    """
    spec.check()
    from neurochip.engine import Engine

    print(f"Loading model {spec.describe()} ...", file=sys.stderr)
    engine = Engine.from_pretrained(spec)
    if spec.compile:
        print("Compiling the model (once per run; a minute or more) ...", file=sys.stderr)
        engine.calibrate()  # the compile happens here, on one window, not mid-render
    return engine


def add_input_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--start",
        type=non_negative,
        default=0.0,
        metavar="SEC",
        help="where in the song to begin, in seconds (default: the beginning)",
    )
    parser.add_argument(
        "--duration",
        type=positive,
        default=None,
        metavar="SEC",
        help="how many seconds to use from --start (default: to the end of the song)",
    )
    add_max_duration(parser, "inputs")


def add_max_duration(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--max-duration",
        type=positive,
        default=DEFAULT_MAX_DURATION_S,
        metavar="SEC",
        help=f"refuse {what} longer than this, to protect against a wrong file "
        f"(default: {DEFAULT_MAX_DURATION_S / 60:.0f} minutes)",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
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
    add_overwrite_option(parser)


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (files NeuroChip wrote, as their own "
        "metadata says, are replaced without it; your inputs and the take library's files "
        "never are)",
    )


def check_outputs(
    args: argparse.Namespace,
    outputs: Iterable[Path],
    inputs: Iterable[Path | None],
    *,
    sidecars: bool = False,
    elsewhere: str = "choose another output name (-o)",
) -> None:
    """Refuse, before any work, to write what the one rule forbids (see
    :func:`neurochip.library.metadata.check_output_files`): an input (even with
    --overwrite), a file in the take library, a file NeuroChip did not write (unless
    --overwrite), or into a folder that cannot be written.

    ``sidecars``: the command writes takes, each with a ``.json`` beside it, which obeys the
    same rule.
    """
    outputs = [Path(o) for o in outputs]
    inputs = list(inputs)
    untrusted.check_file_names([*outputs, *inputs])  # a NUL: one clear line, not ValueError
    if sidecars:
        outputs += [sidecar_path(o) for o in outputs if o.suffix.lower() != ".json"]
    check_output_files(
        outputs,
        inputs,
        home=getattr(args, "home", None) or default_home(),
        overwrite=args.overwrite,
        elsewhere=elsewhere,
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default=default_of(ModelSpec, "device"),
        help=_model_help("device"),
    )


def add_phase_options(
    parser: argparse.ArgumentParser, with_mode: bool, source_iterations: int | None = None
) -> None:
    if with_mode:
        parser.add_argument(
            "--phase",
            choices=PHASE_MODES,
            default="source",
            help=help_text(RenderSettings, "phase") + " (default: source)",
        )
    source = DEFAULT_ITERATIONS["source"] if source_iterations is None else source_iterations
    parser.add_argument(
        "--iterations",
        type=count,
        default=None,
        metavar="N",
        help="Griffin-Lim iterations: more makes the sound match the spectrogram more closely "
        f"but takes longer (default: {source} from source phase, "
        f"{DEFAULT_ITERATIONS['random']} from random phase)",
    )
    add_device_option(parser)


@contextmanager
def progress_bar(description: str):
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
                bar.set_description_str(f"{description}: {stage_words(stage)}", refresh=False)
            bar.update(round(fraction * 1000) - bar.n)

        yield update


def load_span(args: argparse.Namespace, path: Path) -> Audio:
    """The input's span (--start, --duration): audio, chip music or a MIDI sketch."""
    sketch = load_sketch(path, max_duration_s=args.max_duration)
    return sketch.audio.span(args.start, args.duration)


def write_audio(args: argparse.Namespace, audio: Audio) -> None:
    path = save_audio(args.output, audio, bit_depth=args.bit_depth)
    print(f"Wrote {path} ({audio.duration_s:.2f} s, {audio.channels} channel(s)).")
