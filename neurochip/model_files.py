"""A model's files, checked before and while they load: folders, weights, pickles, parts.

Each part of a model (UNet, VAE, CLIP text encoder and tokenizer, scheduler config) is loaded
and checked on its own, so a model that cannot be used fails with one line naming the part:
its file, what is wrong with it, what to do. A damaged or swapped file, a pickle that would
run code, a tokenizer without its vocabulary, parts that do not fit together are each said as
such; only weights that are not here at all get advice to download them.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from neurochip import untrusted
from neurochip.errors import ModelLoadError, ModelNotFoundError, NeuroChipError
from neurochip.schedulers import DEFAULT_SCHEDULER, scheduler_spec

#: The published Riffusion model on the Hugging Face hub.
DEFAULT_MODEL_ID = "riffusion/riffusion-model-v1"


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: nothing may be downloaded."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def owner_slash_name(text: str) -> bool:
    """``text`` has a hub id's shape, ``owner/name``, rather than a path's (``./x``, ``/x``,
    ``~/x``, ``a/b/c``); whether such a repository exists is the hub's to say."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~"))


def _missing_weights(source: str, reason: str) -> ModelNotFoundError:
    offline = hub_offline()
    # The id asked for, where it is one (someone/model); else the Riffusion model's.
    hub_id = source if "/" in source and not Path(source).expanduser().exists() else None
    return ModelNotFoundError(
        f"The Riffusion model weights could not be loaded from {source!r} ({reason}). "
        f"To get them: run `huggingface-cli download {hub_id or DEFAULT_MODEL_ID}` once on a "
        "machine with internet access (about 4 GB for Riffusion, kept in the Hugging Face cache"
        + (", and HF_HUB_OFFLINE is set here, so nothing is downloaded" if offline else "")
        + "), or use a local folder in diffusers layout or a .safetensors file (--model on "
        "the command line, the Model page in the app)."
    )


#: The parts of a model in diffusers layout (folder name -> what a composer calls it).
PARTS = {
    "unet": "UNet",
    "vae": "VAE",
    "text_encoder": "text encoder",
    "tokenizer": "tokenizer",
    "scheduler": "scheduler",
}
_CONFIG_FILES = {"scheduler": "scheduler_config.json", "tokenizer": "tokenizer_config.json"}
#: Weight names each part's loader looks for, in the order it looks (safetensors first).
_WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin"),
}
#: How each part's weights are named inside its file: enough to tell whose weights a file holds.
_KEY_PREFIXES = {
    "unet": ("conv_in.", "time_embedding.", "down_blocks.", "mid_block.", "up_blocks."),
    "vae": ("encoder.", "decoder.", "quant_conv.", "post_quant_conv."),
    "text_encoder": ("text_model.",),
}
_PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")
_RECOPY = "Copy the model again from where you got it, or choose another model"


def _load_parts(source: str, path: Path, dtype: torch.dtype, local_files_only: bool):
    if path.is_file():
        return _load_single_file(path, dtype)
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise ModelNotFoundError(
                f"{source!r} is not a model folder: it has no model_index.json or unet/. Choose a "
                "folder in diffusers layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/) "
                "or a .safetensors file."
            )
        missing = [name for name in PARTS if not (path / name).is_dir()]
        if missing:
            folders = " or ".join(f"{name}/ folder{_the(name)}" for name in missing)
            raise ModelLoadError(
                f"The model folder {source!r} cannot be used: it has no {folders}. {_RECOPY}."
            )
        _check_folder_files(path, source)
        return _load_diffusers_parts(str(path), dtype, local_files_only=True, folder=path)
    if path.suffix in (".safetensors", ".ckpt") or source.startswith((".", "/", "~")):
        raise _missing_weights(source, "no such file or folder")
    return _load_diffusers_parts(source, dtype, local_files_only)


#: Largest config or tokenizer file of a model folder read: Stable Diffusion's largest are the
#: tokenizer's vocab.json (about 1 MB) and tokenizer.json (about 2 MB); configs are kilobytes.
MAX_CONFIG_BYTES = 16_000_000

#: Most training timesteps a scheduler config may say: Stable Diffusion's is 1000, and
#: building a scheduler allocates tables of this length (1e12 would be 4 TB).
MAX_TRAIN_TIMESTEPS = 100_000

