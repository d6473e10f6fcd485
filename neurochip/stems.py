"""Stems: each part of a sketch rendered with a band of its own, mixed, and taken to a DAW.

A chip tune is already separated: pulse 1 plays the lead, the triangle the bass, the noise
channel the drums. Rather than one prompt for the whole mix that the model must untangle,
each part (or group of parts) of a MIDI sketch is played alone and rendered with its own
prompt, denoise and guidance: "triangle -> slap bass, noise -> live drum kit".

1. **The instrument map**: :class:`Stem` says which parts a stem plays and what band plays
   them; :func:`default_stems` gives one per part, from its GM program and chip voice
   (:func:`instrument_prompt`).
2. **Render**: :func:`render_stems` plays each stem's parts alone
   (:meth:`~neurochip.sketch.Sketch.parts_audio`: the song's length, aligned sample for
   sample) and renders all of them in one denoising loop (:meth:`Engine.render_many` with
   one song per take: the stems share the UNet's calls), then keeps each stem and the mix
   in the take library.
3. **Mix**: :class:`StemMix` is one stem's fader (gain, pan, mute, solo); :func:`mix_stems`
   makes the stereo mix at once from the stem takes, without the model.
4. **Export**: :func:`write_stems_zip` writes a ZIP a DAW takes as it is: one WAV per stem,
   all of one length from the song's start, the mix, the sketch's tempo map as MIDI, and a
   ``stems.json`` from which :func:`stems_from_json` renders the same stems again.

A sketch that is audio (a WAV, an MP3, a tracker module, which NeuroChip plays through
ffmpeg as one mix) is one stem: its parts cannot be played alone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from neurochip import untrusted
from neurochip.engine import Engine, ProgressCallback, Render
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import sketch_bar_times
from neurochip.io.audio import Audio
from neurochip.library.metadata import faithfulness_score, take_metadata
from neurochip.library.store import TakeLibrary
from neurochip.mix import check_width, stereo_pair
from neurochip.settings import (
    MAX_TIME_S,
    Overrides,
    RenderSettings,
    TakeSetOptions,
    WithOverrides,
    setting_field,
    setting_like,
    table_of,
)
from neurochip.sketch import Sketch, SketchOutline
from neurochip.stem_mix import GAIN_DB, StemMix, heard_stems, mix_stems, stem_gains  # noqa: F401
from neurochip.synth import DRUMS, TrackInfo
from neurochip.takeset import (
    combined_faithfulness,
    measure_take,
    song_provenance,
    take_thumbnail,
)

log = logging.getLogger(__name__)

#: What the stems.json of an export says it is.
STEMS_FORMAT = "neurochip-stems"

#: A stem's name when the whole sketch is one stem (audio sketches).
WHOLE_SKETCH = "Mix"

#: The fields of a stem's metadata that are its own, not the render's (the mix has others).
_OWN_FIELDS = ("format", "neurochip", "kind", "source", "takes", "stem", "faithfulness")

#: The share of a stem render's progress that playing the parts alone gets.
SYNTH_SHARE = 0.1

#: Largest stems.json read: NeuroChip's own are a few kilobytes per stem.
MAX_STEMS_JSON_BYTES = 4_000_000


@dataclass(frozen=True)
class Stem(WithOverrides):
    """One line of the instrument map: which parts a stem plays and the band that plays them.

    Its instrument, negative prompt, denoise and guidance are :class:`Overrides` of the
    render's, checked and resolved as a section's are; ``None`` keeps the render's own value.
    """

    name: str = setting_field("", label="Stem", help="The stem's name: its file in the export.")
    parts: tuple[str, ...] = setting_field(
        (),
        label="Parts",
        help="The sketch's parts this stem plays, by track key (e.g. 2, or 3ch10); several "
        "parts make one stem together. Empty: the whole sketch.",
    )
    prompt: str = setting_field(
        "",
        label="Instrument",
        help="What plays this stem, e.g. 'slap bass', 'live drum kit', 'lead guitar'.",
    )
    negative_prompt: str | None = setting_like(Overrides, "negative_prompt")
    denoise: float | None = setting_like(Overrides, "denoise")
    guidance: float | None = setting_like(Overrides, "guidance")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise NeuroChipError("Every stem needs a name.")
        # A part is a track key ("2", "3ch10"); TOML or JSON may give it as a number.
        if not isinstance(self.parts, (list, tuple)) or not all(
            isinstance(p, (str, int)) and not isinstance(p, bool) for p in self.parts
        ):
            raise NeuroChipError(
                f"The stem {self.name}'s parts must be a list of track keys (e.g. 2, 3ch10), "
                f"not {self.parts!r:.40}."
            )
        object.__setattr__(self, "parts", tuple(str(p) for p in self.parts))
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise NeuroChipError(f"Say what plays the stem {self.name}: it has no instrument.")
        self._check_overrides(f"The stem {self.name}")
        for number in ("denoise", "guidance"):  # as a take's settings hold them
            if getattr(self, number) is not None:
                object.__setattr__(self, number, float(getattr(self, number)))

    def settings_for(self, settings: RenderSettings) -> RenderSettings:
        """The render's settings with this stem's instrument: its prompt leads, the song's
        prompt (the room, the style) follows, in every section of a prompt timeline too (the
        bass stays a bass when the band changes). The stem's own negative prompt, denoise and
        guidance are the take's (:meth:`resolve`) and its denoise and guidance hold through
        the sections; where it has none, each section's hold."""
        voice = self.resolve(settings)
        held = {name: None for name in ("denoise", "guidance") if getattr(self, name) is not None}
        return dataclasses.replace(
            settings,
            prompt=self.with_instrument(settings.prompt),
            negative_prompt=voice.negative_prompt,
            denoise=voice.denoise,
            guidance=voice.guidance,
            sections=tuple(
                dataclasses.replace(section, prompt=self.with_instrument(section.prompt), **held)
                for section in settings.sections
            ),
        )

    def with_instrument(self, prompt: str) -> str:
        return self.prompt if not prompt else f"{self.prompt}, {prompt}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["parts"] = list(self.parts)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Stem:
        values = table_of(cls, data, "stem")
        return cls(**{**values, "parts": values.get("parts") or ()})


