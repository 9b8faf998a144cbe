"""The code's shape, as the design notes (docs/design.md) promise it: one-way layers and small modules.

* Imports go one way, ``cli -> extract/train_heads -> features/splits -> corpora -> store``: a module may import
  its own package or a package of a lower layer, never one of its own layer or above. Function-level
  imports count too (they are how the CLI stays import-light, not a way round the layers).
* ``store`` imports neither torch nor transformers: a notebook reads a cache with h5py and numpy alone.
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
    "_typing": 0, "keyvalue": 0, "engines": 0, "hooks": 0, "named": 0,  # leaf utilities
    "store": 1,
    "corpora": 2,                                 # corpus readers and their registry (store records, pandas)
    "features": 3, "splits": 3,
    "extract": 4, "train_heads": 4,
    "synthetic": 5,                               # stand-in data and models for the demo, tests and benchmarks
    "demo": 6, "cli": 7, "__main__": 8,
}
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