#: The files of a model folder the loaders read as text (besides model_index.json).
_TEXT_FILES = {
    "unet": ("config.json",),
    "vae": ("config.json",),
    "text_encoder": ("config.json",),
    "scheduler": ("scheduler_config.json",),
    "tokenizer": (
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.json",
    ),
}


def _check_folder_files(folder: Path, source: str) -> None:
    """Bound every text file the loaders will read, before they read it: a 4 GB vocab.json
    would fill the memory, one nested 100,000 deep end in ``RecursionError`` inside
    transformers. The scheduler's values are checked too (see :func:`_check_scheduler`)."""
    files = [(folder / "model_index.json", "model_index.json", None)] + [
        (folder / part / name, f"{part}/{name}", part)
        for part, names in _TEXT_FILES.items()
        for name in names
    ]
    for path, relative, part in files:
        if not path.is_file():
            continue
        try:
            text = untrusted.read_text_file(path, relative, MAX_CONFIG_BYTES)
            data = untrusted.load_json_text(text, relative, max_bytes=MAX_CONFIG_BYTES)
        except untrusted.MalformedError:
            continue  # merges.txt; or JSON the loader fails on, which _diagnose_part words
        except untrusted.DataError as err:
            whose = f"its {PARTS[part]} ({relative})" if part else f"its {relative}"
            raise ModelLoadError(
                f"The model folder {source!r} looks damaged: {whose} {err.problem}. {_RECOPY}."
            ) from None
        except OSError:
            continue  # unreadable: the loader fails on it, and _diagnose_part says so
        if part == "scheduler" and isinstance(data, dict):
            _check_scheduler(data, source=source, path=folder)


def _check_scheduler(config: Any, *, source: str, path: Path, build: bool = False) -> None:
    """The scheduler config's values in ranges a scheduler can be built from, and (with
    ``build``) the default scheduler built once: every render builds one, and a value out of
    range would allocate terabytes or fail in the middle of a render."""
    if path.is_dir():
        where, what = f"The model folder {source!r}", "scheduler (scheduler/scheduler_config.json)"
    else:
        kind = "checkpoint" if path.is_file() else "model"
        where, what = f"The {kind} {source!r}", "scheduler config"
    fix = _RECOPY if path.exists() else "Choose a Riffusion or Stable Diffusion 1.x model"
    try:
        values = untrusted.table(config, "")
        steps = untrusted.whole(values, "num_train_timesteps", "", low=1, high=MAX_TRAIN_TIMESTEPS)
        for key in ("beta_start", "beta_end"):
            untrusted.number(values, key, "", low=0.0, high=1.0, default=None)
        untrusted.whole(values, "steps_offset", "", low=0, high=steps, default=0)
        betas = values.get("trained_betas")
        if betas is not None and (
            not isinstance(betas, list)
            or len(betas) != steps
            or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                for b in betas
            )
        ):
            raise untrusted.DataError(
                '"trained_betas"', f"must be {steps} numbers from 0 to 1 (one per timestep)"
            )
    except untrusted.DataError as err:
        raise ModelLoadError(f"{where} looks damaged: in its {what}, {err} {fix}.") from None
    if not build:
        return
    import diffusers

    class_name, options = scheduler_spec(DEFAULT_SCHEDULER)
    try:
        getattr(diffusers, class_name).from_config(dict(values), **options)
    except Exception as err:  # an unknown beta_schedule, say: now rather than mid-render
        raise ModelLoadError(
            f"{where} looks damaged: its {what} cannot be used ({_first_line(err)}). {fix}."
        ) from err


def _the(name: str) -> str:
    """' (the VAE)' after ``vae/``; nothing where the folder already says it (``tokenizer/``)."""
    return "" if PARTS[name] == name else f" (the {PARTS[name]})"


