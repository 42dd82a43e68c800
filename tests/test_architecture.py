"""The package's shape: no import cycle, the model families apart, files a reader can take in, a public API.

The import graph is read from the source (``ast``), every ``import`` counted, the ones inside functions too: a
cycle hidden behind a function-level import is still a cycle for the reader, and it breaks as soon as someone
moves the import to the top.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import minidetr

ROOT = Path(minidetr.__file__).parent
MAX_LINES = 310  # "about 300 lines or fewer" per file


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The minidetr modules an import statement loads (a ``from pkg import name`` loads ``pkg.name`` when that
    is a module, else ``pkg`` itself)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "minidetr"]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "minidetr":
        return []
    found = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return found if len(found) == len(node.names) else [*found, target]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(t for t in resolve(name, is_package, node) if t in MODULES and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "minidetr.train.run" in graph["minidetr.train.cli"]  # from .run import ...
    assert "minidetr.criterion" in graph["minidetr.train.builders"]  # from ..criterion import ...
    assert "minidetr.boxes" in graph["minidetr.models.rtdetr.denoising"]  # from ...boxes import ...


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    ("family", "other"),
    [("detr", "rtdetr"), ("rtdetr", "detr"), ("rtdetr", "dfine"), ("detr", "dfine"), ("dfine", "detr")],
)
def test_a_model_family_never_imports_the_other(family, other):
    graph = import_graph()
    prefix, forbidden = f"minidetr.models.{family}", f"minidetr.models.{other}"
    for module, edges in graph.items():
        if module == prefix or module.startswith(prefix + "."):
            assert not [e for e in edges if e == forbidden or e.startswith(forbidden + ".")], module
            assert "minidetr.models.build" not in edges and "minidetr.models" not in edges, module


def test_lower_layers_never_import_training_or_apps():
    graph = import_graph()
    # minidetr.data.preview is an application (python -m minidetr.data.preview reads the training config), like
    # predict: it may import training, and no lower module may import it
    upper = ("minidetr.train", "minidetr.predict", "minidetr.viz", "minidetr.course", "minidetr.data.preview")
    lower = [m for m in graph if m.startswith(("minidetr.models", "minidetr.data")) and m != "minidetr.data.preview"]
    lower += ["minidetr.boxes", "minidetr.matching", "minidetr.losses", "minidetr.evaluation", "minidetr.criterion"]
    for module in lower:
        bad = [e for e in graph[module] if e.startswith(upper)]
        assert not bad, f"{module} imports {bad}"


def test_every_module_imports_in_a_fresh_interpreter():
    names = [n for n in MODULES if not n.endswith("__main__")]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    # reverse order too: a module that only imports after another one has been imported fails one of the two
    for order in (names, names[::-1]):
        done = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


def test_files_stay_readable():
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_public_api_names_exist():
    for name in minidetr.__all__:
        assert hasattr(minidetr, name), name
    for sub in (minidetr.train, minidetr.models, minidetr.data):
        for name in sub.__all__:
            assert hasattr(sub, name), f"{sub.__name__}.{name}"


def test_no_comment_points_outside_the_repository():
    for name, path in MODULES.items():
        text = path.read_text()
        for needle in ("shared/reference", "/work/", "later issue"):
            assert needle not in text, f"{name} mentions {needle!r}"


def notebook_imports() -> set[tuple[str, str, str]]:
    """``(notebook, module, name)`` for every ``from minidetr... import name`` in the lessons and solutions."""
    import json

    found = set()
    root = ROOT.parent
    for nb_path in sorted([*root.glob("notebooks/*.ipynb"), *root.glob("solutions/*.ipynb")]):
        for cell in json.loads(nb_path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "\n".join(
                line for line in "".join(cell["source"]).splitlines() if not line.lstrip().startswith(("%", "!"))
            )
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "minidetr":
                    found.update((nb_path.name, node.module, a.name) for a in node.names)
    return found


def test_every_name_a_lesson_imports_is_public():
    """A lesson imports ``name`` from ``minidetr.X`` only if it is a submodule of X or listed in X.__all__."""
    import importlib

    imports = notebook_imports()
    assert len(imports) > 30  # the lessons do import from the library
    private = []
    for notebook, module, name in sorted(imports):
        mod = importlib.import_module(module)
        if f"{module}.{name}" in MODULES or name in getattr(mod, "__all__", ()):
            continue
        private.append(f"{notebook}: from {module} import {name}")
    assert not private, "names the lessons use but the library does not export:\n" + "\n".join(private)
