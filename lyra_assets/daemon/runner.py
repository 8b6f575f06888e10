"""What a worker runs for one job: the pipeline, writing ROOT/out/<name>/, with its progress in status.json.

It runs in a local worker process or on a Ray worker, so it is given everything in a Task and never touches
the journal (which belongs to the daemon's host). The pipeline writes every file atomically, so an
interrupted run leaves only complete files plus hidden temporaries; the next run clears those and, if the
walkthrough was already saved, resumes from it (the checkpoint) instead of generating it again.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import planned_spec
from .status import StatusProgress


@dataclass(frozen=True)
class Task:
    job: str
    image: str  # absolute: ROOT/work/<job>/<name>.png, its sidecar (if any) beside it
    out_dir: str  # absolute: ROOT/out
    name: str
    plan: dict[str, Any]  # settings.plan_record(): the resolved job spec and its key
    status: dict[str, Any]  # fields every status write carries: job, source, key, attempt

    @property
    def folder(self) -> Path:
        return Path(self.out_dir) / self.name


def run(task: Task) -> dict[str, str]:
    """The whole job in one process (going on from the walkthrough an interrupted run saved)."""
    return _build(task, _start(task))


def generate_walkthrough(task: Task) -> None:
    """First half, for a GPU worker that keeps its model loaded: the walkthrough alone."""
    progress = _start(task)
    if _has_checkpoint(task):
        return
    from ..pipeline import generate

    generate(planned_spec(task.plan), out_dir=task.out_dir, force=True, progress=progress)


def make_asset(task: Task) -> dict[str, str]:
    """Second half, on any CPU: the asset stages on the saved walkthrough."""
    return _build(task, StatusProgress(task.folder, _fields(task)))


def _build(task: Task, progress: StatusProgress) -> dict[str, str]:
    """`build` goes on from a walkthrough this same job saved (the checkpoint) instead of generating it again."""
    from ..pipeline import build

    result = build(planned_spec(task.plan), out_dir=task.out_dir, force=True, progress=progress)
    return _relative(task, result.outputs)


def _start(task: Task) -> StatusProgress:
    """Clear what an interrupted run left: the pipeline's hidden temporaries (`.x.tmp`, `.x.partial`)."""
    task.folder.mkdir(parents=True, exist_ok=True)
    for leftover in task.folder.glob(".*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    progress = StatusProgress(task.folder, _fields(task))
    progress("start", 0, 1, "resuming from the saved walkthrough" if _has_checkpoint(task) else "")
    return progress


def _has_checkpoint(task: Task) -> bool:
    """A walkthrough this same job saved (folders are renamed into place whole, so one that exists is complete)."""
    try:
        manifest = json.loads((task.folder / "walkthrough" / "manifest.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return False
    return manifest.get("job_key") == task.plan["key"]


def _fields(task: Task) -> dict[str, Any]:
    return {**task.status, "worker": {"host": socket.gethostname(), "pid": os.getpid()}}


def _relative(task: Task, outputs: dict[str, str]) -> dict[str, str]:
    return {kind: os.path.relpath(path, task.folder) for kind, path in outputs.items()}
