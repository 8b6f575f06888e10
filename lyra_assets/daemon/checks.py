"""Checking a claimed file, in a worker process of its own: never on the daemon's loop.

A check opens the image and its sidecar and resolves the job (its plan and key): that reads and decodes the
image, which takes seconds and a gigabyte for a 64-megapixel one, and a hostile file may crash the decoder.
In a separate process neither stops the daemon's loop, heartbeat or memory budget. Whatever goes wrong
for one file becomes a report for that file (a LyraAssetsError, filed in failed/); a check whose process
dies is charged to that file as an attempt.

The file must be the one that was claimed: its size, time and inode are compared with the claim's before
and after reading it. A file that changed (a copy that paused longer than the settle window) is reported as
`changed`, and waits to settle again instead of failing as truncated. The job is resolved from the image's
header, and its pixels are decoded once (and thrown away), so that a damaged or cut-short image is reported
now, without a run, and never in the daemon's own memory.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LyraAssetsError
from .inbox import Signature, signature
from ..job import Layer
from .settings import plan_job, plan_record

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
         stat.S_IFBLK: "a device", stat.S_IFDIR: "a folder"}


@dataclass(frozen=True)
class CheckTask:
    job: str
    image: str  # ROOT/work/<job>/<name>.<ext>
    source: str  # the image's name as dropped
    sidecars: tuple[tuple[str, str], ...]  # (path in work/, name as dropped)
    signature: Signature  # the image's, when it was claimed
    inbox: str
    defaults: Layer | None  # ROOT/defaults.toml


def check(task: CheckTask) -> dict[str, Any]:
    """{"changed": signature} if the image changed since its claim, else {"plan": ..., "key": ...}.
    Raises LyraAssetsError with what to do."""
    _check_files(task)
    image = Path(task.image)
    if _now(image) != task.signature:
        return {"changed": _now(image)}
    try:
        spec = plan_job(image, task.defaults)  # decodes the pixels too: damage is found here, not in a run
    except Exception as exc:
        if _now(image) != task.signature:
            return {"changed": _now(image)}
        if isinstance(exc, LyraAssetsError):
            raise
        raise LyraAssetsError(_unexpected(task, exc)) from exc
    if _now(image) != task.signature:
        return {"changed": _now(image)}
    return {"plan": plan_record(spec), "key": spec.key}


def _now(path: Path) -> Signature | None:
    try:
        return signature(os.lstat(path))
    except FileNotFoundError:
        return None


def _check_files(task: CheckTask) -> None:
    """What the pipeline cannot see: links (never followed), things that are not files (opening a FIFO would
    block for ever) and files that are not images at all. Only lstat: nothing is opened yet."""
    for path, name in [(task.image, task.source), *task.sidecars]:
        try:
            info = os.lstat(path)
        except FileNotFoundError as exc:
            raise LyraAssetsError(f"{name}: removed from the daemon's work/ folder before it could be checked; "
                                  f"drop it again") from exc
        if stat.S_ISLNK(info.st_mode):
            target = os.readlink(path)
            where = os.path.normpath(os.path.join(task.inbox, target))
            outside = ", outside the inbox" if os.path.commonpath([where, task.inbox]) != task.inbox else ""
            raise LyraAssetsError(f"{name}: a symbolic link (to {target}{outside}); links are not followed: "
                                  f"copy the file itself into the inbox")
        if not stat.S_ISREG(info.st_mode):
            kind = KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise LyraAssetsError(f"{name}: {kind}, not a file; drop the image file itself")
    suffix = os.path.splitext(task.source)[1].lower()
    if suffix not in IMAGE_SUFFIXES:
        raise LyraAssetsError(f"{task.source}: not a concept image ({suffix or 'no extension'}); drop PNG, "
                              f"JPEG, WebP, TIFF or BMP images, each with an optional .toml or .json "
                              f"sidecar of the same name")


def _unexpected(task: CheckTask, exc: Exception) -> str:
    """An error the settings code did not turn into a project error: say what happened and what to do."""
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermissionError):
        return (f"{task.source}: the daemon may not read it ({exc.strerror}); give its user read access and "
                f"drop it again")
    if isinstance(exc, OSError):
        return f"{task.source}: could not be read ({what}); drop it again"
    sidecars = ", ".join(name for _, name in task.sidecars)
    if sidecars:
        return (f"{task.source}: the settings in {sidecars} could not be used ({what}); check that each value "
                f"has the kind the README shows (e.g. preset = \"orbit\", a name in quotes, not a list or a "
                f"table) and drop both again")
    return (f"{task.source}: could not be checked ({what}); drop it again, and if it fails the same way, "
            f"report it with this file")