#: The band that stands in for each GM program family (first program, prompt).
_GM_FAMILIES: tuple[tuple[int, str], ...] = (
    (0, "grand piano"),
    (8, "vibraphone"),
    (16, "hammond organ"),
    (24, "acoustic guitar"),
    (26, "clean electric guitar"),
    (29, "overdriven lead guitar"),
    (32, "electric bass guitar"),
    (36, "slap bass"),
    (38, "synth bass"),
    (40, "violin"),
    (42, "cello"),
    (44, "string section"),
    (56, "trumpet"),
    (57, "trombone"),
    (58, "brass section"),
    (64, "saxophone"),
    (68, "oboe"),
    (70, "clarinet"),
    (72, "flute"),
    (80, "lead guitar"),
    (88, "warm synth pad"),
    (96, "ambient synth"),
    (104, "sitar"),
    (112, "percussion"),
    (119, "sound effects"),
)

#: The band that stands in for a chip voice when the part has no GM program.
_VOICE_PROMPTS: dict[str, str] = {
    "pulse12": "clean electric guitar",
    "pulse25": "lead guitar",
    "pulse50": "electric piano",
    "triangle": "electric bass guitar",
    "saw": "string section",
    "noise": "live drum kit",
    DRUMS: "live drum kit",
}


def instrument_prompt(track: TrackInfo) -> str:
    """A sensible instrument for a part: drums for drums, else its GM program's family,
    else its chip voice's (triangle bass -> "electric bass guitar")."""
    if track.voice in (DRUMS, "noise"):
        return "live drum kit"
    if track.program is not None:
        return max((f for f in _GM_FAMILIES if f[0] <= track.program), key=lambda f: f[0])[1]
    return _VOICE_PROMPTS.get(track.voice, "live band")


def default_stems(sketch: Sketch | SketchOutline) -> list[Stem]:
    """One stem per part that plays notes (MIDI), named after it; the whole sketch as one
    stem where it is audio."""
    if not sketch.is_midi:
        return [Stem(WHOLE_SKETCH, (), "live band")]
    stems, names = [], set()
    for track in sketch.tracks:
        if track.notes == 0:
            continue
        voice = sketch.voices.get(track.key, track.voice)
        name = _unique(track.name.split(":")[0].strip() or f"Part {track.key}", names)
        stems.append(Stem(name, (track.key,), instrument_prompt(_with_voice(track, voice))))
    if not stems:
        raise NeuroChipError(f"{sketch.name} has no notes to make stems of.")
    return stems


