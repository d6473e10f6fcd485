"""Names made from what a composer typed: display titles and download file names.

Text a user typed or uploaded (file names, prompts, take names) becomes a title or a file name
here and nowhere else, and never a path on this machine.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from neurochip.library.metadata import faithfulness_score, notes_kept_score
from neurochip.settings import RenderSettings

MAX_NAME_CHARS = 200
MAX_FILENAME_CHARS = 120

_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(1, 10)),
    *(f"LPT{i}" for i in range(1, 10)),
}
_LEADING_ARTICLE = re.compile(r"^(a|an|the)-(?=.)")


# --- names ---------------------------------------------------------------------------------------


def take_filename(
    source_name: str | None,
    settings: RenderSettings | None,
    kind: str,
    suffix: str,
    seeds: Sequence[int] = (),
    engine: str = "",
) -> str:
    """A download name made from the song and the settings, safe on every OS.

    E.g. ``minuet_funk-band-with-slap-bass_d0.35_g7_seed42.wav`` for a take of ``minuet.nsf``
    with the prompt "a funk band with slap bass". ``seeds``: every take's seed, for a file
    made of several (``minuet_stereo-pair_..._seeds42-43.flac``); else ``settings``' seed.
    Only ``A-Z a-z 0-9 . _ -`` appear, and the name starts with a letter or digit; accents are
    dropped (``é`` -> ``e``) and other scripts left out. A take of another engine than
    Riffusion (``engine``) says it (``minuet_stable-audio-3_funk-band..._d0.5_seed42.wav``),
    and only the knobs it reads. It is at most
    :data:`MAX_FILENAME_CHARS` long, never empty, never a Windows device name (``nul.wav``),
    and the same arguments always give the same name. The song's folders and extension are
    dropped; a leading "a", "an" or "the" of the prompt too.
    """
    ext = _clean_suffix(suffix)
    parts = [_clip_slug(_slug(_file_stem(source_name or "")), 40)]
    if engine and engine != "riffusion":
        parts.append(_clip_slug(_slug(engine).lower(), 24))
    if kind and kind != "take":
        parts.append(_clip_slug(_slug(kind).lower(), 24))
    prompt = ""
    tail: list[str] = []
    if settings is not None:
        prompt = _LEADING_ARTICLE.sub("", _slug(settings.prompt).lower(), count=1)
        several = list(dict.fromkeys(int(seed) for seed in seeds))  # each once, in order
        seed = f"seeds{'-'.join(map(str, several))}" if len(several) > 1 else f"seed{settings.seed}"
        read = _knobs_read(engine)
        tail = [f"d{settings.denoise:g}", f"g{settings.guidance:g}"]
        tail = [t for t, knob in zip(tail, ("denoise", "guidance"), strict=True) if knob in read]
        tail.append(seed)
    # The prompt gets whatever room the fixed parts leave.
    fixed = "_".join(p for p in (*parts, *tail) if p)
    room = min(48, MAX_FILENAME_CHARS - len(ext) - len(fixed) - 1)
    parts.append(_clip_slug(prompt, room))
    stem = "_".join(p for p in (*parts, *tail) if p)
    stem = stem[: MAX_FILENAME_CHARS - len(ext)].strip("._-") or "neurochip-take"
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem += "-take"
    return stem + ext


def _knobs_read(engine: object) -> set[str]:
    """Of the knobs labels and file names show, those ``engine`` reads (all for Riffusion, or
    where the engine is not known)."""
    shown = {"denoise", "guidance"}
    if not isinstance(engine, str) or engine in ("", "riffusion"):
        return shown
    from neurochip.kinds import KIND_KNOBS

    return shown & set(KIND_KNOBS.get(engine) or shown)


def numbered_apart(names: Sequence[str]) -> list[str]:
    """Names made distinct for files side by side, ignoring case as macOS and Windows do: in
    order, a name taken already gets the first free "-2", "-3"... ("Bass", "bass", "Bass"
    -> "Bass", "bass-2", "Bass-3"), so the same names always give the same files."""
    taken: set[str] = set()
    made = []
    for name in names:
        candidate, n = name, 2
        while candidate.casefold() in taken:
            candidate, n = f"{name}-{n}", n + 1
        taken.add(candidate.casefold())
        made.append(candidate)
    return made


def _slug(text: str) -> str:
    """ASCII letters and digits joined by single hyphens ("Für Elise!" -> "Fur-Elise")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^A-Za-z0-9]+", "-", ascii_text).strip("-")


def _clip_slug(slug: str, limit: int) -> str:
    """``slug`` cut to ``limit`` characters, at a word boundary where there is one."""
    if limit <= 0:
        return ""
    if len(slug) <= limit:
        return slug
    cut = slug[:limit]
    if slug[limit] != "-" and "-" in cut:
        cut = cut.rsplit("-", 1)[0]
    return cut.strip("-")


