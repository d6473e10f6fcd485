"""Packaging: pyproject.toml declares everything the code imports, so `pip install .` works.

Every ``import`` in the source (inside functions too) is mapped to the distribution that
provides it, and that distribution must be declared where the code runs: the core
dependencies for ``neurochip/``, core or ``[app]`` for ``app/``, any of them or ``[dev]`` for
``tests/`` and ``bench/``. Declared dependencies carry version floors, requirements*.txt pins
each of them, and the wheel holds every module of the package.

One exception, checked rather than assumed: basic-pitch, which the Makefile installs from a
wheel that tools/basic_pitch_wheel.py rewrites (its PyPI metadata requires TensorFlow).
"""

from __future__ import annotations

import ast
import base64
import csv
import hashlib
import importlib
import io
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, packages_distributions, requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "neurochip"
FIRST_PARTY = {"neurochip", "app", "tests", "bench"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(group: str) -> list[Requirement]:
    """``core`` (the dependencies) or an extra's, as written."""
    project = _project()
    specs = project["dependencies"] if group == "core" else project["optional-dependencies"][group]
    return [Requirement(spec) for spec in specs]


def declared(*groups: str) -> set[str]:
    """Distributions the groups install, following ``neurochip[...]`` self-references."""
    names: set[str] = set()
    todo, seen = list(groups), set()
    while todo:
        group = todo.pop()
        if group in seen:
            continue
        seen.add(group)
        for req in _requirements(group):
            if canonicalize_name(req.name) == PROJECT:
                todo.extend(["core", *req.extras])
            else:
                names.add(canonicalize_name(req.name))
    return names


#: Distributions the code imports that pyproject.toml cannot declare, with what installs them.
#: basic-pitch 0.4.0's PyPI metadata requires TensorFlow, which neurochip never uses (it runs the
#: ONNX model through onnxruntime); the Makefile (and the Dockerfile) install a copy of the
#: official wheel whose metadata needs onnxruntime instead, version 0.4.0+onnx.
#: test_what_the_makefile_installs_is_installed_and_satisfied checks that this holds.
INSTALLED_BY_MAKEFILE = {"basic-pitch": "tools/basic_pitch_wheel.py"}


def allowed(*groups: str) -> set[str]:
    """What code run with these groups installed may import: declared, or installed by make."""
    return declared(*groups) | set(INSTALLED_BY_MAKEFILE)


def imported_modules(path: Path) -> dict[str, int]:
    """Top-level names of the absolute imports in one file, anywhere in it, with a line each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.partition(".")[0], node.lineno)
    return found


def undeclared(files: Iterable[Path], allowed: set[str]) -> list[str]:
    """``file:line: import x (distribution y)`` for each third-party import not in allowed."""
    providers = packages_distributions()
    problems = []
    for path in sorted(files):
        for module, line in sorted(imported_modules(path).items()):
            if module in sys.stdlib_module_names or module in FIRST_PARTY:
                continue
            if (path.parent / f"{module}.py").exists():
                continue  # a script's sibling (bench/preview.py imports bench/render.py)
            dists = {canonicalize_name(d) for d in providers.get(module, ())}
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            if not dists:
                problems.append(f"{where}:{line}: import {module} (no installed distribution)")
            elif not dists & allowed:
                problems.append(f"{where}:{line}: import {module} ({', '.join(sorted(dists))})")
    return problems


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")]


#: Parts of neurochip/ that need an extra, as the app does: the HTTP server (``neurochip
#: serve``) and batch renders on Ray (``neurochip batch --ray``).
EXTRA_FILES = {
    "server": {
        ROOT / "neurochip" / "cli" / "serve.py",
        *(ROOT / "neurochip" / "server").rglob("*.py"),
    },
    "cluster": {ROOT / "neurochip" / "cluster.py", ROOT / "neurochip" / "cli" / "batch.py"},
}


def test_neurochip_imports_are_core_dependencies():
    extras = set().union(*EXTRA_FILES.values())
    files = [p for p in python_files("neurochip") if p not in extras]
    problems = undeclared(files, allowed("core"))
    assert not problems, "Declare these in [project] dependencies:\n" + "\n".join(problems)


@pytest.mark.parametrize("extra", sorted(EXTRA_FILES))
def test_the_imports_of_an_extras_part_are_declared(extra):
    problems = undeclared(EXTRA_FILES[extra], allowed("core", extra))
    assert not problems, f"Declare these in the [{extra}] extra:\n" + "\n".join(problems)


def test_app_imports_are_declared():
    problems = undeclared(python_files("app"), allowed("core", "app"))
    assert not problems, "Declare these in the [app] extra:\n" + "\n".join(problems)


def test_test_and_bench_imports_are_declared():
    problems = undeclared(
        python_files("tests", "bench"), allowed("core", "app", "server", "cluster", "dev")
    )
    assert not problems, "Declare these in the [dev] extra:\n" + "\n".join(problems)


#: Distributions that must never come in with basic-pitch (what its PyPI metadata asks for).
TENSORFLOW = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos"}
TENSORFLOW |= {"tflite-runtime", "coremltools"}


def _applies(req: Requirement) -> bool:
    """Whether a distribution's requirement applies here, to a plain (no extras) install."""
    return req.marker is None or req.marker.evaluate({"extra": ""})


@pytest.mark.parametrize("dist", sorted(INSTALLED_BY_MAKEFILE))
def test_what_the_makefile_installs_is_installed_and_satisfied(dist):
    """The exception in INSTALLED_BY_MAKEFILE holds: installed as make does, nothing unmet.

    The same check as ``pip check`` for this distribution, so a plain ``pip install basic-pitch``
    (TensorFlow and all) or a ``--no-deps`` install of the PyPI wheel cannot pass for it.
    """
    script = INSTALLED_BY_MAKEFILE[dist]
    assert (ROOT / script).is_file()
    for recipe in ("Makefile", "Dockerfile"):
        assert script in (ROOT / recipe).read_text(), f"{recipe} does not run {script}"
    try:
        installed = Version(version(dist))
    except PackageNotFoundError:
        pytest.fail(f"{dist} is not installed: `make install` installs it (via {script})")
    assert installed.local == "onnx", f"{dist} {installed} is not the one {script} builds"
    problems = []
    for spec in requires(dist) or []:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if not _applies(req):
            continue
        if name in TENSORFLOW:
            problems.append(f"requires {req}")
            continue
        try:
            found = Version(version(name))
        except PackageNotFoundError:
            problems.append(f"requires {req}, which is not installed")
            continue
        if not req.specifier.contains(found, prereleases=True):
            problems.append(f"requires {req}, but {name} {found} is installed")
    assert not problems, f"{dist} {installed}:\n" + "\n".join(problems)
    for name in sorted(TENSORFLOW):
        with pytest.raises(PackageNotFoundError):
            version(name)


BASIC_PITCH = "basic_pitch-0.4.0-py2.py3-none-any.whl"
BASIC_PITCH_ONNX = "basic_pitch-0.4.0+onnx-py2.py3-none-any.whl"


def _basic_pitch_wheel(*args: str) -> subprocess.CompletedProcess[str]:
    script = ROOT / INSTALLED_BY_MAKEFILE["basic-pitch"]
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120
    )


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def test_the_basic_pitch_wheel_differs_from_the_official_one_in_metadata_only(tmp_path):
    """tools/basic_pitch_wheel.py, run offline on the official wheel the Makefile keeps."""
    original = Path(sys.prefix) / "wheels" / BASIC_PITCH
    if not original.is_file():
        pytest.skip(f"no {original}: `make install` downloads it (the tests use no network)")
    result = _basic_pitch_wheel("--from", str(original), str(tmp_path))
    assert result.returncode == 0, result.stderr
    built = tmp_path / BASIC_PITCH_ONNX
    assert "tensorflow" in result.stdout  # it says what it dropped

    old_info, new_info = "basic_pitch-0.4.0.dist-info/", "basic_pitch-0.4.0+onnx.dist-info/"
    with zipfile.ZipFile(original) as before, zipfile.ZipFile(built) as after:
        old = {
            info.filename.replace(old_info, new_info): before.read(info)
            for info in before.infolist()
        }
        new = {info.filename: after.read(info) for info in after.infolist()}
    assert list(new) == list(old)
    changed = {name for name in new if new[name] != old[name]}
    assert changed == {new_info + "METADATA", new_info + "RECORD"}
    assert new["basic_pitch/saved_models/icassp_2022/nmp.onnx"]

    rows = list(csv.reader(io.StringIO(new[new_info + "RECORD"].decode())))
    assert [row[0] for row in rows] == list(new)
    for path, digest, size in rows:
        if path == new_info + "RECORD":
            assert (digest, size) == ("", "")
        else:
            assert (digest, size) == (_record_hash(new[path]), str(len(new[path]))), path

    metadata = new[new_info + "METADATA"].decode()
    headers = metadata.partition("\n\n")[0].splitlines()
    assert "Version: 0.4.0+onnx" in headers
    reqs = [Requirement(h.split(": ", 1)[1]) for h in headers if h.startswith("Requires-Dist:")]
    plain = {canonicalize_name(r.name): r for r in reqs if "extra" not in str(r.marker or "")}
    assert not set(plain) & TENSORFLOW
    assert all(r.marker is None for r in plain.values()), "the same on every platform"
    assert str(plain["onnxruntime"].specifier) == ">=1.16"
    assert str(plain["resampy"].specifier) == ">=0.2.2"
    # Nothing else moved: the headers and the long description, line for line.
    removed = Counter(old[new_info + "METADATA"].decode().splitlines())
    removed.subtract(metadata.splitlines())
    assert {line for line, n in removed.items() if n < 0} == {
        "Version: 0.4.0+onnx",
        "Requires-Dist: onnxruntime>=1.16",
        "Requires-Dist: resampy>=0.2.2",
    }
    assert sum(n for n in removed.values() if n > 0) == 7  # version, resampy and 5 dropped

    again = _basic_pitch_wheel("--from", str(original), str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "already up to date" in again.stdout
    with zipfile.ZipFile(built) as rebuilt:
        assert {i.filename: rebuilt.read(i) for i in rebuilt.infolist()} == new


def test_the_basic_pitch_wheel_script_refuses_another_file(tmp_path):
    impostor = tmp_path / "in" / BASIC_PITCH
    impostor.parent.mkdir()
    impostor.write_bytes(b"not the wheel from PyPI")
    result = _basic_pitch_wheel("--from", str(impostor), str(tmp_path / "out"))
    assert result.returncode == 1
    assert "sha256" in result.stderr
    assert not list((tmp_path / "out").iterdir())


def test_the_check_catches_an_undeclared_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text(
        "import os\n"
        "import numpy as np\n"
        "from neurochip.io import Audio\n"
        "from . import sibling\n"
        "\n"
        "def load(path):\n"
        "    import yaml\n"
        "    from surely_nobody_ships_this.sub import thing\n"
    )
    problems = undeclared([module], declared("core"))
    assert [p.split(": ", 1)[1].split(" (")[0] for p in problems] == [
        "import surely_nobody_ships_this",
        "import yaml",
    ]
    assert "module.py:7:" in problems[1]
    assert undeclared([module], declared("core") | {"pyyaml"}) == problems[:1]


def test_every_dependency_has_a_version_floor():
    project = _project()
    groups = ["core", *project["optional-dependencies"]]
    for group in groups:
        for req in _requirements(group):
            if canonicalize_name(req.name) == PROJECT:
                continue
            operators = {spec.operator for spec in req.specifier}
            assert ">=" in operators, f"{group}: {req} needs a floor (>=)"
            assert "==" not in operators, f"{group}: {req}: exact pins go in requirements.txt"


def _pins() -> dict[str, Version]:
    pins = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.partition("#")[0].strip()
            if match := re.fullmatch(r"([A-Za-z0-9._-]+)\s*==\s*(\S+)", line):
                pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_requirements_pin_every_dependency_at_or_above_its_floor():
    pins = _pins()
    project = _project()
    for group in ["core", *project["optional-dependencies"]]:
        for req in _requirements(group):
            name = canonicalize_name(req.name)
            if name == PROJECT:
                continue
            assert name in pins, f"{req.name} ({group}) is not pinned in requirements*.txt"
            pin = Version(pins[name].base_version)  # torch==2.13.0+cpu counts as 2.13.0
            assert req.specifier.contains(pin, prereleases=True), (
                f"{req.name}=={pins[name]} in requirements*.txt is outside {req} in pyproject"
            )


def test_console_scripts_point_at_callables():
    scripts = _project()["scripts"]
    assert "neurochip" in scripts
    for name, target in scripts.items():
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part, None)
        assert callable(obj), f"console script {name} -> {target} is not a callable"


def test_every_source_folder_is_a_package():
    """setuptools only ships folders with an __init__.py, and no data files unless told to."""
    for folder in (ROOT / "neurochip").rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__" and any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)}: no __init__"
    extra = [
        p.relative_to(ROOT)
        for p in (ROOT / "neurochip").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert not extra, f"not shipped in the wheel without [tool.setuptools.package-data]: {extra}"


def test_the_wheel_holds_the_whole_package(tmp_path):
    """Build the wheel (no dependencies, no network) and look inside."""
    pytest.importorskip("setuptools", minversion="77")  # the build backend pyproject names
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "neurochip", source / "neurochip", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("neurochip-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        requires = [
            line.split(":", 1)[1].strip()
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
        entry_points = archive.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    modules = {p.relative_to(source).as_posix() for p in (source / "neurochip").rglob("*.py")}
    assert not modules - names, f"missing from the wheel: {sorted(modules - names)}"
    core = {canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r}
    assert core == declared("core")
    assert "neurochip = neurochip.cli:main" in entry_points