def _with_voice(track: TrackInfo, voice: str) -> TrackInfo:
    return track if voice == track.voice else dataclasses.replace(track, voice=voice)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate.lower() in taken:
        candidate, n = f"{name} {n}", n + 1
    taken.add(candidate.lower())
    return candidate


def apply_overrides(stems: Sequence[Stem], overrides: Mapping[str, Stem]) -> list[Stem]:
    """The map with some stems replaced: ``overrides`` by a stem's name or part key (any
    case). A key naming several parts ("2+3") groups them into one stem, in place of theirs.
    A replaced stem keeps its name and parts; the override brings the instrument, denoise
    and guidance.

    Raises:
        NeuroChipError: For a key that names no stem or part, saying which there are.
    """
    result = list(stems)
    for key, new in overrides.items():
        wanted = [k.strip().lower() for k in key.split("+") if k.strip()]
        hits = [
            i
            for i, s in enumerate(result)
            if s.name.lower() in wanted or any(p.lower() in wanted for p in s.parts)
        ]
        if not hits:
            listing = ", ".join(f"{s.name} ({'+'.join(s.parts) or 'all'})" for s in result)
            raise NeuroChipError(f"There is no stem or part {key!r}. The stems are: {listing}.")
        parts = tuple(p for i in hits for p in result[i].parts)
        name = " + ".join(result[i].name for i in hits)  # the override keeps the stems' names
        result[hits[0]] = dataclasses.replace(new, name=name, parts=parts)
        for i in reversed(hits[1:]):
            del result[i]
    return result


def parse_stem(text: str) -> tuple[str, Stem]:
    """``"Bass=slap bass:0.25:9"`` -> (``"Bass"``, a stem playing slap bass at denoise 0.25,
    guidance 9). The key is a stem's name or a part's key; "2+3" groups parts."""
    key, sep, rest = text.partition("=")
    if not sep or not key.strip() or not rest.strip():
        raise NeuroChipError(
            f"Give a stem as PART=INSTRUMENT[:DENOISE[:GUIDANCE]], e.g. 'Bass=slap bass:0.25', "
            f"not {text!r}."
        )
    prompt, *numbers = rest.split(":")
    if len(numbers) > 2:
        raise NeuroChipError(f"{text!r}: after the instrument come at most denoise and guidance.")
    try:
        values = [float(n) for n in numbers]
    except ValueError:
        raise NeuroChipError(f"{text!r}: denoise and guidance must be numbers.") from None
    denoise, guidance = (values + [None, None])[:2]
    # Named by its key until apply_overrides names it after the stems it replaces.
    return key.strip(), Stem(key.strip(), (), prompt.strip(), denoise=denoise, guidance=guidance)


# --- render ---------------------------------------------------------------------------------