def _load_diffusers_parts(
    source: str, dtype: torch.dtype, local_files_only: bool, folder: Path | None = None
):
    """Each part on its own, so a failure names the part; ``folder`` is set for local folders."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.schedulers import PNDMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    options = {"local_files_only": local_files_only}
    weights = {"torch_dtype": dtype, "output_loading_info": True, **options}
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(source, subfolder="unet", **weights),
        "vae": lambda: AutoencoderKL.from_pretrained(source, subfolder="vae", **weights),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", **weights
        ),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(
            source, subfolder="tokenizer", **options
        ),
        "scheduler": lambda: PNDMScheduler.load_config(source, subfolder="scheduler", **options),
    }
    parts = {}
    for name, load in loaders.items():
        try:
            loaded = load()
        except Exception as err:  # every loader failure becomes one line naming the part
            raise _part_failed(source, folder, name, err, local_files_only) from err
        if name in _WEIGHT_FILES:
            loaded, info = loaded
            _check_all_weights_loaded(source, folder, name, loaded, info)
        parts[name] = loaded
    return tuple(parts[name] for name in PARTS)


def _load_single_file(path: Path, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    where = f"The checkpoint {str(path)!r}"
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ModelLoadError(
            f"{where} cannot be used: NeuroChip reads .safetensors and .ckpt checkpoints or model "
            "folders in diffusers layout. Choose one of those."
        )
    offline = hub_offline()
    try:
        # diffusers reads .ckpt files with torch.load(weights_only=True): tensors only, no code.
        pipeline = StableDiffusionPipeline.from_single_file(
            str(path), torch_dtype=dtype, load_safety_checker=False, local_files_only=offline
        )
    except Exception as err:  # every loader failure becomes one line
        problem = _file_problem(path)
        if problem is not None:
            text, fix = problem
            raise ModelLoadError(f"{where} cannot be used: it {text}. {fix or _RECOPY}.") from err
        if _is_hub_miss(err):
            raise ModelNotFoundError(
                f"{where} needs Stable Diffusion 1.x's config files (a few kilobytes, not the "
                "weights) from the Hugging Face hub to be read, and they are not in the cache"
                + (" (HF_HUB_OFFLINE is set here)" if offline else "")
                + ". Connect to the internet once, or choose a model folder in diffusers layout."
            ) from err
        raise ModelLoadError(
            f"{where} cannot be used: it could not be read as a Stable Diffusion 1.x checkpoint "
            f"({_first_line(err)}). Choose a Riffusion or Stable Diffusion 1.x model."
        ) from err
    return (
        pipeline.unet,
        pipeline.vae,
        pipeline.text_encoder,
        pipeline.tokenizer,
        pipeline.scheduler.config,
    )


def _part_failed(
    source: str, folder: Path | None, name: str, err: Exception, local_files_only: bool
) -> NeuroChipError:
    """The one-line error for a part whose loader raised ``err``."""
    label = PARTS[name]
    if folder is None:
        # A hub id. A file the error names may be a damaged copy in the cache; otherwise the
        # hub client raises OSError subclasses for every flavour of "not here" (offline, not
        # cached, no such repo, gated) and a wrong layout raises ValueError.
        named = [Path(p) for p in re.findall(r"'(/[^']+)'", str(err)) if Path(p).is_file()]
        found = [(f.name, *problem) for f in named if (problem := _file_problem(f))]
        if not found and isinstance(err, (OSError, ValueError)):
            if local_files_only:
                from huggingface_hub.constants import HF_HUB_CACHE

                return _missing_weights(source, f"not in the Hugging Face cache {HF_HUB_CACHE}")
            return _missing_weights(source, _first_line(err))
        where, text, fix = found[0] if found else (None, _problem_from_error(err), None)
        shown = f" ({where})" if where else ""
        fix = fix or (
            f"Download it again with `huggingface-cli download {source} --force-download`, "
            "or choose another model"
        )
        return ModelLoadError(
            f"The model {source!r} cannot be used: its {label}{shown} {text}. {fix}."
        )
    where, text, fix = _diagnose_part(folder, name) or (f"{name}/", _problem_from_error(err), None)
    return ModelLoadError(
        f"The model folder {source!r} cannot be used: its {label} ({where}) {text}. "
        f"{fix or _RECOPY}."
    )


def _problem_from_error(err: Exception) -> str:
    text = str(err)
    if isinstance(err, pickle.UnpicklingError):
        return "is not a plain weights file: loading it could run code, so it was refused"
    if "expected shape" in text or "size mismatch" in text:
        return "has weights that do not fit its config.json (their shapes differ)"
    return f"could not be loaded ({_first_line(err)})"


def _diagnose_part(folder: Path, name: str) -> tuple[str, str, str | None] | None:
    """Which file of one part is wrong, what is wrong and what to do (None: the usual fix).

    Found without running anything in the files.
    """
    part = folder / name
    config = part / _CONFIG_FILES.get(name, "config.json")
    files: list[Path] = []
    if config.is_file():
        files.append(config)
    elif name != "tokenizer":  # a tokenizer can do without its config (not its vocabulary)
        return f"{name}/", f"has no {config.name}", None
    if name == "tokenizer":
        files += [part / f for f in ("vocab.json", "tokenizer.json") if (part / f).is_file()]
    if name in _WEIGHT_FILES:
        expected = _WEIGHT_FILES[name]
        weights = [part / f for f in expected if (part / f).is_file()]
        if not weights:
            return f"{name}/", f"has no weights file ({' or '.join(expected)})", None
        files += weights
    for file in files:
        problem = _file_problem(file)
        if problem:
            return (f"{name}/{file.name}", *problem)
    return None


def _file_problem(path: Path) -> tuple[str, str | None] | None:
    """What is wrong with one file and what to do (None: the usual fix), or None if it is fine.

    Reads headers and opcodes only: nothing in the file is ever run.
    """
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})", None
    if head.startswith(b"version https://git-lfs"):
        return (
            "is a Git LFS pointer, not the weights",
            "Run `git lfs pull` in the model folder to fetch the real files",
        )
    if path.suffix == ".json":
        try:  # bounded: a huge or deeply nested file is a problem, not a crash
            text = untrusted.read_text_file(path, path.name, MAX_CONFIG_BYTES)
            untrusted.load_json_text(text, path.name, max_bytes=MAX_CONFIG_BYTES)
        except untrusted.DataError as err:
            return err.problem, None
        except OSError as err:
            return f"cannot be read ({err.strerror or err})", None
        return None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as weights:
                weights.keys()
        except Exception:
            return "is damaged or incomplete (not a readable .safetensors file)", None
        return None
    if path.suffix in _PICKLE_SUFFIXES:
        return _pickle_problem(path)
    return None


def _pickle_problem(path: Path) -> tuple[str, str | None] | None:
    damaged = "is damaged or incomplete (not a readable weights file)", None
    try:
        torch.load(str(path), map_location="meta", weights_only=True)
    except pickle.UnpicklingError:
        if not _parses_as_pickle(path):
            return damaged
        return (
            "is not a plain weights file: loading it could run code, so it was refused",
            "Replace it with a .safetensors file from a source you trust",
        )
    except Exception:
        return damaged
    return None


def _parses_as_pickle(path: Path) -> bool:
    """Whether the file is a well-formed pickle (a torch zip archive's or a bare one).

    ``pickletools.genops`` only walks the opcodes; nothing is imported, called or built.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                stream: Any = io.BytesIO(archive.read(data))
        else:
            stream = path.open("rb")
        with stream:
            for _ in pickletools.genops(stream):
                pass
    except Exception:
        return False
    return True


def _check_all_weights_loaded(
    source: str, folder: Path | None, name: str, module: Any, info: dict[str, Any]
) -> None:
    """Missing weights leave a part half-built; say whose weights the file held instead."""
    missing = list(info.get("missing_keys") or ())
    if not missing:
        return
    label = PARTS[name]
    unexpected = list(info.get("unexpected_keys") or ())
    owners = {
        other: sum(key.startswith(prefixes) for key in unexpected)
        for other, prefixes in _KEY_PREFIXES.items()
        if other != name
    }
    owner = max(owners, key=owners.__getitem__)
    if unexpected and owners[owner] > len(unexpected) // 2:
        problem = f"holds the {PARTS[owner]}'s weights, not the {label}'s"
        fix = (
            f"Put the {label}'s own weights file in {name}/ (the files of two parts may have "
            "been swapped)"
        )
    else:
        total = len(module.state_dict())
        problem = f"lacks {len(missing)} of the {label}'s {total} weights"
        fix = None
    if folder is None:
        raise ModelLoadError(
            f"The model {source!r} cannot be used: its {label}'s weights file {problem}. Choose "
            "a Riffusion or Stable Diffusion 1.x model."
        )
    loaded = next((f for f in _WEIGHT_FILES[name] if (folder / name / f).is_file()), "")
    raise ModelLoadError(
        f"The model folder {source!r} cannot be used: its {label} ({name}/{loaded}) {problem}. "
        f"{fix or _RECOPY}."
    )


def _check_parts(
    unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, *, source: str, path: Path
) -> None:
    """Fail at load time, naming the part, rather than at render time with a traceback."""
    if path.is_dir():
        where, fix = f"The model folder {source!r}", _RECOPY
    elif path.is_file():
        where, fix = f"The checkpoint {source!r}", _RECOPY
    else:
        where, fix = f"The model {source!r}", "Choose a Riffusion or Stable Diffusion 1.x model"
    in_folder = path.is_dir()

    def unusable(label: str, problem: str) -> ModelLoadError:
        return ModelLoadError(f"{where} cannot be used: its {label} {problem}. {fix}.")

    for module, name in ((unet, "unet"), (vae, "vae"), (text_encoder, "text_encoder")):
        if any(p.is_meta for p in module.parameters()):
            raise unusable(PARTS[name], "is missing some of its weights")
    latents = vae.config.latent_channels
    if unet.config.in_channels != latents:
        raise unusable(
            "VAE",
            f"makes {latents}-channel latents but the UNet takes {unet.config.in_channels} "
            "channels: they come from different models",
        )
    width = text_encoder.config.hidden_size
    if unet.config.cross_attention_dim != width:
        raise unusable(
            "text encoder",
            f"gives {width}-wide prompt embeddings but the UNet attends to "
            f"{unet.config.cross_attention_dim}-wide ones: they come from different models",
        )
    positions = text_encoder.config.max_position_embeddings
    length = tokenizer.model_max_length
    if not isinstance(length, int) or not 0 < length <= positions:
        # transformers' stand-in for "not set" is 1e30, which no tensor can be padded to.
        unset = isinstance(length, int) and length > 10**6
        config = " (tokenizer/tokenizer_config.json)" if in_folder else ""
        raise unusable(
            "tokenizer",
            f"sets no prompt length{config}; the text encoder reads {positions} tokens"
            if unset
            else f"allows {length} tokens per prompt but the text encoder reads at most "
            f"{positions}{config}",
        )
    try:
        ids = _tokenize(tokenizer, "a funk band with a 909 beat").input_ids[0].tolist()
    except Exception as err:  # a tokenizer that cannot tokenize would fail every render
        raise unusable("tokenizer", f"cannot tokenize a prompt ({_first_line(err)})") from err
    if all(i in tokenizer.all_special_ids for i in ids):
        files = " (tokenizer/vocab.json and merges.txt are missing)" if in_folder else ""
        raise unusable("tokenizer", f"has no vocabulary{files}")
    if max(ids) >= text_encoder.config.vocab_size:
        raise unusable(
            "tokenizer",
            f"knows {len(tokenizer)} tokens but the text encoder only "
            f"{text_encoder.config.vocab_size}: they come from different models",
        )


def _tokenize(tokenizer: Any, prompt: str) -> Any:
    """Tokens as Stable Diffusion conditions on them: padded or cut to the tokenizer's length."""
    return tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )


def _is_hub_miss(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is the hub client saying a file is not to be had."""
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    cause: BaseException | None = err
    for _ in range(20):  # a chain, never a loop, but a bound costs nothing
        if cause is None:
            break
        if isinstance(cause, (LocalEntryNotFoundError, HfHubHTTPError, ConnectionError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


@contextmanager
def quiet_loaders() -> Iterator[None]:
    """The loaders log pages of weight names for a broken part (and errors for a .bin-only
    folder that loads fine); NeuroChip's own error says what matters in one line."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = [(m, m.get_verbosity()) for m in (diffusers_logging, transformers_logging)]
    for module, _ in levels:
        module.set_verbosity(module.CRITICAL)
    try:
        yield
    finally:
        for module, level in levels:
            module.set_verbosity(level)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
