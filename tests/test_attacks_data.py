"""Crafted data (issue 22): take metadata, stems.json, manifests, model folders, file names.

Each is refused at the boundary by :mod:`neurochip.untrusted` with one clear
:class:`NeuroChipError` line (on the command line: ``neurochip: ...``, exit 2), never a
``TypeError``, ``RecursionError`` or ``ValueError`` from deep inside. The files are made here.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import shutil
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from neurochip import untrusted
from neurochip.cli import main
from neurochip.errors import ModelLoadError, NeuroChipError
from neurochip.io.audio import Audio
from neurochip.library import store
from neurochip.library.metadata import (
    read_take_metadata,
    save_take,
    settings_from_take,
    take_metadata,
)
from neurochip.library.names import default_take_name, take_label
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, describe
from neurochip.stems import (
    STEMS_FORMAT,
    Stem,
    StemMix,
    StemTakes,
    mix_stems,
)
from neurochip.stems_zip import (
    read_stems_json,
    stem_file_names,
    stems_from_json,
    write_stems_zip,
)
from tests.chiptune import make_chiptune

SR = 44100
SETTINGS = RenderSettings(prompt="a funk band", seed=3)
AUDIO = Audio(np.zeros((1, 4410), np.float32), SR)


def _one_line(message: str, *words: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message


def _cli_error(capsys, argv: list[str], *words: str) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    err = captured.err.strip()
    assert code == 2, captured
    assert err.startswith("neurochip: "), err
    _one_line(err, *words)
    return err


# --- the validator ------------------------------------------------------------------------------


def test_json_and_toml_too_large_or_too_deep_are_refused_in_words():
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, "[" * 40 + "]" * 40):
        with pytest.raises(untrusted.DataError, match="nested more than 32 levels"):
            untrusted.load_json_text(text, "x.json", max_bytes=10**6)
    with pytest.raises(untrusted.DataError, match="too large"):
        untrusted.load_json_text("[1]" + " " * 100, "x.json", max_bytes=100)
    with pytest.raises(untrusted.DataError, match="not valid JSON"):
        untrusted.load_json_text('{"a": NaN}', "x.json")
    assert untrusted.load_json_text('{"a": [1, {"b": 2}]}', "x.json") == {"a": [1, {"b": 2}]}
    with pytest.raises(untrusted.DataError, match="nested more than 32 levels"):
        untrusted.load_toml_text("a = " + "[" * 5000 + "]" * 5000, "m.toml")
    dotted = "[" + ".".join(["t"] * 40) + "]\nx = 1\n"  # deep without recursing in the parser
    with pytest.raises(untrusted.DataError, match="nested more than 32 levels"):
        untrusted.load_toml_text(dotted, "m.toml")
    with pytest.raises(untrusted.DataError, match="too large"):
        untrusted.load_toml_text("a = 1\n" * 10, "m.toml", max_bytes=20)


def test_typed_fields_name_the_field_and_what_it_holds():
    data = {"gain": "loud", "n": 1.5, "ok": True, "name": 5}
    with pytest.raises(untrusted.DataError, match='"gain" must be a number from -1 to 1'):
        untrusted.number(data, "gain", "stem 1", low=-1, high=1)
    with pytest.raises(untrusted.DataError, match='"n" must be a whole number'):
        untrusted.whole(data, "n", "stem 1")
    with pytest.raises(untrusted.DataError, match='"name" must be text, not the number 5'):
        untrusted.text(data, "name", "stem 1")
    with pytest.raises(untrusted.DataError, match='Stem 1 has no "prompt"'):
        untrusted.text(data, "prompt", "stem 1")
    assert untrusted.text(data, "prompt", "stem 1", None) is None
    assert untrusted.flag(data, "ok", "stem 1") is True
    with pytest.raises(untrusted.DataError, match="Stem 2 must be a table"):
        untrusted.tables([{}, 5], "stems", "stem")


# --- 8a: take metadata ---------------------------------------------------------------------------

SECTION = {"start_s": 0.0, "prompt": "soft strings"}
DAMAGED_TAKES: dict[str, Any] = {
    "takes is text": "A",
    "takes holds a number": {"A": 5},
    "takes is a list": [SETTINGS.to_dict()],
    "settings are a list": {"A": [1, 2]},
    "section without a prompt": {"A": {**SETTINGS.to_dict(), "sections": [{"start_s": 0.0}]}},
    "section without a start": {"A": {**SETTINGS.to_dict(), "sections": [{"prompt": "x"}]}},
    "section is text": {"A": {**SETTINGS.to_dict(), "sections": ["bar 1"]}},
    "sections are text": {"A": {**SETTINGS.to_dict(), "sections": "bar 1=strings"}},
    "prompt is a number": {"A": {**SETTINGS.to_dict(), "prompt": 5}},
    "loop is text": {"A": {**SETTINGS.to_dict(), "loop": "yes"}},
    "no takes": {},
}


def _damaged_take(folder: Path, takes: Any, name: str = "take.wav", **fields: Any) -> Path:
    metadata = take_metadata("take", {"A": SETTINGS}, "sketch.wav")
    metadata.update(takes=takes, **fields)
    return save_take(folder / name, AUDIO, metadata)


@pytest.mark.parametrize("takes", DAMAGED_TAKES.values(), ids=DAMAGED_TAKES.keys())
def test_damaged_take_settings_are_one_clear_error(takes, tmp_path):
    path = _damaged_take(tmp_path, takes)
    with pytest.raises(NeuroChipError) as info:
        settings_from_take(path)
    _one_line(str(info.value), "take.wav", "damaged")


@pytest.mark.parametrize("field", [{"kind": 5}, {"kind": ["take"]}, {"source": {"a": 1}}])
def test_metadata_fields_of_the_wrong_type_are_damage(field, tmp_path):
    path = _damaged_take(tmp_path, {"A": SETTINGS.to_dict()}, **field)
    with pytest.raises(NeuroChipError) as info:
        read_take_metadata(path)
    _one_line(str(info.value), "take.wav", "damaged")


@pytest.mark.parametrize(
    "measured", ["very high", {"score": 10**400}, {"score": 7}, [0.9]], ids=repr
)
def test_a_score_that_is_not_one_is_no_score(measured, tmp_path):
    path = _damaged_take(tmp_path, {"A": SETTINGS.to_dict()}, faithfulness=measured)
    assert settings_from_take(path) == SETTINGS
    assert "faithfulness" not in take_label(read_take_metadata(path))
    library = TakeLibrary(tmp_path / "home")
    assert library.add(AUDIO, read_take_metadata(path)).faithfulness is None


@pytest.mark.parametrize(
    "takes", ["A", {"A": 5}, [SETTINGS.to_dict()]], ids=["text", "number", "list"]
)
def test_reroll_on_a_damaged_take_says_one_line(takes, tmp_path, capsys):
    sketch = tmp_path / "song.wav"
    sf.write(sketch, make_chiptune(1.0).T, SR)
    take = _damaged_take(tmp_path, takes)
    argv = ["reroll", str(sketch), str(take), "--seconds", "0-0.5", "-o", str(tmp_path / "o.wav")]
    _cli_error(capsys, [*argv, "--model", "/no/such/model", "--no-library"], "damaged")


def test_reroll_take_refuses_damaged_parent_metadata():
    from neurochip.reroll import RerollRegion, reroll_take

    metadata = take_metadata("take", {"A": SETTINGS}, "sketch.wav")
    for takes in ("A", [1], {"A": 5}):
        with pytest.raises(NeuroChipError, match="damaged"):
            # Refused before the engine is asked for anything.
            reroll_take(
                None,  # type: ignore[arg-type]
                None,  # type: ignore[arg-type]
                AUDIO,
                {**metadata, "takes": takes},
                RerollRegion(0.0, 0.05),
                [SETTINGS],
            )


def test_names_and_labels_of_damaged_metadata_do_not_crash():
    for takes in ("A", [1], {"A": 5}, None):
        metadata = {"format": "neurochip-take", "kind": 5, "takes": takes, "source": "s.mid"}
        assert default_take_name(metadata).startswith("s — ")
        assert isinstance(take_label(metadata), str)


def test_the_library_skips_a_take_folder_with_damaged_settings(tmp_path):
    library = TakeLibrary(tmp_path / "home")
    kept = library.add(AUDIO, take_metadata("take", {"A": SETTINGS}, "s.wav"))
    good = library.takes_dir / kept.id
    for n, takes in enumerate(("A", [1], {"A": 5}), start=1):
        folder = library.takes_dir / f"{n:012x}"
        shutil.copytree(good, folder)
        (folder / "take.json").unlink()
        _damaged_take(folder, takes)
        (folder / "take.json").unlink()  # no sidecar to fall back on
    # A folder whose settings are damaged holds no readable take: skipped, not a crash.
    again = TakeLibrary(tmp_path / "home")
    listed = again.list()
    assert [t.id for t in listed] == [kept.id]
    assert again.get(kept.id).settings() == SETTINGS


# --- 8b: stems.json and the mixer --------------------------------------------------------------


def _stems_description() -> dict[str, Any]:
    mix = dataclasses.asdict(StemMix())
    return {
        "format": STEMS_FORMAT,
        "settings": SETTINGS.to_dict(),
        "stems": [
            {
                "file": "stems/01 Bass.wav",
                **Stem("Bass", ("2",), "slap bass").to_dict(),
                "mix": mix,
            },
            {"file": "stems/02 Lead.wav", **Stem("Lead", ("1",), "guitar").to_dict(), "mix": mix},
        ],
        "pair_width": None,
    }


def _edit(path: tuple[Any, ...], value: Any, delete: bool = False) -> dict[str, Any]:
    description = copy.deepcopy(_stems_description())
    where: Any = description
    for key in path[:-1]:
        where = where[key]
    if delete:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return description


STEMS_DAMAGE = {
    "no settings": _edit(("settings",), None, delete=True),
    "settings a list": _edit(("settings",), [1]),
    "settings a number": _edit(("settings",), 5),
    "no stems": _edit(("stems",), None, delete=True),
    "stems text": _edit(("stems",), "Bass"),
    "stems empty": _edit(("stems",), []),
    "stem a number": _edit(("stems", 1), 5),
    "stem without a name": _edit(("stems", 0, "name"), None, delete=True),
    "stem without a prompt": _edit(("stems", 0, "prompt"), None, delete=True),
    "prompt a list": _edit(("stems", 0, "prompt"), ["bass"]),
    "parts text": _edit(("stems", 0, "parts"), "2"),
    "parts of tables": _edit(("stems", 0, "parts"), [{"a": 1}]),
    "negative prompt a number": _edit(("stems", 0, "negative_prompt"), 5),
    "mix a list": _edit(("stems", 0, "mix"), [0]),
    "gain 1e300": _edit(("stems", 0, "mix", "gain_db"), 1e300),
    "gain 5000": _edit(("stems", 0, "mix", "gain_db"), 5000),
    "gain text": _edit(("stems", 0, "mix", "gain_db"), "loud"),
    "pan 5": _edit(("stems", 0, "mix", "pan"), 5),
    "mute text": _edit(("stems", 0, "mix", "mute"), "yes"),
    "pair width text": _edit(("pair_width",), "wide"),
    "pair width 7": _edit(("pair_width",), 7),
}


def test_a_whole_stems_json_gives_its_recipe():
    recipe = stems_from_json(read_stems_json(json.dumps(_stems_description())))
    assert recipe.settings == SETTINGS and [s.name for s in recipe.stems] == ["Bass", "Lead"]
    assert recipe.mixes == [StemMix(), StemMix()] and recipe.pair_width is None


@pytest.mark.parametrize("description", STEMS_DAMAGE.values(), ids=STEMS_DAMAGE.keys())
def test_a_damaged_stems_json_is_one_clear_error(description):
    with pytest.raises(NeuroChipError) as info:
        stems_from_json(read_stems_json(json.dumps(description)))
    _one_line(str(info.value), "stems.json")


def test_a_stems_json_too_deep_or_too_large_is_refused():
    deep = '{"format": "neurochip-stems", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(NeuroChipError, match="stems.json is nested"):
        read_stems_json(deep)
    with pytest.raises(NeuroChipError, match="stems.json is too large"):
        read_stems_json(json.dumps(_stems_description()) + " " * 20_000_000)


@pytest.mark.parametrize(
    ("fader", "value"),
    [("gain_db", 1e300), ("gain_db", 5000.0), ("gain_db", -1e300), ("gain_db", 24.5),
     ("gain_db", float("nan")), ("pan", 1.5), ("pan", float("nan")), ("mute", "yes")],
)  # fmt: skip
def test_faders_outside_their_range_are_refused(fader, value):
    with pytest.raises(NeuroChipError, match="stem's"):
        StemMix(**{fader: value})


def test_the_loudest_fader_still_mixes_finite_audio():
    gain, pan = describe(StemMix, "gain_db"), describe(StemMix, "pan")
    assert (pan.minimum, pan.maximum) == (-1.0, 1.0)
    stem = Audio(np.full((1, 100), 0.5, np.float32), SR)
    for value in (gain.minimum, gain.maximum):
        mixed = mix_stems([stem], [StemMix(gain_db=value, pan=pan.maximum)])
        assert np.isfinite(mixed.samples).all()


def test_a_kept_mix_with_damaged_stems_is_a_clear_error(tmp_path):
    library = TakeLibrary(tmp_path / "home")
    for stems in ("Bass", [5], [{"name": "Bass", "prompt": "bass", "mix": {"gain_db": 1e300}}]):
        meta = take_metadata("stem mix", {"Bass": SETTINGS}, "s.mid", stems=stems)
        mix = library.add(AUDIO, meta)
        with pytest.raises(NeuroChipError) as info:
            StemTakes.from_library(library, mix.id)
        _one_line(str(info.value), "damaged")


# --- 8c: batch manifests -------------------------------------------------------------------------


def _manifest(folder: Path, body: str) -> Path:
    path = folder / "soundtrack.toml"
    path.write_text(body)
    return path


def test_a_deeply_nested_manifest_is_refused(tmp_path, capsys):
    from neurochip.batch import load_manifest

    deep = _manifest(tmp_path, "[defaults]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(NeuroChipError, match="soundtrack.toml is nested more than"):
        load_manifest(deep)
    _cli_error(capsys, ["batch", str(deep), "--no-library"], "nested")


def test_a_huge_manifest_is_refused_before_it_is_parsed(tmp_path):
    from neurochip.batch import load_manifest

    huge = _manifest(tmp_path, "# padding\n" * 200_000)
    with pytest.raises(NeuroChipError, match="soundtrack.toml is too large"):
        load_manifest(huge)


@pytest.mark.parametrize(
    "body",
    [
        'output = "out\\u0000put"\n[[songs]]\npath = "song.wav"\nprompts = ["x"]\n',
        '[[songs]]\npath = "so\\u0000ng.wav"\nprompts = ["x"]\n',
    ],
    ids=["output", "song path"],
)
def test_a_nul_in_a_manifests_file_names_is_one_line(body, tmp_path, capsys):
    from neurochip.batch import load_manifest

    sf.write(tmp_path / "song.wav", make_chiptune(1.0).T, SR)
    path = _manifest(tmp_path, body)
    with pytest.raises(NeuroChipError, match="NUL character"):
        load_manifest(path)
    _cli_error(capsys, ["batch", str(path), "--no-library"], "NUL character")


# --- 8d: a NUL in an output path on the command line ---------------------------------------------


def test_a_nul_in_an_output_path_is_one_line(tmp_path, capsys):
    song = tmp_path / "song.wav"
    sf.write(song, make_chiptune(1.0).T, SR)
    out = str(tmp_path / "a\x00b.wav")
    _cli_error(capsys, ["roundtrip", str(song), "-o", out, "--iterations", "0"], "NUL character")
    assert {p.name for p in tmp_path.iterdir()} <= {"song.wav", "neurochip-home"}


# --- 8e: model folders --------------------------------------------------------------------------


def _model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _model_error(folder: Path) -> str:
    from neurochip.model import load_model

    with pytest.raises(ModelLoadError) as info:
        load_model(folder, device="cpu")
    message = str(info.value)
    _one_line(message, "looks damaged")
    assert "download" not in message.lower(), message
    return message


@pytest.mark.parametrize("value", [1e12, 10**12, 1000.5, "1000", 0, -5, True, None], ids=repr)
def test_a_scheduler_config_out_of_range_is_refused_before_anything_is_built(
    value, tiny_model_dir, tmp_path
):
    folder = _model_copy(tiny_model_dir, tmp_path)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config["num_train_timesteps"] = value
    config_path.write_text(json.dumps(config))
    message = _model_error(folder)
    assert "scheduler/scheduler_config.json" in message and "num_train_timesteps" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("beta_start", float("inf")), ("beta_end", "high"), ("beta_schedule", "cosmic")],
)
def test_other_scheduler_values_that_cannot_work_are_refused(key, value, tiny_model_dir, tmp_path):
    folder = _model_copy(tiny_model_dir, tmp_path)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), key: value}))
    assert "scheduler" in _model_error(folder)


def test_a_deeply_nested_vocabulary_is_refused(tiny_model_dir, tmp_path):
    folder = _model_copy(tiny_model_dir, tmp_path)
    (folder / "tokenizer" / "vocab.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    message = _model_error(folder)
    assert "tokenizer/vocab.json" in message and "nested" in message


def test_a_huge_vocabulary_is_refused_before_it_is_read(tiny_model_dir, tmp_path):
    from neurochip import model_files as model

    folder = _model_copy(tiny_model_dir, tmp_path)
    vocab = folder / "tokenizer" / "vocab.json"
    vocab.write_text(vocab.read_text() + " " * (model.MAX_CONFIG_BYTES + 1))
    message = _model_error(folder)
    assert "tokenizer/vocab.json" in message and "too large" in message


def test_a_huge_unet_config_is_refused(tiny_model_dir, tmp_path):
    folder = _model_copy(tiny_model_dir, tmp_path)
    config = folder / "unet" / "config.json"
    config.write_text(config.read_text().rstrip()[:-1] + ', "x": ' + "[" * 50 + "]" * 50 + "}")
    assert "unet/config.json" in _model_error(folder)


# --- 9: two stems, one file name -----------------------------------------------------------------


def test_stems_whose_names_clean_to_one_get_distinct_files(tmp_path):
    from neurochip.cli.render import stem_paths

    names = ["Bass!", "Bass?", "bass", "Bass-2", "", "!!!"]
    files = stem_file_names(names)
    # In order: a name taken already gets the first free "-2", "-3"...
    assert files == ["Bass", "Bass-2", "bass-3", "Bass-2-2", "stem", "stem-2"]
    assert len({f.lower() for f in files}) == len(files)  # also on case-blind disks
    assert stem_file_names(names) == files  # the same names always give the same files
    stems = [Stem(n, (str(i),), "bass") for i, n in enumerate(["Bass!", "Bass?"], start=1)]
    paths = stem_paths(tmp_path / "mix.wav", stems)
    assert [p.name for p in paths.values()] == ["mix-Bass.wav", "mix-Bass-2.wav"]


def test_the_zip_names_each_stem_once():
    from neurochip.sketch import load_sketch

    buffer = io.BytesIO()
    sf.write(buffer, make_chiptune(0.5).T, SR, format="WAV")
    sketch = load_sketch(buffer.getvalue(), name="song.wav")
    stems = [Stem("Bass!", (), "bass"), Stem("Bass?", (), "bass")]
    audios = [Audio(np.zeros((1, 4410), np.float32), SR)] * 2
    metadata = [take_metadata("stem", {s.name: SETTINGS}, "song.wav") for s in stems]
    result = StemTakes("song.wav", SETTINGS, stems, audios, 0.0, metadata)
    out = io.BytesIO()
    write_stems_zip(out, sketch, result, [StemMix()] * 2)
    with zipfile.ZipFile(out) as archive:
        wavs = [n for n in archive.namelist() if n.startswith("stems/")]
        described = json.loads(archive.read("stems.json"))
    assert wavs == ["stems/01 Bass.wav", "stems/02 Bass-2.wav"]
    assert [s["file"] for s in described["stems"]] == wavs


# --- 10: the library's index -------------------------------------------------------------------


def _takes(library: TakeLibrary, count: int) -> list[str]:
    return [
        library.add(AUDIO, take_metadata("take", {"A": SETTINGS.replace(seed=i)}, "s.wav")).id
        for i in range(count)
    ]


@pytest.mark.parametrize("with_wal", [True, False], ids=["with -wal and -shm", "file alone"])
def test_an_index_deleted_while_open_is_rebuilt_from_the_folders(with_wal, tmp_path):
    library = TakeLibrary(tmp_path / "home")
    ids = _takes(library, 3)
    library.star(ids[1])
    for suffix in ("", "-wal", "-shm") if with_wal else ("",):
        Path(f"{library.index_path}{suffix}").unlink(missing_ok=True)
    assert sorted(t.id for t in library.list()) == sorted(ids)
    assert library.get(ids[1]).starred  # the star was mirrored in its entry.json
    ids += _takes(library, 1)
    assert library.count() == 4 and library.get(ids[-1]).settings().seed == 0
    os.unlink(library.index_path)
    assert library.get(ids[0]).id == ids[0]
    os.unlink(library.index_path)
    ids += _takes(library, 1)
    assert sorted(t.id for t in library.list()) == sorted(ids)


def _full_disk(monkeypatch, message: str = "database or disk is full") -> None:
    real_connect = sqlite3.connect

    class Full(sqlite3.Connection):
        def execute(self, sql, *args):
            if sql.split()[0].upper() in ("INSERT", "UPDATE", "PRAGMA"):
                raise sqlite3.OperationalError(message)
            return super().execute(sql, *args)

    monkeypatch.setattr(
        store.sqlite3, "connect", lambda *a, **k: real_connect(*a, factory=Full, **k)
    )


def test_a_full_disk_while_writing_the_index_says_the_disk_is_full(tmp_path, monkeypatch):
    library = TakeLibrary(tmp_path / "home")
    [take_id] = _takes(library, 1)
    _full_disk(monkeypatch)
    for call in (lambda: library.star(take_id), lambda: _takes(library, 1)):
        with pytest.raises(NeuroChipError) as info:
            call()
        _one_line(str(info.value), "the disk is full: free some space")
    with pytest.raises(NeuroChipError) as info:
        TakeLibrary(tmp_path / "other")
    _one_line(str(info.value), "the disk is full: free some space")


def test_a_disk_error_in_the_index_is_said_in_words(tmp_path, monkeypatch):
    library = TakeLibrary(tmp_path / "home")
    [take_id] = _takes(library, 1)
    _full_disk(monkeypatch, "disk I/O error")
    with pytest.raises(NeuroChipError) as info:
        library.star(take_id)
    _one_line(str(info.value), "check the disk")


def test_serve_on_a_full_disk_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("fastapi")
    _full_disk(monkeypatch)
    _cli_error(capsys, ["serve", "--home", str(tmp_path / "home")], "the disk is full")
