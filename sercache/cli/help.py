"""``--help`` laid out the way users scan it: options in named groups, then examples.

click lists options in one block; for ``train``'s thirty options that hides the few a user is
looking for. A command made with :class:`Sectioned` prints its options under headings (data, folds,
model, optimisation, output), each option where its ``param.name`` is listed, the rest last.
"""
from __future__ import annotations

import click


class Sectioned(click.Command):
    def __init__(self, *args, sections: list[tuple[str, list[str]]] | None = None, **kwargs) -> None:  # noqa: ANN002, ANN003
        self.sections = sections or []
        super().__init__(*args, **kwargs)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        records = {k: v for k, v in records.items() if v is not None}
        placed: set[str] = set()
        for title, names in self.sections:
            rows = [records[n] for n in names if n in records]
            placed.update(n for n in names if n in records)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [v for k, v in records.items() if k not in placed]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


def examples(*lines: str) -> str:
    """An epilog of example commands, kept as written (``\\b`` stops click from rewrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
