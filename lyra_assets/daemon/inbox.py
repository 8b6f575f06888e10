"""What has arrived in the inbox.

A periodic scan is the source of truth: watchdog events are lost on inotify overflow, never fire across
NFS/SMB, and nothing queues while the daemon is down, so events only wake the daemon early. A file counts as
arrived once its size and mtime have stayed the same for the settle window (a copy still being written keeps
changing). Temporary names that downloaders and editors use are ignored until they are renamed (logged once
they have settled, so a file left under such a name is not silently forgotten). Names are paired by their
Unicode NFC form, so a sidecar saved on macOS (NFD) finds its image saved on Windows (NFC).
"""
from __future__ import annotations

import os
import stat
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..job import SIDECAR_SUFFIXES
from .logs import log
from .root import printable

TEMPORARY_SUFFIXES = (".part", ".tmp", ".crdownload")


def is_temporary(name: str) -> bool:
    """`.*`, `*.part`, `*.tmp`, `*.crdownload` and Office's `~$*` lock files. A name that starts with `..` is
    no temporary of any tool: it is taken like any other (its output name loses the dots)."""
    hidden = name.startswith(".") and not name.startswith("..")
    return hidden or name.startswith("~$") or name.lower().endswith(TEMPORARY_SUFFIXES)


def is_sidecar(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in SIDECAR_SUFFIXES


Signature = tuple[int, int, int]  # size, mtime (ns), inode: a file that changes changes one of them


def signature(info: os.stat_result) -> Signature:
    return info.st_size, info.st_mtime_ns, info.st_ino


@dataclass(frozen=True)
class Entry:
    name: str
    since: float  # when it was first seen unchanged
    signature: Signature = (0, 0, 0)

    @property
    def stem(self) -> str:
        return os.path.splitext(self.name)[0]

    @property
    def key(self) -> str:
        """What pairs an image with its sidecars: the stem in NFC."""
        return unicodedata.normalize("NFC", self.stem)


@dataclass(frozen=True)
class Drop:
    """What one claim takes: a file with the sidecars of its stem, or a sidecar alone (image is None).
    `problem` is set when the drop cannot become a job as it stands; the claim files it as failed."""

    image: Entry | None
    sidecars: tuple[Entry, ...]
    problem: str | None = None


class Inbox:
    def __init__(self, folder: Path, settle_s: float) -> None:
        self.folder = folder
        self.settle_s = settle_s
        self._seen: dict[str, tuple[tuple[int, int, int], float]] = {}  # name -> (size, mtime, inode), since
        self._warned: set[str] = set()
        self._temporary: dict[str, tuple[Signature, float]] = {}
        self._logged: set[tuple[str, Signature]] = set()  # temporaries logged, as they were then

    def scan(self, now: float) -> list[Drop]:
        """The drops that have settled, oldest first. Call it periodically: settling needs two looks."""
        seen: dict[str, tuple[Signature, float]] = {}
        temporary: dict[str, tuple[Signature, float]] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)  # a link is judged as a link, never followed
                except FileNotFoundError:  # claimed by another daemon or removed mid-scan
                    continue
                if is_temporary(entry.name):
                    self._left_alone(entry.name, signature(info), now, temporary)
                    continue
                if stat.S_ISDIR(info.st_mode):
                    if entry.name not in self._warned:
                        self._warned.add(entry.name)
                        log("ignored", level="warning", file=entry.name,
                            reason="folders are not scanned; drop the images themselves")
                    continue
                current = signature(info)
                previous = self._seen.get(entry.name)
                seen[entry.name] = (current, previous[1] if previous and previous[0] == current else now)
        self._seen, self._temporary = seen, temporary
        return group(seen, now, self.settle_s)

    def _left_alone(self, name: str, current: Signature, now: float,
                    temporary: dict[str, tuple[Signature, float]]) -> None:
        """A temporary name is never taken; one that has stopped changing is logged once, so an operator
        looking for a file finds why it was left in the inbox."""
        previous = self._temporary.get(name)
        since = previous[1] if previous and previous[0] == current else now
        temporary[name] = (current, since)
        if now - since >= self.settle_s and (name, current) not in self._logged:
            self._logged.add((name, current))
            log("ignored", file=printable(name), reason="a hidden or temporary name (.*, *.part, *.tmp, "
                "*.crdownload, ~$*) is left alone: rename the file when it is complete")

    def wait_hint(self, now: float) -> float | None:
        """Seconds until the next file that is still settling could count as arrived."""
        pending = [since + self.settle_s - now for _, since in self._seen.values()
                   if now - since < self.settle_s]
        return max(0.0, min(pending)) if pending else None


def group(seen: dict[str, tuple[Signature, float]], now: float, settle_s: float) -> list[Drop]:
    """Pair each file with the sidecars of its stem. A drop waits until all its files have settled."""
    by_stem: dict[str, list[Entry]] = {}
    for name, (current, since) in seen.items():
        entry = Entry(name, since, current)
        by_stem.setdefault(entry.key, []).append(entry)
    drops = []
    for entries in by_stem.values():
        if any(now - e.since < settle_s for e in entries):
            continue
        sidecars = tuple(sorted((e for e in entries if is_sidecar(e.name)), key=lambda e: e.name))
        files = sorted((e for e in entries if not is_sidecar(e.name)), key=lambda e: e.name)
        if not files:
            drops.append(Drop(None, sidecars))
            continue
        drops.append(Drop(files[0], sidecars))
        for other in files[1:]:
            # A sidecar belongs to one image; guessing which of foo.png and foo.jpg it meant is worse than asking.
            problem = (f"{printable(other.name)}: {printable(files[0].name)} has the same name and took the "
                       f"sidecar {', '.join(printable(s.name) for s in sidecars)}; give each image its own name"
                       ) if sidecars else None
            drops.append(Drop(other, (), problem))
    return sorted(drops, key=lambda d: min(e.since for e in ([d.image] if d.image else []) + list(d.sidecars)))


class _Wake(FileSystemEventHandler):
    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.wake.set()


def watch(folder: Path, wake: threading.Event, polling: bool, interval_s: float) -> BaseObserver:
    """Start watchdog on the inbox; every event just sets `wake`. Polling is for network shares."""
    observer = PollingObserver(timeout=interval_s) if polling else Observer()
    observer.schedule(_Wake(wake), str(folder), recursive=False)
    observer.start()
    return observer
