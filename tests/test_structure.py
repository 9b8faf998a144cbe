"""The code's shape, as the design notes (docs/design.md) promise it: one-way layers and small modules.

* Imports go one way, ``cli -> sweep -> runs -> training -> heads/extract -> features/splits -> corpora -> store/metrics``:
  a module may import its own package or a package of a lower layer, never one of its own layer or above. Function-level
  imports count too (they are how the CLI stays import-light, not a way round the layers).
* ``store`` imports neither torch nor transformers: a notebook reads a cache with h5py and numpy alone.
* No import circle between modules, at any depth (a circle means a type lives in the wrong room).
* No module over 400 lines, no class over 250.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sercache"

#: Layer of each top-level module or package of sercache (a higher layer may import a lower one).
LAYERS = {
    "errors": -1,  # the exception root, below everything
    "_typing": 0, "interrupts": 0, "option_pairs": 0, "cluster_engines": 0, "stream_checks": 0, "registry": 0,  # leaf utilities
    "head_catalog": 0,                            # the heads' names and roles, read from their source (stdlib)
    "store": 1,
    "metrics": 1,                                 # the reported figures and their registry, one module each (numpy)
    "corpora": 2,                                 # corpus readers and their registry (store records, pandas)
    "features": 3, "splits": 3,
    "extract": 4,
    "heads": 4,                                   # the networks (torch), registered by name
    "training": 5,                                # fitting: a run's config, a fold in memory, epochs, a task, a run
    "synthetic": 5,                               # stand-in data and models for the demo, tests and benchmarks
    "runs": 6,                                    # reading a finished run: record, report, plots, eval, predict
    "sweep": 7,                                   # many runs (training) and their combined report (runs)
    "demo": 8, "cli": 9, "__main__": 10,
}
#: The training side's rooms, bottom to top: each imports only the ones before it (no circle can come back).
TRAINING_SIDE = ("heads", "training", "runs", "sweep")
MAX_FILE_LINES = 400
MAX_CLASS_LINES = 250


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return rel.parts[0]


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, module, imported names) of every absolute import of the tree, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def test_every_module_has_a_layer():
    tops = {_top(p) for p in _modules()} - {"__init__"}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS: {sorted(tops - set(LAYERS))}"


def test_the_training_side_is_layered():
    layers = [LAYERS[room] for room in TRAINING_SIDE]
    assert layers == sorted(set(layers)), f"each room of {TRAINING_SIDE} needs a layer above the one before"
    assert all(LAYERS["cli"] > layer and LAYERS["demo"] > layer for layer in layers)
    assert LAYERS["heads"] > max(LAYERS[p] for p in ("store", "corpora", "features", "splits"))


def test_imports_go_one_way():
    wrong = []
    for path in _modules():
        src = _top(path)
        if src == "__init__":  # the public API (sercache.train, ...) sits above everything
            continue
        for line, module, names in _imports(ast.parse(path.read_text())):
            if module == "sercache":
                if set(names) - {"__version__"}:  # the package's version is a constant, not a layer
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {names} from the package root")
                continue
            if not module.startswith("sercache."):
                continue
            dst = module.split(".")[1]
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({src}, layer {LAYERS[src]}) imports "
                             f"{module} (layer {LAYERS[dst]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the sercache modules it imports, absolute or relative, at any depth (function-level included).

    ``from sercache.a import b`` is an edge to ``sercache.a.b`` when that is a module, else to ``sercache.a``.
    ``from sercache import __version__`` is no edge: the version is a constant, not a layer.
    """
    paths = {_module_name(p): p for p in _modules()}

    def known(name: str) -> str | None:  # the longest prefix of ``name`` that is a module of ours
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {known(a.name) for a in node.names if a.name.split(".")[0] == "sercache"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.split(".")[0] != "sercache":
                    continue
                for alias in node.names:
                    if module == "sercache" and alias.name == "__version__":
                        continue
                    full = f"{module}.{alias.name}"
                    edges.add(full if full in paths else known(module))
        graph[name] = {e for e in edges if e and e != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return sorted(cycles)


def test_no_import_circles():
    graph = import_graph()
    cycles = import_cycles(graph)
    described = []
    for members in cycles:
        inside = set(members)
        described.append(" <-> ".join(members) + "\n" + "\n".join(
            f"    {m} -> {', '.join(sorted(graph[m] & inside))}" for m in members))
    assert not cycles, f"{len(cycles)} import circle(s):\n" + "\n".join(described)


def test_the_cycle_finder_finds_a_circle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_store_is_free_of_torch():
    heavy = [f"{p.relative_to(PACKAGE.parent)}:{line} imports {module}"
             for p in (PACKAGE / "store").rglob("*.py") for line, module, _ in _imports(ast.parse(p.read_text()))
             if module.split(".")[0] in ("torch", "transformers", "torchaudio")]
    assert not heavy, heavy


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_classes_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_FILE_LINES, f"{path}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1
            assert size <= MAX_CLASS_LINES, f"{path}:{node.lineno} class {node.name}: {size} lines"
