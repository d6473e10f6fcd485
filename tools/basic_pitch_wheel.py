#!/usr/bin/env python3
"""Build ``basic_pitch-0.4.0+onnx-py2.py3-none-any.whl``: Spotify's basic-pitch without TensorFlow.

Why: neurochip counts the notes in a take with basic-pitch (ICASSP 2022), running the ONNX model
that ships inside its wheel (``basic_pitch/saved_models/icassp_2022/nmp.onnx``) through
onnxruntime, nothing else. But the metadata of basic-pitch 0.4.0 (the newest release) requires

* TensorFlow (``tensorflow<2.15.1``) on Linux and Windows with Python >= 3.11: gigabytes this
  project never imports, and no wheel for the Pythons it runs on;
* ``resampy<0.4.3``, yet resampy 0.4.2 imports ``pkg_resources``, which current setuptools no
  longer ships (resampy 0.4.3 only replaced that import).

Installing it with ``--no-deps`` would leave ``pip check`` failing, or force us to hide a real
unmet requirement. Instead this script takes the official wheel from PyPI (checked against the
sha256 below) and writes a copy that is identical byte for byte except for its metadata:

* the version gets a local label, ``0.4.0+onnx`` (so ``basic-pitch==0.4.0`` still matches, and
  the installed distribution says it is not the PyPI build); the ``.dist-info`` folder follows;
* the unconditional TensorFlow / tensorflow-macos / tflite-runtime / coremltools requirements
  and the Windows-only onnxruntime one become ``onnxruntime>=1.16``;
* ``resampy<0.4.3,>=0.2.2`` becomes ``resampy>=0.2.2``;
* RECORD lists the new sha256 and size of every file.

The extras' requirements (``basic-pitch[tf]`` and so on) are left as they are.

Usage (the Makefile and the Dockerfile run it, then ``pip install`` the result)::

    python packaging/basic_pitch_wheel.py OUTDIR            # pip download from PyPI
    python packaging/basic_pitch_wheel.py --from WHEEL OUTDIR

The official wheel is kept in OUTDIR next to the new one, so later runs need no network. Running
it again writes the same bytes. A wheel whose sha256 differs is refused (exit status 1).
Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "0.4.0"
LOCAL_VERSION = f"{VERSION}+onnx"
ORIGINAL = f"basic_pitch-{VERSION}-py2.py3-none-any.whl"
PATCHED = f"basic_pitch-{LOCAL_VERSION}-py2.py3-none-any.whl"
#: sha256 of ORIGINAL as PyPI serves it (https://pypi.org/project/basic-pitch/0.4.0/#files).
ORIGINAL_SHA256 = "738adb503aae7fdfc7d1e1511aa0ce35052315f260a19531ef4c356708425db0"

OLD_INFO = f"basic_pitch-{VERSION}.dist-info/"
NEW_INFO = f"basic_pitch-{LOCAL_VERSION}.dist-info/"

#: Requirements (not an extra's) that go: none of them is needed to run the ONNX model.
DROPPED = (
    'tensorflow<2.15.1,>=2.4.1; platform_system != "Darwin" and python_version >= "3.11"',
    'coremltools; platform_system == "Darwin"',
    'tensorflow-macos<2.15.1,>=2.4.1; platform_system == "Darwin" and python_version > "3.11"',
    'tflite-runtime; platform_system == "Linux" and python_version < "3.11"',
    'onnxruntime; platform_system == "Windows" and python_version < "3.11"',
)
#: ... and what takes their place (at the first one's position).
ADDED = "onnxruntime>=1.16"
#: Requirements that are relaxed: resampy 0.4.3 is 0.4.2 without ``import pkg_resources``.
RELAXED = {"resampy<0.4.3,>=0.2.2": "resampy>=0.2.2"}

REQUIRES = "Requires-Dist: "


class Refused(Exception):
    """The input is not the wheel this script knows how to rewrite."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_original(path: Path) -> None:
    if not path.is_file():
        raise Refused(f"{path}: no such file")
    found = sha256_of(path)
    if found != ORIGINAL_SHA256:
        raise Refused(
            f"{path}: sha256 {found}, expected {ORIGINAL_SHA256} "
            f"(the official {ORIGINAL} from PyPI); delete it or pass the right file"
        )


