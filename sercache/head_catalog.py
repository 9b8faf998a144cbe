"""The heads and stream roles there are, read from the head modules' source without importing them.

The registry (:data:`sercache.heads.HEADS`, filled by the head modules' ``@register`` when its first
read imports them) is the truth, but reading it imports torch. The CLI's ``--head`` choices and
``--ROLE-stream`` options come from this reading of ``heads/*.py`` instead, so ``sercache --help``
stays instant and a new head is still one new file there (tests/test_head_catalog.py checks this
reading against the registry):

* every class decorated with ``@register`` and a literal ``name = "..."`` is a head;
* a module-level ``STREAM_ROLES = {role: {"default": stream, "help": text}}`` literal declares the
  roles its heads introduce (base.py: audio, text, mfcc): each becomes a ``--ROLE-stream`` train
  option and the stream that role reads when none is given.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

from sercache.errors import SercacheError

HEADS_DIR = Path(__file__).parent / "heads"


class HeadCatalogError(SercacheError, ValueError):
    """A head module whose source cannot be read without importing it (a name or roles not literal, a name taken)."""


@dataclass(frozen=True)
class StreamRole:
    """A stream role heads read (``audio``, ``text``...): the cache stream it defaults to, and its option's help."""

    name: str
    default_stream: str
    help: str
    module: str  # the head module that declares it

    @property
    def param(self) -> str:
        """The train option's parameter name (``text_aug`` -> ``text_aug_stream``)."""
        return f"{self.name}_stream"

    @property
    def option(self) -> str:
        return f"--{self.name.replace('_', '-')}-stream"


@dataclass(frozen=True)
class Catalog:
    heads: dict[str, str]            # head name -> module (in heads/)
    roles: dict[str, StreamRole]     # in declaration order: base.py's first


@functools.cache
def catalog() -> Catalog:
    """Scan ``heads/*.py`` once (base.py first, then by file name)."""
    heads: dict[str, str] = {}
    roles: dict[str, StreamRole] = {}
    paths = sorted(HEADS_DIR.glob("*.py"), key=lambda p: (p.stem != "base", p.stem))
    for path in paths:
        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            if isinstance(node, ast.ClassDef) and any(_is_register(d) for d in node.decorator_list):
                name = _literal_attribute(node, "name", path)
                if name in heads:
                    raise HeadCatalogError(f"{path}: head name {name!r} is taken (heads/{heads[name]}.py)")
                heads[name] = path.stem
            elif _assigns(node, "STREAM_ROLES"):
                for role, spec in _literal(node.value, path, "STREAM_ROLES").items():
                    if role in roles:
                        raise HeadCatalogError(f"{path}: stream role {role!r} is declared in heads/{roles[role].module}.py "
                                         "already")
                    roles[role] = StreamRole(role, spec["default"], spec["help"], path.stem)
    return Catalog(heads, roles)


def head_names() -> list[str]:
    """Every head's name, sorted (the ``--head`` choices)."""
    return sorted(catalog().heads)


def head_modules() -> list[str]:
    """The modules of heads/ that define a head."""
    return sorted(set(catalog().heads.values()))


def stream_roles() -> dict[str, StreamRole]:
    return dict(catalog().roles)


def role_default_streams() -> dict[str, str]:
    """Which cache stream each role reads when the user does not say."""
    return {r.name: r.default_stream for r in catalog().roles.values()}


def _is_register(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "register") or (
        isinstance(decorator, ast.Attribute) and decorator.attr == "register")


def _assigns(node: ast.stmt, name: str) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None


def _literal_attribute(cls: ast.ClassDef, attribute: str, path: Path) -> str:
    for node in cls.body:
        if _assigns(node, attribute):
            value = _literal(node.value, path, f"{cls.name}.{attribute}")
            if isinstance(value, str) and value:
                return value
    raise HeadCatalogError(f"{path}: registered head class {cls.name} needs a literal `{attribute} = \"...\"` in its own "
                     "body (the CLI reads it without importing the module)")


def _literal(node: ast.expr, path: Path, what: str):  # noqa: ANN202 - whatever literal the source holds
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise HeadCatalogError(f"{path}: {what} must be a literal (the CLI reads it without importing the module)") from None