@dataclass
class StemTakes:
    """Stems of one render: what :func:`render_stems` made, or what the library kept of it
    (:meth:`from_library`).

    Attributes:
        sketch_name: The sketch the stems are of.
        settings: The render's own settings (each stem's are ``stem.settings_for`` them).
        stems: The instrument map.
        audios: One per stem, in the map's order: mono, the span's length.
        start_s: Where the span starts in the song.
        metadata: One per stem: what its file carries (kind ``"stem"``, its settings).
        renders: The engine's renders, pictures and all (only just after a render; take A's
            where the stems are pairs).
        pair_width: Each stem is a stereo pair of two takes this wide; ``None``: mono stems.
        saved: Stem name -> take id, and ``"mix"`` -> the mix's, for files kept there.
    """

    sketch_name: str
    settings: RenderSettings
    stems: list[Stem]
    audios: list[Audio]
    start_s: float
    metadata: list[dict[str, Any]]
    renders: list[Render] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)
    pair_width: float | None = None

    @property
    def stem_settings(self) -> list[RenderSettings]:
        """Each stem's own settings, as its file carries them."""
        return [
            RenderSettings.from_dict(meta["takes"][stem.name])
            for stem, meta in zip(self.stems, self.metadata, strict=True)
        ]

    def mix(self, mixes: Sequence[StemMix] | None = None) -> Audio:
        return mix_stems(self.audios, mixes or [StemMix()] * len(self.audios))

    @classmethod
    def from_library(cls, library: TakeLibrary, mix_take: str) -> tuple[StemTakes, list[StemMix]]:
        """The stems a kept ``"stem mix"`` take was mixed from, and its faders.

        Raises:
            NeuroChipError: It is not a mix of stems, or one of its stems was deleted.
        """
        take = library.get(mix_take)
        if take.metadata.get("kind") != "stem mix":
            raise NeuroChipError(f"{take.name} is not a mix of stems.")
        try:
            parsed = _stem_entries(take.metadata.get("stems"))
            settings = RenderSettings.from_dict(take.metadata.get("render") or {})
            start_s = untrusted.number(
                take.metadata, "start_s", "", low=0.0, high=MAX_TIME_S, default=settings.start_s
            )
        except NeuroChipError as err:
            raise NeuroChipError(
                f"The mix “{take.name}” is damaged: {err} Its stems cannot be mixed again."
            ) from None
        entries = [entry for _, _, entry in parsed]
        stems, mixes, audios, metadata = [], [], [], []
        for stem, mix, entry in parsed:
            stems.append(stem)
            mixes.append(mix)
            try:
                stem_take = library.get(str(entry.get("take")))
            except NeuroChipError:
                raise NeuroChipError(
                    f"The stem {stems[-1].name} of {take.name} was deleted: its mix can no "
                    "longer be changed (the mix itself stays)."
                ) from None
            audios.append(library.load_audio(stem_take.id))
            metadata.append(stem_take.metadata)
        result = cls(
            take.source_name or "",
            settings,
            stems,
            audios,
            start_s,
            metadata,
            saved={**{s.name: str(e["take"]) for s, e in zip(stems, entries, strict=True)},
                   "mix": take.id},
            pair_width=metadata[0].get("width") if metadata else None,
        )  # fmt: skip
        return result, mixes

    def mix_metadata(self, mixes: Sequence[StemMix]) -> dict[str, Any]:
        """What the mix's file carries (kind ``"stem mix"``): every stem's settings, its
        instrument and fader, and (once kept) its take."""
        first = self.metadata[0]
        stems = [
            {**stem.to_dict(), "mix": dataclasses.asdict(m)}
            | ({"take": self.saved[stem.name]} if stem.name in self.saved else {})
            for stem, m in zip(self.stems, mixes, strict=True)
        ]
        extra = {k: v for k, v in first.items() if k not in _OWN_FIELDS}
        kept = [self.saved[s.name] for s in self.stems if s.name in self.saved]
        heard = [
            meta.get("faithfulness")
            for meta, on in zip(self.metadata, heard_stems(mixes), strict=True)
            if on
        ]
        scores = [faithfulness_score({"faithfulness": f}) for f in heard]
        known = [score for score in scores if score is not None]
        if known:  # what the stems heard in the mix kept of their parts, on average
            extra["faithfulness"] = {"score": round(sum(known) / len(known), 4)}
        return {
            **take_metadata(
                "stem mix",
                dict(zip((s.name for s in self.stems), self.stem_settings, strict=True)),
                self.sketch_name,
                extra,
                stems=stems,
                render=self.settings.to_dict(),
                start_s=self.start_s,
                **({"width": self.pair_width} if self.pair_width is not None else {}),
            ),
            **({"from_takes": kept} if kept else {}),
        }


