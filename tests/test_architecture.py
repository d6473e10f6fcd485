"""The layout docs/ARCHITECTURE.md describes: no import cycles, storage apart from diffusion."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neurochip"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """neurochip modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("neurochip"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("neurochip")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        # The root package re-exports everything, and "from neurochip import __version__" is
        # a leaf fact, not a dependency on the modules it exports.
        targets = {t for t in imports_of(path) if t in modules and t != "neurochip"}
        edges[name] = {t for t in targets if t != name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back():
    assert find_cycle(graph()) is None


#: What belongs to one model's backend (Riffusion's), not to the engine they share.
MODEL_INSIDES = (
    "neurochip.engine.riffusion",
    "neurochip.model",
    "neurochip.feature_reuse",
    "neurochip.lora",
    "neurochip.preview_vae",
)


def packages_of(edges: dict[str, set[str]], module: str) -> set[str]:
    return {t for name, targets in edges.items() if name.startswith(module) for t in targets}


@pytest.mark.parametrize(
    ("layer", "must_not_reach"),
    [
        ("neurochip.library", ("neurochip.engine", "neurochip.model", "neurochip.mix")),
        ("neurochip.io", ("neurochip.synth", "neurochip.spectrogram", "neurochip.engine")),
        ("neurochip.synth", ("neurochip.sketch", "neurochip.engine")),
        ("neurochip.spectrogram", ("neurochip.engine", "neurochip.model")),
        ("neurochip.engine", ("neurochip.library", "neurochip.takeset", "neurochip.cli")),
        # A backend does not know the engine that drives it.
        ("neurochip.engine.riffusion", ("neurochip.engine.core", "neurochip.engine.registry")),
    ],
)
def test_layers_stay_apart(layer, must_not_reach):
    edges = graph()
    reached, todo = set(), [m for m in edges if within(m, layer)]
    while todo:
        for target in edges[todo.pop()]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    # Banned by prefix: neither neurochip.model nor neurochip.model_spec, say.
    assert not {r for r in reached if r.startswith(must_not_reach)}


def within(module: str, package: str) -> bool:
    """``module`` is ``package`` or inside it (``neurochip.engine_comparison`` is not in
    ``neurochip.engine``)."""
    return module == package or module.startswith(package + ".")


def test_front_ends_do_not_run_the_take_workflow_themselves():
    # The mixer and the engine's render are called by neurochip.takeset alone.
    root = PACKAGE.parent
    for path in [*root.glob("app/**/*.py"), *PACKAGE.glob("cli/*.py")]:
        text = path.read_text(encoding="utf-8")
        for call in (
            r"\bstereo_pair\(",
            r"\bcrossfade_compare\(",
            r"\.render\(",
            r"\btake_metadata\(",
        ):
            assert not re.search(call, text), f"{path.relative_to(root)} calls {call}"


def test_the_shared_engine_imports_no_model():
    """The engine every model shares knows no model: it reaches a backend only through the
    registry, which imports one by name when it is asked for (a ``ModelSpec`` it is handed
    may know its model's option values; the engine does not)."""
    edges = graph()
    for shared in ("core", "backend", "progress", "device", "regions", "registry"):
        module = f"neurochip.engine.{shared}"
        inside = {
            t for t in edges[module] for m in MODEL_INSIDES if t == m or t.startswith(m + ".")
        }
        assert not inside, module


#: Most lines a module of the package may have, and a class: past these a reader loses the
#: thread, and the module wants splitting along its data flow.
MODULE_LINES, CLASS_LINES = 700, 400


def test_modules_and_classes_stay_readable_in_size():
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE.parent)
        if text.count("\n") > MODULE_LINES:
            too_long.append(f"{where}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno >= CLASS_LINES:
                too_long.append(f"{where}: class {node.name}, {node.end_lineno - node.lineno + 1}")
    assert not too_long, too_long


def test_the_riffusion_denoising_path_reads_in_one_function():
    """One render's denoising path is one function a reader follows top to bottom."""
    path = PACKAGE / "engine" / "riffusion" / "pipeline.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    img2img = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "img2img")
    assert img2img.end_lineno - img2img.lineno + 1 <= 150
    steps = re.findall(r"# (\d)\. ", ast.get_source_segment(path.read_text(), img2img))
    assert steps == [str(n) for n in range(1, len(steps) + 1)] and len(steps) >= 5
