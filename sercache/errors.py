"""The root of every error sercache raises on purpose; the CLI catches it in one place (``cli/common.py``).

Each error class keeps the builtin base its callers catch (``ValueError``, ``RuntimeError``), so code that
catches ``ValueError`` still catches it; ``except SercacheError`` catches them all.
"""
from __future__ import annotations


class SercacheError(Exception):
    """A problem sercache names (path, value or id, and the fix); the CLI prints ``error: <message>``.

    ``exit_code``: the CLI's exit status for it, 2 for a refused request, 1 for bad data.
    """

    exit_code = 2
