"""Writing outputs so that a crash never leaves a half-written file or folder under its final name."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from .errors import LyraAssetsError


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a file through a temporary name in the same folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_npz(path: Path, what: str) -> dict[str, Any]:
    """All arrays of an .npz file, or an error that names the file and what it should have been."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise LyraAssetsError(f"{path}: not a readable {what} ({exc})") from exc


def write_json_atomically(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@contextmanager
def output_folder(final: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `final` in one rename.

    An existing `final` is refused unless force is set; with force it is moved aside and deleted only after
    the new folder is in place, so a crash leaves either the old or the new folder, never a mix.
    """
    final = Path(final)
    if final.exists() and not force:
        raise LyraAssetsError(f"{final} already exists; pass --force to replace it, or choose another -o folder.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