def render_stems(
    engine: Engine,
    sketch: Sketch,
    settings: RenderSettings,
    stems: Sequence[Stem] | None = None,
    mixes: Sequence[StemMix] | None = None,
    *,
    library: TakeLibrary | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    pair_width: float | None = None,
) -> StemTakes:
    """Render a sketch's span as stems, all in one denoising loop, and their mix.

    Args:
        engine: The engine to render with.
        sketch: The sketch; a MIDI one gives a stem per group of parts.
        settings: The render's settings (span, seed, steps...); each stem takes its own
            instrument, denoise and guidance from the map.
        stems: The instrument map (default: :func:`default_stems`).
        mixes: The mixer, one per stem (default: every stem at 0 dB, centred).
        library: Keep each stem (kind ``"stem"``) and the mix (``"stem mix"``) here.
        progress: ``progress(fraction, stage)``; ``cancel``: set it to stop.
        pair_width: Make each stem a stereo pair of two takes (the seed, and the next),
            panned apart this wide (0-1, :func:`~neurochip.mix.stereo_pair`); ``None``: mono
            stems, which the mixer pans.

    Raises:
        NeuroChipError: For an empty map, a part the sketch lacks, or a bad setting.
        RenderCancelled: When ``cancel`` was set.
    """
    stems = list(stems) if stems is not None else default_stems(sketch)
    mixes = list(mixes) if mixes is not None else [StemMix()] * len(stems)
    if len(mixes) != len(stems):
        raise NeuroChipError(f"{len(mixes)} mixer settings for {len(stems)} stems.")

    def report(fraction: float, stage: str) -> None:
        if progress is not None:
            progress(fraction, stage)

    sources = stem_sources(
        sketch,
        stems,
        lambda f, stage: report(SYNTH_SHARE * f, "playing each part alone"),
        cancel,
    )
    if pair_width is not None:  # take B of each stem, in the same loop
        check_width(pair_width)
        sources = sources * 2
    takes = stem_settings(settings, stems, pair_width)
    what = f"{len(stems)} stems" + (" as stereo pairs" if pair_width is not None else "")
    renders = engine.render_many(
        sources,
        takes,
        lambda f, stage: report(SYNTH_SHARE + (1 - SYNTH_SHARE) * f, f"{what}: {stage}"),
        cancel,
    )
    renders, b_renders = renders[: len(stems)], renders[len(stems) :]
    audios = [render.audio for render in renders]
    if pair_width is not None:
        audios = [
            stereo_pair(a.audio, b.audio, pair_width)
            for a, b in zip(renders, b_renders, strict=True)
        ]
    result = StemTakes(
        sketch.name,
        settings,
        stems,
        audios,
        renders[0].start_s,
        _stem_metadata(sketch, stems, renders, b_renders, pair_width),
        renders=renders,
        pair_width=pair_width,
    )
    if library is not None:
        keep_stems(library, result, mixes)
    return result


def stem_settings(
    settings: RenderSettings, stems: Sequence[Stem], pair_width: float | None = None
) -> list[RenderSettings]:
    """The settings of each take :func:`render_stems` renders, in its order: each stem's
    (:meth:`Stem.settings_for`), then for stereo pairs (``pair_width``) each stem's take B
    (seed + 1, :meth:`~neurochip.settings.TakeSetOptions.take_b`)."""
    takes = [stem.settings_for(settings) for stem in stems]
    if pair_width is None:
        return takes
    return takes + [TakeSetOptions().take_b(take) for take in takes]


def check_stems(sketch: Sketch | SketchOutline, stems: Sequence[Stem]) -> None:
    """Raise now, before anything is played or a model loads, for a map this sketch cannot
    make: parts it lacks, or several stems of an audio sketch."""
    if not stems:
        raise NeuroChipError("Give at least one stem to render.")
    names = [s.name.lower() for s in stems]
    if len(set(names)) < len(names):
        raise NeuroChipError("Two stems have one name: give each its own (it names its file).")
    if not sketch.is_midi:
        if len(stems) != 1 or stems[0].parts:
            raise NeuroChipError(
                f"{sketch.name} is audio: NeuroChip plays it as one mix, so it makes one "
                "stem. (Tracker modules too: ffmpeg plays a module's channels together.) Load "
                "the MIDI file of the song to render a stem per part."
            )
        return
    keys = {t.key for t in sketch.tracks}
    played_by: dict[str, str] = {}
    for stem in stems:
        missing = [p for p in stem.parts if p not in keys]
        if missing:
            listing = ", ".join(f"{t.key} ({t.name})" for t in sketch.tracks)
            raise NeuroChipError(
                f"The stem {stem.name} plays part {missing[0]!r}, which {sketch.name} does not "
                f"have. Its parts are: {listing}."
            )
        for part in stem.parts or tuple(keys):
            if part in played_by:
                raise NeuroChipError(
                    f"Part {part} is in two stems ({played_by[part]} and {stem.name}): it would "
                    "play twice in the mix. Give each part to one stem."
                )
            played_by[part] = stem.name


