"""The small status JSON next to each job's output: ROOT/out/<name>/status.json.

Artists and the Blender add-on read it to see how a job is doing. The daemon writes it when the job starts
and ends; the worker writes its progress in between. Written atomically, so a reader never sees half a file.

    {"job": "...", "source": "concept.png", "state": "running", "stage": "fuse", "done": 3, "total": 9,
     "progress": 0.33, "message": "...", "error": null, "attempt": 1, "outputs": {}, "updated": "..."}

`state` is queued, running, done or failed; `outputs` (when done) are paths relative to the folder.
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..files import write_json_atomically

FILE_NAME = "status.json"
PROGRESS_EVERY_S = 0.5  # progress callbacks come per frame; artists need no more than this


def write_status(folder: Path, fields: dict[str, Any]) -> None:
    record = {"stage": None, "done": None, "total": None, "progress": None, "message": "", "error": None,
              "outputs": {}, **fields, "updated": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomically(folder / FILE_NAME, record)


def read_status(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / FILE_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


class StatusProgress:
    """A pipeline progress callback that keeps status.json up to date, at most every PROGRESS_EVERY_S
    seconds within a stage (a new stage is always written)."""

    def __init__(self, folder: Path, fields: dict[str, Any]) -> None:
        self.folder = folder
        self.fields = fields
        self._stage: str | None = None
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if stage == self._stage and now - self._last < PROGRESS_EVERY_S and done < total:
            return
        self._stage, self._last = stage, now
        write_status(self.folder, {**self.fields, "state": "running", "stage": stage, "done": done, "total": total,
                                   "progress": round(done / total, 3) if total else None, "message": message})
