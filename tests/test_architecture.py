"""Architecture: imports flow one way through the layers of docs/architecture.md, with no cycle.

Every ``import`` of every module counts, including imports inside functions (read with ``ast``, nothing
is imported). A module may import its own layer and the layers its row of :data:`MAY_IMPORT` names; the
root ``deepalign`` package is the public facade: no module imports it. Also checked from the source:
figures only in ``report/``, no ``print`` or ``sys.argv`` in library code, no module over 400 lines, and
(in a fresh interpreter) that importing a judge does not import torch.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import deepalign

PACKAGE = Path(deepalign.__file__).parent
ROOT = PACKAGE.parents[1]

# layer -> the modules and packages in it, bottom to top (docs/architecture.md draws the same table)
LAYERS: dict[str, tuple[str, ...]] = {
    "core": ("_version", "errors", "paths", "io", "meta"),
    "data": ("data",),
    "chat": ("chat",),
    "models": ("models",),
    "generation": ("generation",),
    "depth": ("depth",),
    "train": ("train",),
    "organism": ("organism",),
    "results": ("results",),
    "judges": ("judges",),
    "report": ("report",),
    "pipeline": ("pipeline",),
    "integrations": ("trl", "inspect_task"),
    "cli": ("cli",),
}
_BELOW_PIPELINE = set(LAYERS) - {"pipeline", "integrations", "cli"}
MAY_IMPORT: dict[str, set[str]] = {  # besides its own layer
    "core": set(),
    "data": {"core"},
    "chat": {"core"},
    "models": {"core"},
    "generation": {"core", "chat"},
    "depth": {"core", "data", "chat", "models", "generation"},
    "train": {"core", "data", "chat", "models", "generation"},
    "organism": {"core", "data", "chat", "train"},
    "results": {"core"},
    "judges": {"core", "data", "results", "organism"},
    "report": {"core", "results"},
    "pipeline": _BELOW_PIPELINE,
    "integrations": _BELOW_PIPELINE | {"pipeline"},  # deepalign.trl, deepalign.inspect_task: next to pipeline
    "cli": _BELOW_PIPELINE | {"pipeline"},
}
MAX_LINES = 400


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its code (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer_of(module: str) -> str | None:
    """The layer of ``deepalign.x.y`` (None for the root facade)."""
    head = module.split(".")[1] if "." in module else None
    return next((layer for layer, names in LAYERS.items() if head in names), None)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import that the layer table does not allow."""
    bad = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target == "deepalign":
                bad.append(f"{source} -> deepalign (the public facade)")
                continue
            a, b = layer_of(source), layer_of(target)
            if a is not None and b != a and b not in MAY_IMPORT[a]:
                bad.append(f"{source} ({a}) -> {target} ({b})")
    return bad


def test_every_module_has_a_layer():
    assert [m for m in modules() if m != "deepalign" and layer_of(m) is None] == []
    assert set(MAY_IMPORT) == set(LAYERS)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_upward_imports():
    assert upward_imports(import_graph()) == []


def test_the_checks_find_what_they_look_for():
    """The checks are not vacuous: a made-up graph with a cycle and an upward import is caught."""
    graph = {"deepalign.io": {"deepalign.judges.base"}, "deepalign.judges.base": {"deepalign.io"},
             "deepalign.report.tables": {"deepalign.depth.kl"}, "deepalign.depth.kl": set()}
    assert cycles(graph) == [["deepalign.io", "deepalign.judges.base"]]
    assert upward_imports(graph) == ["deepalign.io (core) -> deepalign.judges.base (judges)",
                                     "deepalign.report.tables (report) -> deepalign.depth.kl (depth)"]
    real = import_graph()
    assert "deepalign.organism.build" in real["deepalign.pipeline.builtins"]  # imported inside a function


def _calls_and_imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield "import", [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            yield "import", [node.module or ""]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            yield "call", [node.func.id]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            yield "attribute", [f"{node.value.id}.{node.attr}"]


def test_figures_only_in_report_and_no_prints_or_argv_in_library_code():
    found = []
    for name, path in modules().items():
        library = layer_of(name) != "cli"
        for kind, names in _calls_and_imports(path):
            for n in names:
                if kind == "import" and n.split(".")[0] == "matplotlib" and layer_of(name) != "report":
                    found.append(f"{name} imports {n}")
                if library and kind == "call" and n == "print":
                    found.append(f"{name} prints")
                if library and kind == "attribute" and n == "sys.argv":
                    found.append(f"{name} reads sys.argv")
    assert found == []


@pytest.mark.parametrize("folder", ["src/deepalign", "bench"])
def test_no_module_over_the_line_limit(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_importing_a_judge_or_the_package_does_not_import_torch():
    code = ("import sys, deepalign, deepalign.judges.keyword, deepalign.results.stats; "
            "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_public_api_resolves_lazily():
    for name in deepalign.__all__:
        assert getattr(deepalign, name) is not None, name
    with pytest.raises(AttributeError):
        deepalign.no_such_name  # noqa: B018
