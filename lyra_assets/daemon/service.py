"""The daemon loop: take what settled in the inbox, validate it, run it, file the original, and recover
what a dead daemon left behind. All pipeline work happens in an executor; all state lives in the journal.

One turn of the loop (woken by watchdog, a finished run, or every `scan_every_s`):

1. recover   jobs of daemons that died: `claimed` or `running` ones go back to the queue charged one
             attempt (a file that kills the process every time ends in failed/ after `max_attempts`);
             finished ones whose originals were not filed yet are filed.
2. collect   finished runs: done -> outputs in out/<name>/, original to done/; bad input -> failed/ with
             the error; a crash -> re-queued until `max_attempts`; interrupted by shutdown -> re-queued free.
             A run whose worker has reported no progress for `stall_s` is stuck: it is stopped, and counts
             as a crash.
3. start     queued jobs while the executor has room; a job whose key was built meanwhile is a duplicate.
4. take      settled drops: claimed by renaming them into work/<job>/ (with the sidecar), so of two
             daemons on one root only one gets each file; then validated, keyed and queued (or filed).

SIGTERM/SIGINT: stop taking, let running jobs finish within `grace_s` (a second signal cuts it short), then
stop the rest and re-queue them without charging an attempt; exit 0.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import LyraAssetsError
from ..files import write_json_atomically
from ..job import SIDECAR_SUFFIXES, safe_name
from .executors import BadInput, Executor, Interrupted
from .inbox import Drop, Inbox, watch
from .journal import STALE_AFTER_S, JobRow, Journal
from .logs import log
from .root import DropRoot, file_group, new_job_id, printable
from .runner import Task
from ..job import Layer
from .settings import plan_job, plan_record
from .status import write_status

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
NAME_LIMIT = 100  # safe_name's length limit; "-2" suffixes must stay inside it
HEARTBEAT_EVERY_S = 2.0
RECOVER_EVERY_S = 5.0


@dataclass(frozen=True)
class Options:
    settle_s: float = 2.0  # a file has arrived once unchanged this long
    scan_every_s: float = 5.0  # the periodic scan; watchdog events only come sooner
    grace_s: float = 30.0  # on SIGTERM, how long running jobs may take to finish
    max_attempts: int = 3  # crashed or interrupted runs before a file goes to failed/
    sidecar_wait_s: float = 600.0  # how long a sidecar without an image waits for one
    stall_s: float = 3600.0  # a run silent this long (no progress in its status.json) is stuck
    stale_after_s: float = STALE_AFTER_S  # a daemon silent this long is dead
    claim_batch: int = 16  # drops taken per turn, so finished runs are collected in between
    polling: bool = False  # watchdog's PollingObserver, for network shares


class Service:
    def __init__(self, root: DropRoot, executor: Executor, defaults: Layer | None, options: Options) -> None:
        self.root = root
        self.executor = executor
        self.defaults = defaults
        self.options = options
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.journal = Journal(root.journal)
        self.inbox = Inbox(root.inbox, options.settle_s)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self.running: dict[str, Future] = {}
        self.stalled: set[str] = set()  # running jobs already being stopped as stuck

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> None:
        self.journal.register_daemon(self.id)
        observer = watch(self.root.inbox, self.wake, self.options.polling, self.options.scan_every_s)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        log("started", daemon=self.id, root=str(self.root.path), executor=type(self.executor).__name__,
            capacity=self.executor.capacity)
        beat = recovered = 0.0
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                now = time.time()
                if now - beat >= HEARTBEAT_EVERY_S:
                    self.journal.heartbeat(self.id)
                    beat = now
                if now - recovered >= RECOVER_EVERY_S:
                    self.recover()
                    recovered = now
                self.collect()
                self.stop_stalled(now)
                self.start_runs()
                more = self.take(now)
                self.start_runs()
                if more:
                    continue
                hint = self.inbox.wait_hint(time.time())
                self.wake.wait(self.options.scan_every_s if hint is None else min(hint, self.options.scan_every_s))
        finally:
            observer.stop()
            self.drain()
            observer.join()
            self.journal.daemon_stopped(self.id)
            log("stopped", daemon=self.id)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only set flags: the loop may hold the log lock or be mid-transaction when a signal lands.
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()
        self.wake.set()

    def drain(self) -> None:
        """Let running jobs finish within the grace period, then stop the rest and re-queue them free."""
        if self.running:
            log("stopping", running=sorted(self.running), grace_s=self.options.grace_s)
        deadline = time.monotonic() + self.options.grace_s
        while self.running and time.monotonic() < deadline and not self.hurry.is_set():
            wait(list(self.running.values()), timeout=min(1.0, deadline - time.monotonic()),
                 return_when=FIRST_COMPLETED)
            self.journal.heartbeat(self.id)  # still alive: no other daemon may take these jobs over
            self.collect()
            self.stop_stalled(time.time())
        if self.running:
            log("interrupting", jobs=sorted(self.running))
            self.executor.interrupt()
            wait(list(self.running.values()), timeout=60)
            self.collect()
        self.executor.close()

    # -- 1. recover ------------------------------------------------------------------------------------

    def recover(self) -> None:
        others = self.journal.owned_by_others(self.id)
        if not others:
            return
        dead = set(self.journal.dead_daemons(self.options.stale_after_s))
        for row in others:
            if row.owner not in dead:
                continue
            with self.journal.locked():
                row = self.journal.get(row.id)
                if row.owner not in dead:  # another daemon took it over first
                    continue
                self.journal.update(row.id, owner=self.id)
            log("recovering", job=row.id, file=row.source, state=row.state, dead_daemon=row.owner)
            if row.state == "claimed" and not os.path.lexists(self._work_file(row)):
                # It died between writing the claim down and renaming the file: the file is still in the
                # inbox (or another daemon has it), so the claim never happened.
                self.journal.delete_job(row.id)
                shutil.rmtree(self.root.job_dir(row.id), ignore_errors=True)
            elif row.state in ("claimed", "running"):
                self._charge(row, "the daemon stopped while this job was "
                             + ("being checked" if row.state == "claimed" else "running"))
            else:  # finished, but the originals were not filed yet
                self._file(row.id)

    def _charge(self, row: JobRow, what: str) -> None:
        """An attempt ended badly: try again, or give up after max_attempts."""
        attempts = row.attempts + 1
        if attempts >= self.options.max_attempts:
            self._finish(row, "failed", attempts=attempts,
                         error=f"{row.source}: gave up after {attempts} attempts; the last: {what}. If the file "
                               f"is fine, drop it again; if it keeps failing, report it with this file.")
        elif row.state == "claimed":
            self.journal.update(row.id, attempts=attempts, error=what)
            self._validate(self.journal.get(row.id))
        else:
            self.journal.update(row.id, state="queued", owner=None, attempts=attempts, error=what)
            self._write_status(row, {"state": "queued", "message": f"{what}; queued again"})
            log("requeued", job=row.id, file=row.source, attempts=attempts, reason=what)

    # -- 2. collect ------------------------------------------------------------------------------------

    def collect(self) -> None:
        for job_id, future in list(self.running.items()):
            if not future.done():
                continue
            del self.running[job_id]
            self.stalled.discard(job_id)
            row = self.journal.get(job_id)
            error = future.exception()
            if error is None:
                outputs = future.result()
                self._write_status(row, {"state": "done", "outputs": outputs, "stage": "done", "progress": 1.0})
                self._finish(row, "done")
                log("done", job=row.id, file=row.source, output=f"out/{row.name}/", outputs=outputs)
            elif isinstance(error, Interrupted):
                self.journal.update(row.id, state="queued", owner=None)
                self._write_status(row, {"state": "queued", "message": "interrupted by a daemon shutdown; "
                                         "it starts again when a daemon runs"})
                log("requeued", job=row.id, file=row.source, reason="shutdown")
            elif isinstance(error, BadInput):
                self._finish(row, "failed", error=self._for_artist(row, str(error)))
            else:
                log("run_error", level="warning", job=row.id, file=row.source, error=str(error))
                self._charge(row, f"the run failed: {str(error).strip().splitlines()[-1]}")

    def stop_stalled(self, now: float) -> None:
        """A worker writes its status at least at every stage; one silent for stall_s is stuck (a deadlock in a
        native library has been seen), and would hold its worker forever."""
        for job_id in set(self.running) - self.stalled:
            row = self.journal.get(job_id)
            status = self.root.out / row.name / "status.json"
            try:
                silent = now - status.stat().st_mtime
                started = "worker" in json.loads(status.read_text(encoding="utf-8"))  # not still waiting for one
            except (FileNotFoundError, ValueError):
                continue
            if started and silent > self.options.stall_s:
                self.stalled.add(job_id)
                reason = f"no progress for {silent:.0f} s; stopped as stuck"
                log("stalled", level="warning", job=job_id, file=row.source, silent_s=round(silent, 1))
                self.executor.stop(job_id, reason)

    # -- 3. start --------------------------------------------------------------------------------------

    def start_runs(self) -> None:
        while len(self.running) < self.executor.capacity and not self.stopping.is_set():
            with self.journal.locked():
                row = self.journal.next_queued()
                if row is None:
                    return
                built = self._built(row.key)
                if built is not None:  # the same key was built while this one waited
                    self._duplicate(row, built)
                    continue
                self.journal.update(row.id, state="running", owner=self.id)
            task = Task(job=row.id, image=str(self._work_file(row)), out_dir=str(self.root.out), name=row.name,
                        plan=row.plan, status={"job": row.id, "source": row.source, "sidecars": row.sidecars,
                                               "key": row.key, "attempt": row.attempts + 1})
            self._write_status(row, {"state": "running", "stage": "start"})
            future = self.executor.submit(task)
            future.add_done_callback(lambda _: self.wake.set())
            self.running[row.id] = future
            log("running", job=row.id, file=row.source, output=f"out/{row.name}/", attempt=row.attempts + 1)

    def _built(self, key: str) -> JobRow | None:
        """The finished job with this key, if its asset is still there (delete out/<name>/ to rebuild)."""
        row = self.journal.done_with_key(key)
        if row is None or not (self.root.out / row.name / f"{row.name}.glb").exists():
            return None
        return row

    # -- 4. take ---------------------------------------------------------------------------------------

    def take(self, now: float) -> bool:
        """Claim and validate up to claim_batch settled drops. True if more are waiting."""
        taken = 0
        for drop in self.inbox.scan(now):
            if self.stopping.is_set() or taken >= self.options.claim_batch:
                break
            job_id = self._claim(drop) if drop.image is not None else self._claim_sidecar(drop, now)
            if job_id is None:
                continue
            taken += 1
            row = self.journal.get(job_id)
            if drop.problem:
                self._finish(row, "failed", error=drop.problem)
            else:
                self._validate(row)
        return taken >= self.options.claim_batch

    def _claim(self, drop: Drop, copy_of: JobRow | None = None) -> str | None:
        """Rename the file and its sidecars into work/<job>/ under the job's output name. The first rename is
        the claim: when another daemon renamed the file first, ours fails and the claim is dropped. A late
        sidecar's job (`copy_of`) takes a copy of that job's filed image and claims the sidecar."""
        source = printable(drop.image.name) if copy_of is None else copy_of.source
        job_id = self._add_job(source, [printable(s.name) for s in drop.sidecars], rerun_of=copy_of and copy_of.id)
        row = self.journal.get(job_id)
        folder = self.root.job_dir(job_id)
        folder.mkdir(parents=True)
        if copy_of is not None:
            partial = folder / ".image.partial"
            shutil.copyfile(copy_of.filed_as, partial)  # a copy: the original stays filed where it is
            os.rename(partial, self._work_file(row))
        moves = [] if copy_of is not None else [(drop.image.name, self._work_file(row))]
        moves += [(s.name, self._work_sidecar(row, s.name)) for s in drop.sidecars]
        sidecars = []
        for i, (name, target) in enumerate(moves):
            if os.path.lexists(target):  # foo.toml and foo.TOML: the second waits, a late sidecar of its own
                continue
            try:
                os.rename(self.root.inbox / name, target)
            except FileNotFoundError:
                if i == 0:  # another daemon claimed it first
                    shutil.rmtree(folder)
                    self.journal.delete_job(job_id)
                    return None
                continue  # a sidecar removed meanwhile: the job goes on without it
            if target != self._work_file(row):
                sidecars.append(printable(name))
        if sidecars != row.sidecars:
            self.journal.update(job_id, sidecars=sidecars)
        log("claimed", job=job_id, file=source, sidecars=sidecars,
            **({} if copy_of is None else {"rerun_of": copy_of.id}))
        return job_id

    def _claim_sidecar(self, drop: Drop, now: float) -> str | None:
        """A sidecar that comes after its image was claimed is a new job: that image again, with these
        settings. One whose image never came waits `sidecar_wait_s`, then goes to failed/."""
        first, rest = drop.sidecars[0], drop.sidecars[1:]
        previous = self.journal.latest_with_stem(printable(first.stem), SIDECAR_SUFFIXES)
        if previous is None:
            if now - max(s.since for s in drop.sidecars) < self.options.sidecar_wait_s:
                return None
            problem = (f"{printable(first.name)}: no image named {printable(first.stem)}.png (or .jpg, ...) came "
                       f"with this sidecar; drop the image together with its sidecar")
        elif not previous.filed:
            return None  # its image is still being built; this sidecar starts a new job once it is filed
        elif previous.filed_as is None or not Path(previous.filed_as).is_file():
            problem = (f"{printable(first.name)}: its image {previous.source} is no longer in done/ or failed/; "
                       f"drop the image together with its sidecar")
        else:
            return self._claim(drop, copy_of=previous)
        job_id = self._claim(Drop(first, rest))
        if job_id is not None:
            self._finish(self.journal.get(job_id), "failed", error=problem)
        return None

    def _add_job(self, source: str, sidecars: list[str], rerun_of: str | None = None) -> str:
        """Write the claim down with a free output name: out/<name>/ neither on disk nor held by a live job."""
        job_id = new_job_id()
        base = safe_name(os.path.splitext(source)[0])
        with self.journal.locked():
            in_use = self.journal.names_in_use()
            for n in range(1, 100_000):
                suffix = "" if n == 1 else f"-{n}"
                name = base[:NAME_LIMIT - len(suffix)] + suffix
                if name not in in_use and not os.path.lexists(self.root.out / name):
                    break
            self.journal.add_job(job_id, source, sidecars, name, self.id, rerun_of)
        return job_id

    def _validate(self, row: JobRow) -> None:
        """Check the claimed file and its sidecar, and key it: queued, a duplicate, or failed."""
        try:
            self._check_files(row)
            spec = plan_job(self._work_file(row), self.defaults)
            key, plan = spec.key, plan_record(spec)
        except LyraAssetsError as exc:
            self._finish(row, "failed", error=self._for_artist(row, str(exc)))
            return
        with self.journal.locked():
            built = self._built(key)
            self.journal.update(row.id, key=key, plan=plan)
            if built is not None:
                self._duplicate(self.journal.get(row.id), built)
                return
            self.journal.update(row.id, state="queued", owner=None)
        log("queued", job=row.id, file=row.source, key=key, output=f"out/{row.name}/")

    def _check_files(self, row: JobRow) -> None:
        """What the pipeline cannot see: links (never followed) and files that are not images at all."""
        for path, name in [(self._work_file(row), row.source)] + [
                (self._work_sidecar(row, s), s) for s in row.sidecars]:
            if path.is_symlink():
                target = os.readlink(path)
                where = os.path.normpath(os.path.join(self.root.inbox, target))
                outside = ", outside the inbox" if os.path.commonpath(
                    [where, str(self.root.inbox)]) != str(self.root.inbox) else ""
                raise LyraAssetsError(f"{name}: a symbolic link (to {target}{outside}); links are not followed: "
                                      f"copy the file itself into the inbox")
        suffix = os.path.splitext(row.source)[1].lower()
        if suffix not in IMAGE_SUFFIXES:
            raise LyraAssetsError(f"{row.source}: not a concept image ({suffix or 'no extension'}); drop PNG, "
                                  f"JPEG, WebP, TIFF or BMP images, each with an optional .toml or .json "
                                  f"sidecar of the same name")

    # -- finishing -------------------------------------------------------------------------------------

    def _duplicate(self, row: JobRow, built: JobRow) -> None:
        self._finish(row, "duplicate", duplicate_of=built.id)
        log("duplicate", job=row.id, file=row.source, duplicate_of=built.id, output=f"out/{built.name}/")

    def _finish(self, row: JobRow, state: str, error: str | None = None, duplicate_of: str | None = None,
                attempts: int | None = None) -> None:
        """Record the outcome, then file the originals (a daemon that dies in between has them filed for it)."""
        fields: dict[str, Any] = {"state": state, "owner": self.id, "error": error, "duplicate_of": duplicate_of}
        if attempts is not None:
            fields["attempts"] = attempts
        self.journal.update(row.id, **fields)
        if state == "failed":
            if (self.root.out / row.name).is_dir():  # it ran: the status next to its output says why too
                self._write_status(row, {"state": "failed", "error": error})
            log("failed", job=row.id, file=row.source, error=error)
        self._file(row.id)

    def _file(self, job_id: str) -> None:
        """Move the originals out of work/ into done/ or failed/, with the note that goes with them."""
        row = self.journal.get(job_id)
        folder = self.root.job_dir(row.id)
        files = [(self._work_sidecar(row, s), s) for s in row.sidecars]
        note = self._note(row)
        if note is not None:
            suffix, content = note
            write_json_atomically(folder / ".note.json", content)
            files.append((folder / ".note.json", row.source + suffix))
        # The image moves last: if filing is cut short, a retry still finds it and records where it went.
        files.append((self._work_file(row), row.source))
        with self.journal.locked():
            went = file_group(files, self.root.failed if row.state == "failed" else self.root.done,
                              os.path.splitext(row.source)[0])
            self.journal.update(row.id, filed=True, owner=None, filed_as=None if went[-1] is None else str(went[-1]))
        shutil.rmtree(folder, ignore_errors=True)

    def _note(self, row: JobRow) -> tuple[str, dict[str, Any]] | None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        if row.state == "failed":
            return ".error.json", {"file": row.source, "sidecars": row.sidecars, "error": row.error,
                                   "job": row.id, "attempts": row.attempts, "time": now}
        if row.state == "duplicate":
            built = self.journal.get(row.duplicate_of)
            return ".duplicate.json", {
                "file": row.source, "duplicate_of": {"job": built.id, "file": built.source}, "key": row.key,
                "output": f"out/{built.name}/", "time": now,
                "note": f"the same image with the same settings was already built as out/{built.name}/; "
                        f"delete that folder and drop the image again to rebuild it"}
        return None

    # -- helpers ---------------------------------------------------------------------------------------

    def _work_file(self, row: JobRow) -> Path:
        return self.root.job_dir(row.id) / (row.name + os.path.splitext(row.source)[1])

    def _work_sidecar(self, row: JobRow, sidecar: str) -> Path:
        """Sidecars sit next to the image as name.toml / name.json, where the pipeline looks for them."""
        return self.root.job_dir(row.id) / (row.name + os.path.splitext(sidecar)[1].lower())

    def _for_artist(self, row: JobRow, message: str) -> str:
        """Errors name the files as the artist dropped them, not their paths in work/."""
        pairs = [(self._work_file(row), row.source)] + [(self._work_sidecar(row, s), s) for s in row.sidecars]
        for path, name in pairs:
            message = message.replace(str(path), name)
        return message.replace(str(self.root.job_dir(row.id)) + os.sep, "")

    def _write_status(self, row: JobRow, fields: dict[str, Any]) -> None:
        write_status(self.root.out / row.name, {"job": row.id, "source": row.source, "sidecars": row.sidecars,
                                                "key": row.key, "attempt": row.attempts + 1, **fields})
