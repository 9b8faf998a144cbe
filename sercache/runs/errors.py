"""Errors of reading a finished run and writing its report."""
from __future__ import annotations

from sercache.errors import SercacheError


class RunNotFoundError(SercacheError, FileNotFoundError):
    """A folder that is not a run directory, or a run with no finished fold yet."""


class ReportError(SercacheError, ValueError):
    """A report option that cannot be honoured (a format, an --html path)."""


class ReportPathError(SercacheError, FileNotFoundError):
    """A report file whose folder does not exist."""
