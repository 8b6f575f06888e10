"""The drop folder on disk, and filing originals into done/ and failed/ without ever overwriting one.

    ROOT/inbox/            artists drop images here (with optional foo.toml / foo.json sidecars)
    ROOT/work/<job>/       a claimed job: its image and sidecar, renamed here atomically
    ROOT/out/<name>/       the job's outputs and its status.json
    ROOT/done/             originals after success (duplicates with a .duplicate.json note)
    ROOT/failed/           originals that could not be built, each with a .error.json
    ROOT/journal.sqlite3   the journal (WAL)
    ROOT/defaults.toml     optional settings for every job of this folder
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LyraAssetsError
from ..files import write_json_atomically

NAME_BYTES = 240  # under the usual 255-byte limit on a file name
MIN_FREE_BYTES = 256 * 2**20  # below this the daemon stops taking work: a full disk fails every job

@dataclass(frozen=True)
class DropRoot:
    path: Path

    @classmethod
    def open(cls, path: str | Path, create: bool) -> DropRoot:
        root = cls(Path(path).expanduser().resolve())
        if create:
            for folder in (root.inbox, root.work, root.out, root.done, root.failed):
                folder.mkdir(parents=True, exist_ok=True)
        elif not root.journal.exists():
            raise LyraAssetsError(f"{root.path}: not a drop folder (no journal.sqlite3); "
                                  f"start `lyra-assets watch {root.path}` first.")
        return root

    @property
    def inbox(self) -> Path:
        return self.path / "inbox"

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def out(self) -> Path:
        return self.path / "out"

    @property
    def done(self) -> Path:
        return self.path / "done"

    @property
    def failed(self) -> Path:
        return self.path / "failed"

    @property
    def journal(self) -> Path:
        return self.path / "journal.sqlite3"

    @property
    def defaults(self) -> Path:
        return self.path / "defaults.toml"

    def job_dir(self, job_id: str) -> Path:
        return self.work / job_id

    def fault(self) -> str | None:
        """What keeps the daemon from working in its own folders (not writable, gone, the disk full), or None.
        Each folder gets a small nameless temporary file written (O_TMPFILE where there is one): the only test
        that also catches a read-only mount, a full quota and lost permissions, and one that leaves nothing
        behind when the daemon is killed in the middle of it."""
        for folder in (self.inbox, self.work, self.out, self.done, self.failed):
            try:
                with tempfile.TemporaryFile(dir=folder, prefix=".probe-") as f:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError as exc:
                return f"{folder}: {exc.strerror or exc}"
        try:
            free = shutil.disk_usage(self.path).free
        except OSError as exc:
            return f"{self.path}: {exc.strerror or exc}"
        if free < MIN_FREE_BYTES:
            return f"{self.path}: the disk is full ({free // 2**20} MiB free)"
        return None


def new_job_id() -> str:
    """Sortable by claim time, unique across daemons."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


def printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (a Latin-1 name from an old share) become U+FFFD. The
    journal, the logs and done/ and failed/ use this form; only the inbox sees the name as it was."""
    return os.fsencode(name).decode("utf-8", "replace")


def file_group(files: list[tuple[Path, str]], folder: Path, stem: str, plan: Path | None = None
               ) -> list[Path | None]:
    """Move (current path, wanted name) pairs into `folder`; every wanted name starts with `stem`. If any name
    is taken, the whole group moves as stem~2..., stem~3..., so an image, its sidecar and its note stay
    together. Never overwrites; the caller holds the journal's write lock, so two daemons never pick the same
    free name. Returns where each file went (None for one already gone that no plan names).

    With `plan` (a file in the job's work folder), the names are written there before anything moves: a
    filing cut short (its daemon killed between the moves and the journal's record of them) is finished by
    the next try into the same names, so the group is filed once and the caller learns where it went."""
    targets = _planned(plan, files)
    if targets is None:
        targets = _free_names(files, folder, stem)
        if plan is not None:
            write_json_atomically(plan, [str(target) for target in targets])
    went: list[Path | None] = []
    for (src, _), target in zip(files, targets, strict=True):
        if os.path.lexists(src):
            os.rename(src, target)  # a rename moves a symbolic link itself, never what it points to
        went.append(target if os.path.lexists(target) else None)
    return went


def _free_names(files: list[tuple[Path, str]], folder: Path, stem: str) -> list[Path]:
    """The first stem, stem~2, ... under which no name of the group (present or already gone) is taken."""
    rests = [name[len(stem):] for _, name in files]
    for n in range(1, 100_000):
        tag = "" if n == 1 else f"~{n}"
        head = _fit(stem, tag + max(rests, key=len))
        targets = [folder / (head + tag + rest) for rest in rests]
        if not any(os.path.lexists(target) for target in targets):
            return targets
    raise RuntimeError(f"{folder}: no free name for {stem}")


def _planned(plan: Path | None, files: list[tuple[Path, str]]) -> list[Path] | None:
    """The names an earlier, cut-short filing of this group chose, if they still fit: one per file, and none
    taken by another group while this one waited (then the group is filed afresh)."""
    if plan is None or not plan.is_file():
        return None
    targets = [Path(name) for name in json.loads(plan.read_text(encoding="utf-8"))]
    if len(targets) != len(files) or any(os.path.lexists(src) and os.path.lexists(target)
                                         for (src, _), target in zip(files, targets)):
        return None
    return targets


def _fit(stem: str, longest_rest: str) -> str:
    """Shorten the stem so the longest name of the group stays under the file-name limit."""
    return fit_bytes(stem, NAME_BYTES - len(longest_rest.encode("utf-8", "surrogateescape")))


def fit_bytes(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes (as the file system counts them), on a character boundary."""
    while text and len(text.encode("utf-8", "surrogateescape")) > limit:
        text = text[:-1]
    return text
