"""Shared type aliases."""
from __future__ import annotations

import os
from typing import Union

Pathlike = Union[str, os.PathLike]
