"""``neurochip batch``: songs x prompts x seeds from a manifest, resumable (tiny model)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from neurochip.batch import is_finished, load_manifest, run_batch
from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.library.store import TakeLibrary
from tests.chiptune import make_chiptune

SR = 44100


def soundtrack(folder: Path, songs: int = 3, seeds=(1, 2)) -> Path:
    for i in range(songs):
        sf.write(folder / f"level{i + 1}.wav", make_chiptune(1.5, seed=i).T, SR)
    listing = "\n".join(
        f'[[songs]]\npath = "level{i + 1}.wav"\nprompts = ["a funk band"]\nseeds = {list(seeds)}\n'
        for i in range(songs)
    )
    manifest = folder / "soundtrack.toml"
    manifest.write_text(
        'output = "out"\n\n[defaults]\nsteps = 2\ndenoise = 0.5\nphase_iterations = 0\n\n' + listing
    )
    return manifest


def test_a_manifest_renders_every_song_prompt_and_seed_and_a_rerun_skips_them(tiny_model, tmp_path):
    items = load_manifest(soundtrack(tmp_path))
    assert [(i.song.name, i.settings.seed) for i in items] == [
        (f"level{n}.wav", seed) for n in (1, 2, 3) for seed in (1, 2)
    ]
    engine = Engine(tiny_model)
    first = run_batch(engine, items)
    assert len(first.rendered) == 6 and not first.failed
    for item in items:
        assert is_finished(item)
        assert sf.info(item.output).frames == round(1.5 * SR)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [row["status"] for row in index] == ["done"] * 6
    assert all(0.0 <= row["notes_kept"] <= 1.0 for row in index)  # counted as notes
    csv_text = (tmp_path / "out" / "index.csv").read_text()
    assert csv_text.count("\n") == 7 and "notes_kept" in csv_text.splitlines()[0]

    # A stop half-way (here: one file lost) is finished by running again; the rest is skipped.
    items[3].output.unlink()
    before = sf.read(items[0].output)[0]
    again = run_batch(engine, items)
    assert again.rendered == [items[3].key] and len(again.skipped) == 5
    np.testing.assert_array_equal(sf.read(items[0].output)[0], before)  # untouched


def test_an_items_files_are_written_while_the_next_item_renders(tiny_model, tmp_path, monkeypatch):
    from neurochip import batch as batch_module
    from neurochip.takeset import TakeSet

    items = load_manifest(soundtrack(tmp_path, songs=3, seeds=(1,)))
    renders: list[threading.Event] = [threading.Event() for _ in items]
    real_render, real_write = batch_module.render_take_set, TakeSet.write
    overlapped = []

    def render(*args, **kwargs):
        renders[len([e for e in renders if e.is_set()])].set()
        return real_render(*args, **kwargs)

    def write(self, path, *args, **kwargs):
        number = [i.output for i in items].index(path)
        if number == 1:
            raise NeuroChipError("The disk is full: free some space and run the batch again.")
        if number + 1 < len(items):  # the next item's render has begun while this is written
            overlapped.append(renders[number + 1].wait(timeout=60))
        return real_write(self, path, *args, **kwargs)

    monkeypatch.setattr(batch_module, "render_take_set", render)
    monkeypatch.setattr(TakeSet, "write", write)
    report = run_batch(Engine(tiny_model), items)
    assert overlapped == [True]  # item 0's write waited for item 1's render to start
    assert report.rendered == [items[0].key, items[2].key]
    assert report.failed == {
        items[1].key: "The disk is full: free some space and run the batch again."
    }
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [(row["item"], row["status"]) for row in index] == [
        (items[0].key, "done"),
        (items[1].key, "failed"),
        (items[2].key, "done"),
    ]
    assert is_finished(items[0]) and is_finished(items[2]) and not is_finished(items[1])


def test_a_changed_setting_renders_the_item_again(tiny_model, tmp_path):
    manifest = soundtrack(tmp_path, songs=1, seeds=(1,))
    engine = Engine(tiny_model)
    run_batch(engine, load_manifest(manifest))
    manifest.write_text(manifest.read_text().replace("denoise = 0.5", "denoise = 0.6"))
    [item] = load_manifest(manifest)
    assert not is_finished(item)
    assert run_batch(engine, [item]).rendered == [item.key]


def test_a_song_that_fails_is_listed_and_the_batch_goes_on(tiny_model, tmp_path):
    manifest = soundtrack(tmp_path, songs=2, seeds=(1,))
    (tmp_path / "level1.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    report = run_batch(Engine(tiny_model), load_manifest(manifest))
    assert list(report.failed) == ["level1-p1-seed1"] and report.rendered == ["level2-p1-seed1"]
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index[0]["status"] == "failed" and "level1.wav" in index[0]["error"]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("output = 'x'\n", r"at least one \[\[songs\]\]"),
        ("[[songs]]\npath = 'level1.wav'\n", "give its prompts"),
        ("[[songs]]\npath = 'nope.wav'\nprompts = ['x']\n", "no such file"),
        (
            "[[songs]]\npath = 'level1.wav'\nprompts = ['x']\ndenoise = 7\n",
            "Denoise must be between 0 and 1",
        ),
        ("[[songs]]\npath = 'level1.wav'\nprompts = ['x']\nvolume = 11\n", "unknown settings"),
        ("[[songs]]\npath = 'level1.wav'\nprompts = ['x']\nseeds = ['a']\n", "whole numbers"),
        ("[[songs\n", "not valid TOML"),
    ],
)
def test_a_bad_manifest_is_said_before_anything_renders(tmp_path, text, said):
    sf.write(tmp_path / "level1.wav", make_chiptune(1.0).T, SR)
    manifest = tmp_path / "bad.toml"
    manifest.write_text(text)
    with pytest.raises(NeuroChipError, match=said):
        load_manifest(manifest)


def test_the_batch_command_says_what_it_did(tmp_path, tiny_model_dir, capsys, private_take_library):
    from neurochip.cli import main

    manifest = soundtrack(tmp_path, songs=1, seeds=(1, 2))
    assert main(["batch", str(manifest), "--model", str(tiny_model_dir)]) == 0
    assert "Rendered 2, skipped 0" in capsys.readouterr().out
    assert main(["batch", str(manifest), "--model", "/no/such/model"]) == 0  # nothing to load
    assert "2 done before, 0 to render" in capsys.readouterr().err


# --- what a batch may write (issue 22) --------------------------------------------------------


def manifest_writing_to(folder: Path, output: str, songs=("level1.wav",)) -> Path:
    """A manifest in ``folder`` writing to ``output``, its songs made where they are named."""
    for i, song in enumerate(songs):
        (folder / song).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / song, make_chiptune(1.0, seed=i).T, SR)
    listing = "".join(
        f'[[songs]]\npath = "{song}"\nprompts = ["x"]\nseeds = [1]\n' for song in songs
    )
    manifest = folder / "soundtrack.toml"
    manifest.write_text(f"output = {json.dumps(output)}\n\n" + listing)
    return manifest


def digests(folder: Path) -> dict[str, bytes]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).digest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("output", ["../escaped-out", "../../escaped-out", "{abs}", "link/out"])
def test_a_manifest_output_outside_the_manifests_folder_is_refused(tmp_path, output):
    project, elsewhere = tmp_path / "a" / "project", tmp_path / "elsewhere"
    project.mkdir(parents=True)
    elsewhere.mkdir()
    (project / "link").symlink_to(elsewhere, target_is_directory=True)
    output = output.format(abs=elsewhere / "out")
    with pytest.raises(NeuroChipError, match="outside the manifest's folder.*--output"):
        load_manifest(manifest_writing_to(project, output))
    # Given on the command line, a folder anywhere is the composer's own choice.
    [item] = load_manifest(project / "soundtrack.toml", output=elsewhere / "renders")
    assert item.output.parents[1] == elsewhere / "renders"


@pytest.mark.parametrize("output", [".", "renders", "renders/../out", "./deep/er"])
def test_a_manifest_output_inside_its_folder_is_taken(tmp_path, output):
    [item] = load_manifest(manifest_writing_to(tmp_path, output))
    assert item.output.parents[1] == tmp_path / output


def test_a_batch_never_replaces_one_of_its_songs(tmp_path, capsys, monkeypatch):
    from neurochip.cli import main

    # Song "x" renders to ./x/x-p1-seed1.wav: where the second song is.
    manifest = manifest_writing_to(tmp_path, ".", songs=("x.wav", "x/x-p1-seed1.wav"))
    before = digests(tmp_path)
    with pytest.raises(NeuroChipError, match="replace your input x-p1-seed1.wav"):
        load_manifest(manifest)
    monkeypatch.setattr(Engine, "from_pretrained", classmethod(lambda *a, **k: 1 / 0))
    assert main(["batch", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurochip: ") and err.count("\n") == 1 and "x-p1-seed1.wav" in err
    assert digests(tmp_path) == before


@pytest.mark.parametrize(
    ("theirs", "named"),
    [
        ({"index.json": '{"my": "own index"}'}, "index.json"),
        ({"index.json": "[]"}, "index.json"),
        ({"index.csv": "my,own\n"}, "index.csv"),  # no index.json of ours beside it
        ({"index.json": '[{"item": "x"}]', "index.csv": "a\n"}, "index.json"),
        ({"level1/level1-p1-seed1.wav": "RIFF my own mixdown"}, "level1-p1-seed1.wav"),
        ({"level1/level1-p1-seed1.json": "{}"}, "level1-p1-seed1.json"),
    ],
)
def test_a_batch_never_replaces_a_file_neurochip_did_not_write(tmp_path, theirs, named):
    manifest = manifest_writing_to(tmp_path, "out")
    for name, text in theirs.items():
        (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / name).write_text(text)
    before = digests(tmp_path)
    with pytest.raises(NeuroChipError, match=f"{named} already exists.*move it"):
        load_manifest(manifest)
    assert digests(tmp_path) == before


def test_a_batch_index_neurochip_wrote_is_its_own_to_replace(tmp_path):
    from neurochip.batch import check_batch_outputs, index_row, write_index

    manifest = manifest_writing_to(tmp_path, "out")
    [item] = load_manifest(manifest)
    write_index(tmp_path / "out", {item.key: {**index_row(item), "status": "done"}})
    assert json.loads((tmp_path / "out" / "index.json").read_text())[0]["item"] == item.key
    assert load_manifest(manifest) == [item]
    # An index.json of an older NeuroChip (rows without their format) is ours too.
    (tmp_path / "out" / "index.json").write_text(json.dumps([{**index_row(item), "status": "x"}]))
    check_batch_outputs([item])


def test_a_batch_never_writes_inside_the_take_library(tmp_path, private_take_library):
    manifest = manifest_writing_to(tmp_path, "out")
    with pytest.raises(NeuroChipError, match="inside the take library"):
        load_manifest(manifest, output=private_take_library / "renders")
    [item] = load_manifest(manifest)
    with pytest.raises(NeuroChipError, match="inside the take library"):
        run_batch(None, [item], library=TakeLibrary(tmp_path / "out"))  # type: ignore[arg-type]


def test_run_batch_checks_its_files_before_rendering(tmp_path):
    [item] = load_manifest(manifest_writing_to(tmp_path, "out"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "index.csv").write_text("my,own\n")  # arrived after the load
    with pytest.raises(NeuroChipError, match="index.csv already exists"):
        run_batch(None, [item])  # type: ignore[arg-type]
    assert (tmp_path / "out" / "index.csv").read_text() == "my,own\n"


def test_the_batch_command_takes_an_output_folder(tmp_path, capsys, monkeypatch):
    from neurochip.cli import main

    manifest = manifest_writing_to(tmp_path, "/tmp/escaped-out")
    assert main(["batch", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("neurochip: ") and err.count("\n") == 1 and "outside" in err
    loaded = []

    def stop(*args, **kwargs):
        loaded.append(True)
        raise NeuroChipError("stopped before the model")

    monkeypatch.setattr(Engine, "from_pretrained", classmethod(stop))
    assert main(["batch", str(manifest), "--output", str(tmp_path / "renders")]) == 2
    assert loaded and "stopped before the model" in capsys.readouterr().err


# --- on a Ray cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance on this machine's CPUs (what `neurochip batch --ray local` starts)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_gives_the_takes_the_embedded_batch_gives(
    local_ray, tiny_model, tiny_model_dir, tmp_path
):
    from neurochip.cluster import run_batch_on_ray
    from neurochip.model_spec import ModelSpec

    embedded_folder, ray_folder = tmp_path / "embedded", tmp_path / "ray"
    embedded_folder.mkdir()
    ray_folder.mkdir()
    embedded = load_manifest(soundtrack(embedded_folder))
    on_ray = load_manifest(soundtrack(ray_folder))
    embedded_library, ray_library = TakeLibrary(tmp_path / "lib1"), TakeLibrary(tmp_path / "lib2")
    run_batch(Engine(tiny_model), embedded, library=embedded_library)
    model = ModelSpec(source=str(tiny_model_dir), device="cpu")
    report = run_batch_on_ray(on_ray, model, workers=2, library=ray_library)
    assert sorted(report.rendered) == sorted(item.key for item in on_ray) and not report.failed
    for mine, theirs in zip(embedded, on_ray, strict=True):
        # The same takes: Ray runs a worker on one thread, so float sums may round apart by
        # a hair, one step of 16-bit audio at most.
        np.testing.assert_allclose(
            sf.read(mine.output)[0], sf.read(theirs.output)[0], atol=1.5 / 32768
        )
        assert is_finished(theirs)
    index = json.loads((ray_folder / "out" / "index.json").read_text())
    assert sorted(row["item"] for row in index) == sorted(item.key for item in on_ray)
    # The library lists the same takes, each with its picture (the pair shows take A's).
    kept = {library: library.list() for library in (embedded_library, ray_library)}
    assert len(kept[ray_library]) == len(kept[embedded_library]) > 0
    for take in kept[ray_library]:
        assert take.thumbnail_path is not None, take.kind
    pictures = {
        library: {(t.name, t.kind): np.asarray(Image.open(t.thumbnail_path)) for t in takes}
        for library, takes in kept.items()
    }
    assert pictures[ray_library].keys() == pictures[embedded_library].keys()
    for key, picture in pictures[ray_library].items():
        mine = pictures[embedded_library][key].astype(int)
        assert picture.shape == mine.shape and np.abs(picture - mine).max() <= 2, key
    assert run_batch_on_ray(on_ray, model, workers=2).skipped == [i.key for i in on_ray]


def test_a_ray_worker_killed_mid_run_loses_nothing(local_ray, tiny_model_dir, tmp_path):
    from neurochip.cluster import run_batch_on_ray
    from neurochip.model_spec import ModelSpec

    items = load_manifest(soundtrack(tmp_path))
    killed = []

    def kill_a_busy_worker(pending):
        if not killed and pending:
            worker, item = next(iter(pending.values()))
            local_ray.kill(worker)  # as a lost machine: its item is under way
            killed.append(item.key)

    model = ModelSpec(source=str(tiny_model_dir), device="cpu")
    report = run_batch_on_ray(items, model, workers=2, on_submitted=kill_a_busy_worker)
    assert killed and killed[0] in report.rendered
    assert sorted(report.rendered) == sorted(item.key for item in items) and not report.failed
    assert all(is_finished(item) for item in items)