def stems_warnings(sketch: Sketch, stems: Sequence[Stem]) -> list[str]:
    """What a composer should know of a map that is fine to render: parts left out."""
    if sketch.midi is None or any(not stem.parts for stem in stems):
        return []
    played = {part for stem in stems for part in stem.parts}
    left = [t for t in sketch.tracks if t.notes and t.key not in played]
    if not left:
        return []
    names = ", ".join(f"{t.key} ({t.name.split(':')[0]})" for t in left)
    return [f"Not in any stem, so not in the stems or their mix: part {names}."]


def stem_sources(
    sketch: Sketch,
    stems: Sequence[Stem],
    progress: Any = None,
    cancel: threading.Event | None = None,
) -> list[Audio]:
    """What each stem's render hears: its parts played alone (the whole song's length)."""
    check_stems(sketch, stems)
    if sketch.midi is None:
        return [sketch.audio]
    everything = tuple(t.key for t in sketch.tracks)
    groups = [stem.parts or everything for stem in stems]
    return sketch.parts_audio(groups, progress, cancel)


def keep_stems(library: TakeLibrary, result: StemTakes, mixes: Sequence[StemMix]) -> None:
    """Keep each stem, then their mix, in the library (``result.saved`` says where)."""
    pictures = [take_thumbnail(r) for r in result.renders] or [None] * len(result.stems)
    for stem, audio, meta, picture in zip(
        result.stems, result.audios, result.metadata, pictures, strict=True
    ):
        result.saved[stem.name] = library.add(audio, meta, thumbnail=picture).id
    keep_mix(library, result, mixes, pictures[0])


def keep_mix(
    library: TakeLibrary, result: StemTakes, mixes: Sequence[StemMix], thumbnail: Any = None
) -> str:
    """Keep the stems' mix at these faders as a take of its own (a new one each time: an
    earlier mix stays); returns its id, also in ``result.saved["mix"]``."""
    take = library.add(result.mix(mixes), result.mix_metadata(mixes), thumbnail=thumbnail)
    result.saved["mix"] = take.id
    return take.id


def _stem_metadata(
    sketch: Sketch,
    stems: Sequence[Stem],
    renders: Sequence[Render],
    b_renders: Sequence[Render],
    pair_width: float | None,
) -> list[dict[str, Any]]:
    """Each stem's metadata: its settings (take B's too, as ``"<name> B"``, for a pair)."""
    provenance = song_provenance(sketch)
    bars = sketch_bar_times(sketch)
    made = []
    for i, (stem, render) in enumerate(zip(stems, renders, strict=True)):
        takes = {stem.name: render.settings}
        measured = {stem.name: measure_take(render, bars)}
        paired: dict[str, Any] = {}
        if pair_width is not None:
            takes[f"{stem.name} B"] = b_renders[i].settings
            measured[f"{stem.name} B"] = measure_take(b_renders[i], bars)
            paired = {"width": pair_width}
        made.append(
            take_metadata(
                "stem",
                takes,
                sketch.name,
                {**render.info, **provenance},
                stem=stem.to_dict(),
                faithfulness=combined_faithfulness(measured),
                **paired,
            )
        )
    return made


# --- mix ------------------------------------------------------------------------------------


def _stem_entries(value: Any) -> list[tuple[Stem, StemMix, dict[str, Any]]]:
    """Each stem a stems.json or a kept mix lists: its line of the map, its fader, and the
    entry itself.

    Raises:
        NeuroChipError: For a list that is not one of stems, naming the stem.
    """
    entries = untrusted.tables(value, '"stems"', "stem")
    if not entries:
        raise untrusted.DataError('"stems"', "lists no stem")
    known = {f.name for f in dataclasses.fields(Stem)}
    made = []
    for number, entry in enumerate(entries, start=1):
        try:
            stem = Stem.from_dict({k: v for k, v in entry.items() if k in known})
            mix = StemMix.from_dict(entry.get("mix") if entry.get("mix") is not None else {})
        except NeuroChipError as err:
            raise untrusted.DataError(f"stem {number}:", str(err)) from None
        made.append((stem, mix, entry))
    return made


__all__ = [
    "STEMS_FORMAT",
    "Stem",
    "StemMix",
    "StemTakes",
    "apply_overrides",
    "check_stems",
    "default_stems",
    "heard_stems",
    "keep_mix",
    "instrument_prompt",
    "mix_stems",
    "parse_stem",
    "render_stems",
    "stem_gains",
    "stems_warnings",
    "stem_settings",
    "stem_sources",
]
