"""Shared type aliases."""
from __future__ import annotations

import os
from typing import TypeAlias

Pathlike: TypeAlias = str | os.PathLike