def _clean_suffix(suffix: str) -> str:
    letters = re.sub(r"[^a-z0-9]", "", suffix.lower())[:8]
    return f".{letters}" if letters else ""


def _file_stem(file_name: str) -> str:
    """A file name without folders (either kind of slash) or extension, for display."""
    base = re.split(r"[\\/]", file_name.strip())[-1] or file_name.strip()
    stem = os.path.splitext(base)[0]
    return stem or base


def clean_name(text: str) -> str:
    """A display title on one line, without control characters, at most MAX_NAME_CHARS."""
    text = " ".join(text.split())  # newlines and tabs become spaces first
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    if len(text) > MAX_NAME_CHARS:
        text = text[: MAX_NAME_CHARS - 1].rstrip() + "…"
    return text


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def default_take_name(metadata: Mapping[str, Any]) -> str:
    """A title for a take nobody named: "sketch — a funk band with slap bass (seed 42)", the
    engine named where it is not Riffusion ("(seed 42, Stable Audio 3)")."""
    source = metadata.get("source")
    song = _file_stem(source) if isinstance(source, str) and source.strip() else "untitled"
    takes = metadata.get("takes")
    held = takes.values() if isinstance(takes, Mapping) else ()  # damaged: no settings
    settings = [s for s in held if isinstance(s, Mapping)]
    prompts: list[str] = []
    for s in settings:
        prompt = _shorten(str(s.get("prompt") or "no prompt"), 60)
        if prompt not in prompts:
            prompts.append(prompt)
    what = " / ".join(prompts) or "no settings"
    kind = str(metadata.get("kind") or "take")
    stem = metadata.get("stem")
    if kind == "stem" and isinstance(stem, Mapping):
        # A stem's prompt is its instrument and then the song's: the instrument tells it apart.
        what = f"stem {stem.get('name', '?')}: {_shorten(str(stem.get('prompt', '')), 40)}"
    elif kind == "stem mix":
        what = f"stem mix ({stem_mix_text(metadata)})"
    elif kind != "take":
        what = f"{kind}: {what}"
    seeds = list(dict.fromkeys(str(s["seed"]) for s in settings if "seed" in s))
    made_by = [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)}"] if seeds else []
    engine = metadata.get("engine")
    if isinstance(engine, str) and engine != "riffusion":  # Riffusion, the default, unsaid
        from neurochip.kinds import KIND_NAMES

        made_by.append(KIND_NAMES.get(engine, engine))
    if made_by:
        what += f" ({', '.join(made_by)})"
    return clean_name(f"{song} — {what}")


# --- labels: what tells takes apart ---------------------------------------------------------------

MAX_NOTE_CHARS = 2000

# The settings a label shows, in order: (metadata key, how it reads).
_LABELLED = (
    ("seed", "seed {}"),
    ("denoise", "denoise {}"),
    ("guidance", "guidance {}"),
    ("steps", "{} steps"),
)


def take_label(metadata: Mapping[str, Any], faithfulness: bool = True) -> str:
    """What tells a take from its neighbours: "seed 42 · denoise 0.35 · guidance 7 · 50 steps",
    after the engine's name where it is not Riffusion ("Stable Audio 3 · seed 42 ...").

    Followed by " · notes kept 86% · chroma 0.93" where the take's notes were counted, else
    " · faithfulness 0.93" where only the chroma meter measured it (and ``faithfulness``). A
    stereo pair whose takes differ only in seed reads "seeds 42, 43 · denoise ..."; takes that
    differ in more are labelled each, "A: ... | B: ...". The one place a take's label is made:
    the app's lists and grids show this.
    """
    takes = metadata.get("takes") if isinstance(metadata, Mapping) else None
    held = (
        {str(k): v for k, v in takes.items() if isinstance(v, Mapping)}
        if isinstance(takes, Mapping)
        else {}
    )
    engine = metadata.get("engine") if isinstance(metadata, Mapping) else None
    unread = {"denoise", "guidance"} - _knobs_read(engine)  # what this engine did not read
    if unread:
        held = {k: {key: v for key, v in s.items() if key not in unread} for k, s in held.items()}
    settings = [held[k] for k in sorted(held)]  # "A" before "B"
    if metadata.get("kind") == "stem mix":
        # Its stems share seed and steps; what tells mixes apart is their faders.
        first = settings[0] if settings else {}
        parts = [p for p in _settings_parts(first) if not p.startswith(("denoise", "guidance"))]
        text = " · ".join([*parts, f"{len(held)} stems: {stem_mix_text(metadata)}"])
    elif len(settings) <= 1:
        text = " · ".join(_settings_parts(settings[0] if settings else {}))
    elif all(_without_seed(s) == _without_seed(settings[0]) for s in settings):
        seeds = ", ".join(_number(s["seed"]) for s in settings if "seed" in s)
        parts = _settings_parts(settings[0], seed=False)
        text = " · ".join([f"seeds {seeds}", *parts] if seeds else parts)
    else:
        text = " | ".join(f"{k}: {' · '.join(_settings_parts(held[k]))}" for k in sorted(held))
    text = text or "no settings"
    if isinstance(engine, str) and engine != "riffusion":  # Riffusion, the default, unsaid
        from neurochip.kinds import KIND_NAMES

        text = f"{KIND_NAMES.get(engine, engine)} · {text}"
    lineage = reroll_text(metadata)
    if lineage:
        text += f" · {lineage}"
    if any(isinstance(s, Mapping) and s.get("loop") is True for s in held.values()):
        text += " · seamless loop"
    if not faithfulness:
        return text
    score, kept = faithfulness_score(metadata), notes_kept_score(metadata)
    if kept is not None:
        text += f" · {notes_kept_text(kept)}"
        if score is not None:
            text += f" · chroma {faithfulness_text(score)}"
    elif score is not None:
        text += f" · faithfulness {faithfulness_text(score)}"
    return text