def copy_atomically(source: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".part")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def obtain_original(source: Path | None, out: Path) -> Path:
    """The official wheel, checked and kept as ``out/ORIGINAL``; downloaded only if needed."""
    kept = out / ORIGINAL
    if source is not None:
        check_original(source)
        if not kept.exists() or not kept.samefile(source):
            copy_atomically(source, kept)
            print(f"kept a copy of {source} as {kept}")
        return kept
    if kept.exists():
        check_original(kept)
        return kept
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["-d", tmp, f"basic-pitch=={VERSION}"]
        print("$", " ".join(command))
        if subprocess.run(command).returncode != 0:
            raise Refused(f"pip download of basic-pitch=={VERSION} failed (see above)")
        downloaded = Path(tmp) / ORIGINAL
        check_original(downloaded)
        copy_atomically(downloaded, kept)
    return kept


def patch_metadata(text: str) -> tuple[str, list[str]]:
    """METADATA with the new version and requirements, and a line per change."""
    head, blank, body = text.partition("\n\n")  # headers, then the long description
    lines = head.split("\n")
    changes: list[str] = []

    def replace(old: str, new: str | None) -> int:
        where = [i for i, line in enumerate(lines) if line == old]
        if len(where) != 1:
            raise Refused(f"METADATA: expected the line {old!r} once, found it {len(where)} times")
        if new is None:
            del lines[where[0]]
            changes.append(f"METADATA: dropped {old!r}")
        else:
            lines[where[0]] = new
            changes.append(f"METADATA: {old!r} -> {new!r}")
        return where[0]

    replace(f"Version: {VERSION}", f"Version: {LOCAL_VERSION}")
    for old, new in RELAXED.items():
        replace(REQUIRES + old, REQUIRES + new)
    position = min(replace(REQUIRES + old, None) for old in DROPPED)
    lines.insert(position, REQUIRES + ADDED)
    changes.append(f"METADATA: added {REQUIRES + ADDED!r}")
    return "\n".join(lines) + blank + body, changes


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def build(original: Path, target: Path) -> list[str]:
    """Write the rewritten wheel to ``target``; the changes made, one line each."""
    changes = [f"renamed {OLD_INFO} -> {NEW_INFO}"]
    record: list[str] = []
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(target, "w") as wheel:
        infos = source.infolist()
        if not any(info.filename == OLD_INFO + "RECORD" for info in infos):
            raise Refused(f"{original}: no {OLD_INFO}RECORD")
        for info in infos:
            name = info.filename
            if name.startswith(OLD_INFO):
                name = NEW_INFO + name[len(OLD_INFO) :]
            data = source.read(info)
            if name == NEW_INFO + "METADATA":
                text, metadata_changes = patch_metadata(data.decode("utf-8"))
                data = text.encode("utf-8")
                changes += metadata_changes
            if name == NEW_INFO + "RECORD":
                record.append(f"{name},,")
                data = ("\n".join(record) + "\n").encode("utf-8")
                changes.append(f"RECORD: rewrote the sha256 and size of {len(record) - 1} files")
            else:
                record.append(f"{name},{record_hash(data)},{len(data)}")
            # Same order, timestamps, permissions and compression as the original.
            copy = zipfile.ZipInfo(name, date_time=info.date_time)
            copy.compress_type = info.compress_type
            copy.external_attr = info.external_attr
            copy.create_system = info.create_system
            wheel.writestr(copy, data)
        if not record[-1].endswith(",,"):
            raise Refused(f"{original}: {OLD_INFO}RECORD is not the last entry")
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for both wheels (created if missing)")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="WHEEL",
        help=f"the official {ORIGINAL} (default: pip download it, unless OUTDIR keeps it)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    target = out / PATCHED
    partial = target.with_name(target.name + ".part")
    try:
        original = obtain_original(args.source, out)
        changes = build(original, partial)
    except Refused as error:
        partial.unlink(missing_ok=True)
        print(f"basic_pitch_wheel.py: error: {error}", file=sys.stderr)
        return 1
    print(f"{PATCHED} from {ORIGINAL} (sha256 {ORIGINAL_SHA256[:12]}... verified):")
    for change in changes:
        print("  " + change)
    if target.is_file() and target.read_bytes() == partial.read_bytes():
        partial.unlink()
        print(f"{target}: already up to date")
    else:
        os.replace(partial, target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
