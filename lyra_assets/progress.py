"""Progress reporting: every long stage calls one callback with (stage, done, total, message)."""
from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None: ...


def silent(stage: str, done: int, total: int, message: str = "") -> None:
    """A progress callback that ignores everything (the default for library calls)."""