def stem_mix_text(metadata: Mapping[str, Any]) -> str:
    """What a mix of stems made of them: "Lead, Bass, Drums" at 0 dB, or the faders that
    differ, "solo Bass · mute Lead · Drums -3 dB"."""
    stems = metadata.get("stems")
    entries = [e for e in stems if isinstance(e, Mapping)] if isinstance(stems, list) else []
    said = []
    for entry in entries:
        name, mix = str(entry.get("name", "?")), entry.get("mix")
        mix = mix if isinstance(mix, Mapping) else {}
        if mix.get("solo"):
            said.append(f"solo {name}")
        if mix.get("mute"):
            said.append(f"mute {name}")
        gain, pan = mix.get("gain_db", 0.0), mix.get("pan", 0.0)
        if _plausible(gain, 1000) and gain:
            said.append(f"{name} {gain:+g} dB")
        if _plausible(pan, 1) and pan:
            said.append(f"{name} {'L' if pan < 0 else 'R'} {abs(pan):g}")
    return " · ".join(said) or ", ".join(str(e.get("name", "?")) for e in entries)


def _plausible(value: object, limit: float) -> bool:
    """A number a label can show (a damaged file's 1e400 or NaN is left out)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= limit


def reroll_text(metadata: Mapping[str, Any]) -> str:
    """ "re-rolled bars 9–12" (or "re-rolled 12.5–20.0 s" of the song) for a take made by
    re-rolling part of another (see :mod:`neurochip.reroll`); "" for any other."""
    lineage = metadata.get("reroll") if isinstance(metadata, Mapping) else None
    if not isinstance(lineage, Mapping):
        return ""
    bars = lineage.get("bars")
    if isinstance(bars, list) and len(bars) == 2 and all(isinstance(b, int) for b in bars):
        return (
            f"re-rolled bar {bars[0]}"
            if bars[0] == bars[1]
            else f"re-rolled bars {bars[0]}–{bars[1]}"
        )
    region = lineage.get("region_s")
    if not (isinstance(region, list) and len(region) == 2):
        return "re-rolled"
    takes = metadata.get("takes")
    first = next(iter(takes.values()), {}) if isinstance(takes, Mapping) and takes else {}
    start = first.get("start_s", 0.0) if isinstance(first, Mapping) else 0.0
    start = start if isinstance(start, (int, float)) else 0.0
    try:
        return f"re-rolled {start + float(region[0]):.1f}–{start + float(region[1]):.1f} s"
    except (TypeError, ValueError, OverflowError):
        return "re-rolled"


def _settings_parts(settings: Mapping[str, Any], seed: bool = True) -> list[str]:
    parts = [
        form.format(_number(settings[key]))
        for key, form in _LABELLED
        if key in settings and (seed or key != "seed")
    ]
    # Draft options (less model work, not yet heard on real weights) mark the take as such.
    draft = (
        settings.get("windows", "overlap") != "overlap"
        or settings.get("feature_reuse", 1) != 1
        or settings.get("guidance_until", 1.0) != 1.0
    )
    return [*parts, "draft"] if draft else parts


def _without_seed(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "seed"}


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def faithfulness_text(score: float | None) -> str:
    """A note-faithfulness score as a label shows it: "0.93"; "–" when not measured."""
    return "–" if score is None else f"{score:.2f}"


def notes_kept_text(score: float | None) -> str:
    """Notes kept as a label shows it: "notes kept 86%"; "notes not counted" without."""
    return "notes not counted" if score is None else f"notes kept {score:.0%}"


def clean_note(text: str) -> str:
    """A take's note as kept: free text, lines kept, no control characters, trimmed, at most
    :data:`MAX_NOTE_CHARS` (an empty note is no note)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept = []
    for line in lines:
        line = line.replace("\t", " ")
        line = "".join(ch for ch in line if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
        kept.append(line.rstrip())
    note = "\n".join(kept).strip()
    if len(note) > MAX_NOTE_CHARS:
        note = note[: MAX_NOTE_CHARS - 1].rstrip() + "…"
    return note
