"""The daemon loop: take what settled in the inbox, check it, run it, file the original, and recover what a
dead daemon left behind. All pipeline work happens in an executor, every check of a file in a checker
process; all state lives in the journal. Nothing one file does can stop the loop: every step for a file is
isolated, and whatever goes wrong ends that file's job in failed/ with a report.

One turn of the loop (woken by watchdog, a finished run or check, or every `scan_every_s`):

1. recover   jobs of daemons that died: `claimed` ones are checked again, `running` ones go back to the
             queue, both free (the run did not fail: its daemon died); finished ones whose originals were
             not filed yet are filed. Also: this daemon's own filing that a folder fault held up.
2. collect   finished checks: queued, a duplicate, failed with what to fix, or (the file changed since
             its claim) back to waiting for it to settle. Finished runs: done -> outputs in out/<name>/,
             original to done/; bad input -> failed/ with the error; a crash -> re-queued until
             `max_attempts`; interrupted by shutdown -> re-queued free. A run whose worker has reported no
             progress for `stall_s` is stuck: it is stopped, and counts as a crash.
3. start     queued jobs while the executor has room; a job whose key was built meanwhile is a duplicate.
4. take      settled drops: claimed by renaming them into work/<job>/ (with the sidecar), so of two
             daemons on one root only one gets each file; then checked once settled (see checks.py).

A fault of the daemon's own folders (one not writable, the disk full) is no fault of a file: the daemon
pauses (takes and starts nothing, logs `paused` once), probes every RECOVER_EVERY_S and resumes by itself.

The heartbeat runs on its own thread, so a long step never makes a live daemon look dead.

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
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..files import write_json_atomically
from ..job import NAME_BYTES, SIDECAR_SUFFIXES, Layer, safe_name
from . import checks
from .checks import CheckTask
from .executors import BadInput, Executor, Interrupted, LocalExecutor
from .inbox import Drop, Entry, Inbox, Signature, signature, watch
from .journal import FINAL, STALE_AFTER_S, JobRow, Journal
from .logs import log, log_exception, route_to_log
from .root import DropRoot, file_group, new_job_id, printable
from .runner import Task
from .status import write_status

HEARTBEAT_EVERY_S = 2.0
RECOVER_EVERY_S = 5.0
CHECK_TIMEOUT_S = 300.0  # a check (reading one image) that takes longer is stuck: a hung network share
TRUNCATED_WAIT_S = 5.0  # a file that reads as truncated is checked once more after this, if it did not change


@dataclass(frozen=True)
class Options:
    settle_s: float = 2.0  # a file has arrived once unchanged this long
    scan_every_s: float = 5.0  # the periodic scan; watchdog events only come sooner
    grace_s: float = 30.0  # on SIGTERM, how long running jobs may take to finish
    max_attempts: int = 3  # runs (or checks) that died before a file goes to failed/
    sidecar_wait_s: float = 600.0  # how long a sidecar without an image waits for one
    stall_s: float = 3600.0  # a run silent this long (no progress in its status.json) is stuck
    stale_after_s: float = STALE_AFTER_S  # a daemon on another host silent this long is dead
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
        self.checker = LocalExecutor(1, work=checks.check)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.hurry = threading.Event()
        self.running: dict[str, Future] = {}
        self.stalled: set[str] = set()  # running jobs already being stopped as stuck
        self.waiting: dict[str, tuple[Signature | None, float]] = {}  # claimed jobs to check once settled
        self.checking: dict[str, tuple[Future, float, Signature]] = {}  # job -> (check, started, signature)
        self.truncated: set[str] = set()  # claimed jobs that read as truncated once, waiting for a second look
        self.paused: str | None = None  # why the daemon's own folders cannot be used now
        self.unclaimable: dict[str, Signature] = {}  # inbox files that could not be moved, as they were then
        self._beat_stop = threading.Event()

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until a signal; returns the exit code (0; 1 only if the loop itself broke)."""
        route_to_log()
        self.journal.register_daemon(self.id)
        beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        beat.start()
        observer = self._watch()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        log("started", daemon=self.id, root=str(self.root.path), executor=type(self.executor).__name__,
            capacity=self.executor.capacity)
        code, recovered = 0, 0.0
        try:
            while not self.stopping.is_set():
                self.wake.clear()
                now = time.time()
                try:
                    if now - recovered >= RECOVER_EVERY_S:
                        recovered = now
                        self.keep_folders()
                        self.recover()
                    more = self.turn(now)
                except Exception as exc:  # a bug or the journal's disk: never a reason to stop
                    log_exception("turn_failed", exc)
                    self._folders_at_fault()
                    more = False
                if more:
                    continue
                hints = [h for h in (self.inbox.wait_hint(time.time()), self._settle_hint(time.time()))
                         if h is not None]
                self.wake.wait(min([self.options.scan_every_s, *hints]))
        except BaseException as exc:
            log_exception("crashed", exc)
            code = 1
        finally:
            observer.stop()
            try:
                self.drain()
            except Exception as exc:
                log_exception("drain_failed", exc)
                code = 1
            observer.join()
            self._beat_stop.set()
            try:
                self.journal.daemon_stopped(self.id)
            except Exception as exc:  # the journal's disk: the next daemon sees this one's PID gone
                log_exception("journal_failed", exc)
            log("stopped", level="info" if code == 0 else "error", daemon=self.id, exit_code=code)
        return code

    def turn(self, now: float) -> bool:
        """Steps 2-4; True if more drops are waiting to be taken."""
        self.collect_checks()
        self.collect()
        self.stop_stalled(now)
        if self.paused is not None:
            return False
        self.start_runs()
        more = self.take(now)
        self.start_checks(time.time())
        self.start_runs()
        return more

    def _watch(self):
        try:
            return watch(self.root.inbox, self.wake, self.options.polling, self.options.scan_every_s)
        except OSError as exc:  # out of inotify watches or instances: the periodic scan decides anyway
            log("polling", level="warning", reason=f"file events unavailable ({exc}); polling the inbox")
            return watch(self.root.inbox, self.wake, True, self.options.scan_every_s)

    def _beat(self) -> None:
        """The heartbeat, on its own thread: whatever the loop is doing, this daemon shows it is alive."""
        failing = False
        while not self._beat_stop.wait(HEARTBEAT_EVERY_S):
            try:
                self.journal.heartbeat(self.id)
                failing = False
            except Exception as exc:
                if not failing:
                    log("heartbeat_failed", level="warning", error=f"{type(exc).__name__}: {exc}")
                failing = True

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only set flags: the loop may hold the log lock or be mid-transaction when a signal lands.
        if self.stopping.is_set():
            self.hurry.set()
        self.stopping.set()
        self.wake.set()

    def drain(self) -> None:
        """Let running jobs finish within the grace period, then stop the rest and re-queue them free."""
        self.checker.interrupt()  # a claimed job not yet checked stays claimed: the next daemon checks it
        self.checker.close()
        if self.running:
            log("stopping", running=sorted(self.running), grace_s=self.options.grace_s)
        deadline = time.monotonic() + self.options.grace_s
        while self.running and time.monotonic() < deadline and not self.hurry.is_set():
            wait(list(self.running.values()), timeout=min(1.0, deadline - time.monotonic()),
                 return_when=FIRST_COMPLETED)
            self.collect()
            self.stop_stalled(time.time())
        if self.running:
            log("interrupting", jobs=sorted(self.running))
            self.executor.interrupt()
            wait(list(self.running.values()), timeout=60)
            self.collect()
        self.executor.close()

    # -- the daemon's own folders ----------------------------------------------------------------------

    def keep_folders(self) -> None:
        """Pause while the daemon's folders are at fault (checked now and then anyway: a disk fills up
        slowly); resume once they are usable again."""
        fault = self.root.fault()
        if fault is None and self.paused is not None:
            log("resumed", was=self.paused)
            self.paused = None
        elif fault is not None:
            self._pause(fault)

    def _folders_at_fault(self) -> bool:
        """After an error: was it the daemon's folders (then pause) rather than the file at hand?"""
        fault = self.root.fault()
        if fault is not None:
            self._pause(fault)
        return fault is not None

    def _pause(self, fault: str) -> None:
        if self.paused != fault:
            log("paused", level="error", reason=fault,
                note=f"taking and starting nothing until this is fixed; retrying every {RECOVER_EVERY_S:.0f} s; "
                     f"no job is charged or failed for it")
        self.paused = fault

    def _isolated(self, row: JobRow, step: str, action: Callable[[], None],
                  postpone: Callable[[], None] | None = None) -> None:
        """Do one step for one job. If it raises, and the daemon's folders are at fault, the daemon pauses and
        the step is postponed; otherwise the job ends in failed/ with a report, and the loop carries on."""
        try:
            action()
        except Exception as exc:
            if self._folders_at_fault():
                log("postponed", level="warning", job=row.id, file=row.source, step=step,
                    error=f"{type(exc).__name__}: {exc}")
                if postpone is not None:
                    postpone()
                return
            log_exception("step_failed", exc, job=row.id, file=row.source, step=step)
            self._give_up(row, f"{row.source}: the daemon could not {step} it ({type(exc).__name__}: {exc}); "
                               f"drop it again, and if it fails the same way, report it with this file")

    def _give_up(self, row: JobRow, error: str) -> None:
        """File a job as failed; if even that fails, say so in the log (its files stay in work/<job>/)."""
        try:
            self._finish(self.journal.get(row.id), "failed", error=self._for_artist(row, error))
        except Exception as exc:
            log_exception("stuck", exc, job=row.id, file=row.source, folder=str(self.root.job_dir(row.id)),
                          note="left in the daemon's work/ folder; restart the daemon to try again")

    # -- 1. recover ------------------------------------------------------------------------------------

    def recover(self) -> None:
        others = self.journal.owned_by_others(self.id)
        dead = set(self.journal.dead_daemons(self.options.stale_after_s)) if others else set()
        for row in others:
            if row.owner not in dead:
                continue
            with self.journal.locked():
                row = self.journal.get(row.id)
                if row.owner not in dead:  # another daemon took it over first
                    continue
                self.journal.update(row.id, owner=self.id)
            log("recovering", job=row.id, file=row.source, state=row.state, dead_daemon=row.owner)
            self._isolated(row, "recover", lambda row=row: self._take_over(row))
        if self.paused is None:
            for row in self.journal.jobs(FINAL, owner=self.id):  # filing a folder fault held up
                if not row.filed:
                    self._isolated(row, "file", lambda row=row: self._file(row.id))

    def _take_over(self, row: JobRow) -> None:
        """A dead daemon's job. Nothing is charged: the job did not fail, its daemon died (killed, restarted,
        out of memory); a run that kills its own worker is charged when that worker dies."""
        if row.state == "claimed" and not os.path.lexists(self._work_file(row)):
            # It died between writing the claim down and renaming the file: the file is still in the
            # inbox (or another daemon has it), so the claim never happened.
            self.journal.delete_job(row.id)
            shutil.rmtree(self.root.job_dir(row.id), ignore_errors=True)
        elif row.state == "claimed":
            self.waiting[row.id] = (None, time.time())
        elif row.state == "running":
            reason = "the daemon running it stopped"
            self.journal.update(row.id, state="queued", owner=None)
            self._write_status(row, {"state": "queued", "message": f"{reason}; queued again"})
            log("requeued", job=row.id, file=row.source, attempts=row.attempts, reason=reason)
        else:  # finished, but the originals were not filed yet
            self._file(row.id)

    def _charge(self, row: JobRow, what: str) -> None:
        """A run or check died: try again, or give up after max_attempts."""
        attempts = row.attempts + 1
        if attempts >= self.options.max_attempts:
            self._finish(row, "failed", attempts=attempts,
                         error=f"{row.source}: gave up after {attempts} attempts; the last: {what}. If the file "
                               f"is fine, drop it again; if it keeps failing, report it with this file.")
        elif row.state == "claimed":
            self.journal.update(row.id, attempts=attempts, error=what)
            self.waiting[row.id] = (None, time.time())
            log("recheck", job=row.id, file=row.source, attempts=attempts, reason=what)
        else:
            self.journal.update(row.id, state="queued", owner=None, attempts=attempts, error=what)
            self._write_status(row, {"state": "queued", "message": f"{what}; queued again"})
            log("requeued", job=row.id, file=row.source, attempts=attempts, reason=what)

    # -- 2. collect ------------------------------------------------------------------------------------

    def collect_checks(self) -> None:
        now = time.monotonic()
        for job_id, (future, started, claimed) in list(self.checking.items()):
            if not future.done():
                if now - started > CHECK_TIMEOUT_S:
                    self.checker.stop(job_id, f"the check took over {CHECK_TIMEOUT_S:.0f} s")
                continue
            del self.checking[job_id]
            row = self.journal.get(job_id)
            self._isolated(row, "check", lambda row=row, future=future, claimed=claimed: self._checked(
                row, future, claimed), postpone=lambda row=row, claimed=claimed: self.waiting.update(
                {row.id: (claimed, 0.0)}))

    def _checked(self, row: JobRow, future: Future, claimed: Signature) -> None:
        error = future.exception()
        if isinstance(error, Interrupted):
            return  # shutdown: it stays claimed, and the next daemon checks it
        if isinstance(error, BadInput) and "truncated" in str(error) and row.id not in self.truncated:
            # A copy that paused longer than the settle window looks truncated: give it time to go on.
            self.truncated.add(row.id)
            self.waiting[row.id] = (claimed, time.time() + max(TRUNCATED_WAIT_S, 2 * self.options.settle_s))
            log("looks_truncated", job=row.id, file=row.source,
                note="checked again in a while, in case it is still being copied")
            return
        if isinstance(error, BadInput):
            self.truncated.discard(row.id)
            self._finish(row, "failed", error=self._for_artist(row, _asks_if_still_copying(str(error))))
            return
        if error is not None:
            self._charge(row, f"the check failed: {_last_line(error)}")
            return
        self.truncated.discard(row.id)
        result = future.result()
        if "changed" in result:
            self.waiting[row.id] = (None if result["changed"] is None else tuple(result["changed"]), time.time())
            log("changed", job=row.id, file=row.source,
                note="it changed after it was claimed (still being copied?); checked once it stops changing")
            return
        with self.journal.locked():
            built = self._built(result["key"])
            self.journal.update(row.id, key=result["key"], plan=result["plan"])
            if built is not None:
                self._duplicate(self.journal.get(row.id), built)
                return
            self.journal.update(row.id, state="queued", owner=None)
        log("queued", job=row.id, file=row.source, key=result["key"], output=f"out/{row.name}/")

    def collect(self) -> None:
        for job_id, future in list(self.running.items()):
            if not future.done():
                continue
            del self.running[job_id]
            self.stalled.discard(job_id)
            row = self.journal.get(job_id)
            self._isolated(row, "finish", lambda row=row, future=future: self._ran(row, future),
                           postpone=lambda row=row: self._requeue_free(row, "the daemon's folders were at fault"))

    def _ran(self, row: JobRow, future: Future) -> None:
        error = future.exception()
        if error is None:
            outputs = future.result()
            self.journal.update(row.id, state="done", owner=self.id)  # before the status: done is done
            self._write_status(row, {"state": "done", "outputs": outputs, "stage": "done", "progress": 1.0})
            self._finish(self.journal.get(row.id), "done")
            log("done", job=row.id, file=row.source, output=f"out/{row.name}/", outputs=outputs)
        elif isinstance(error, Interrupted):
            self._requeue_free(row, "shutdown")
        elif self._folders_at_fault():  # out/ not writable, the disk full: not the job's fault
            self._requeue_free(row, "the daemon's folders were at fault")
        elif isinstance(error, BadInput):
            self._finish(row, "failed", error=self._for_artist(row, _asks_if_still_copying(str(error))))
        else:
            log("run_error", level="warning", job=row.id, file=row.source, error=str(error))
            self._charge(row, f"the run failed: {_last_line(error)}")

    def _requeue_free(self, row: JobRow, reason: str) -> None:
        self.journal.update(row.id, state="queued", owner=None)
        message = ("interrupted by a daemon shutdown; it starts again when a daemon runs" if reason == "shutdown"
                   else f"{reason}; queued again")
        self._write_status(row, {"state": "queued", "message": message})
        log("requeued", job=row.id, file=row.source, reason=reason)

    def stop_stalled(self, now: float) -> None:
        """A worker writes its status at least at every stage; one silent for stall_s is stuck (a deadlock in a
        native library has been seen), and would hold its worker forever."""
        for job_id in set(self.running) - self.stalled:
            row = self.journal.get(job_id)
            status = self.root.out / row.name / "status.json"
            try:
                silent = now - status.stat().st_mtime
                started = "worker" in json.loads(status.read_text(encoding="utf-8"))  # not still waiting for one
            except (OSError, ValueError):
                continue
            if started and silent > self.options.stall_s:
                self.stalled.add(job_id)
                reason = f"no progress for {silent:.0f} s; stopped as stuck"
                log("stalled", level="warning", job=job_id, file=row.source, silent_s=round(silent, 1))
                self.executor.stop(job_id, reason)

    # -- 3. start --------------------------------------------------------------------------------------

    def start_runs(self) -> None:
        while len(self.running) < self.executor.capacity and not self.stopping.is_set() and self.paused is None:
            with self.journal.locked():
                row = self.journal.next_queued()
                if row is None:
                    return
                built = self._built(row.key)
                if built is None:
                    self.journal.update(row.id, state="running", owner=self.id)
            if built is not None:  # the same key was built while this one waited
                self._isolated(row, "file", lambda row=row, built=built: self._duplicate(row, built))
                continue
            self._isolated(row, "start", lambda row=row: self._start(row),
                           postpone=lambda row=row: self._requeue_free(row, "the daemon's folders were at fault"))

    def _start(self, row: JobRow) -> None:
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
        """Claim up to claim_batch settled drops, while fewer than that wait for their check (the rest stay in
        the inbox, free for another daemon). True if more are waiting."""
        taken = 0
        for drop in self.inbox.scan(now):
            if (self.stopping.is_set() or self.paused is not None or taken >= self.options.claim_batch
                    or len(self.waiting) >= self.options.claim_batch):
                break
            first = drop.image or drop.sidecars[0]
            if self.unclaimable.get(first.name) == first.signature:
                continue
            try:
                job_id = self._claim(drop) if drop.image is not None else self._claim_sidecar(drop, now)
            except Exception as exc:
                if self._folders_at_fault():
                    break
                self.unclaimable[first.name] = first.signature
                log_exception("ignored", exc, file=printable(first.name),
                              reason="it could not be moved out of the inbox, so it is left there; it is tried "
                                     "again when it changes (saved again, renamed)")
                continue
            if job_id is None:
                continue
            taken += 1
            if drop.problem:
                self.waiting.pop(job_id, None)
                row = self.journal.get(job_id)
                self._isolated(row, "file", lambda row=row: self._finish(row, "failed", error=drop.problem))
        return taken >= self.options.claim_batch

    def _claim(self, drop: Drop, copy_of: JobRow | None = None) -> str | None:
        """Rename the file and its sidecars into work/<job>/ under the job's output name. The first rename is
        the claim: when another daemon renamed the file first, ours fails and the claim is dropped. A late
        sidecar's job (`copy_of`) takes a copy of that job's filed image and claims the sidecar. The job
        then waits in `waiting` until it is checked."""
        entries = [drop.image] if copy_of is None else []
        if any(_changed(self.root.inbox / e.name, e) for e in entries + list(drop.sidecars)):
            return None  # it changed since the scan: it has not arrived yet after all
        source = printable(drop.image.name) if copy_of is None else copy_of.source
        job_id = self._add_job(source, [printable(s.name) for s in drop.sidecars], rerun_of=copy_of and copy_of.id)
        row = self.journal.get(job_id)
        folder = self.root.job_dir(job_id)
        moves = [] if copy_of is not None else [(drop.image.name, self._work_file(row))]
        moves += [(s.name, self._work_sidecar(row, s.name)) for s in drop.sidecars]
        sidecars = []
        try:
            folder.mkdir(parents=True)
            if copy_of is not None:
                partial = folder / ".image.partial"
                shutil.copyfile(copy_of.filed_as, partial)  # a copy: the original stays filed where it is
                os.rename(partial, self._work_file(row))
            for i, (name, target) in enumerate(moves):
                if os.path.lexists(target):  # foo.toml and foo.TOML: the second waits, a late sidecar of its own
                    continue
                try:
                    os.rename(self.root.inbox / name, target)
                except OSError as exc:
                    if i == 0:  # FileNotFoundError: another daemon claimed it first
                        raise
                    log("sidecar_left", level="warning", job=job_id, file=printable(name), error=str(exc))
                    continue  # a sidecar removed meanwhile: the job goes on without it
                if target != self._work_file(row):
                    sidecars.append(printable(name))
        except BaseException as exc:
            shutil.rmtree(folder, ignore_errors=True)  # nothing of the inbox's is in it: the first move failed
            self.journal.delete_job(job_id)
            if isinstance(exc, FileNotFoundError):
                return None
            raise
        if sidecars != row.sidecars:
            self.journal.update(job_id, sidecars=sidecars)
        image = self._work_file(row)
        now = signature(os.lstat(image))
        arrived = drop.image if copy_of is None and drop.image.signature == now else None
        self.waiting[job_id] = (now, arrived.since if arrived else time.time())
        log("claimed", job=job_id, file=source, sidecars=sidecars,
            **({} if copy_of is None else {"rerun_of": copy_of.id}))
        return job_id

    def _claim_sidecar(self, drop: Drop, now: float) -> str | None:
        """A sidecar alone. It goes with the image that arrives with it or after it, so it first waits
        `sidecar_wait_s` for one, unless it came soon after an image of its name was taken (then it is
        that image's late sidecar). A late sidecar is a new job: that image again, with these settings.
        One whose image never came goes to failed/."""
        first, rest = drop.sidecars[0], drop.sidecars[1:]
        arrived = min(s.since for s in drop.sidecars)
        previous = self.journal.latest_with_stem(printable(first.stem), SIDECAR_SUFFIXES)
        late = previous is not None and arrived - previous.created <= self.options.sidecar_wait_s
        if not late and now - max(s.since for s in drop.sidecars) < self.options.sidecar_wait_s:
            return None  # its image may still come
        if previous is None:
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
            self.waiting.pop(job_id, None)
            row = self.journal.get(job_id)
            self._isolated(row, "file", lambda: self._finish(row, "failed", error=problem))
        return None

    def _add_job(self, source: str, sidecars: list[str], rerun_of: str | None = None) -> str:
        """Write the claim down with a free output name: out/<name>/ neither on disk nor held by a live job."""
        job_id = new_job_id()
        stem = os.path.splitext(source)[0]
        with self.journal.locked():
            in_use = self.journal.names_in_use()
            for n in range(1, 100_000):
                suffix = "" if n == 1 else f"-{n}"
                name = safe_name(stem, NAME_BYTES - len(suffix)) + suffix
                if name not in in_use and not os.path.lexists(self.root.out / name):
                    break
            self.journal.add_job(job_id, source, sidecars, name, self.id, rerun_of)
        return job_id

    def start_checks(self, now: float) -> None:
        """Check the claimed jobs that have stayed unchanged for the settle window, one at a time."""
        for job_id, (claimed, since) in list(self.waiting.items()):
            if len(self.checking) >= self.checker.capacity or self.stopping.is_set():
                return
            row = self.journal.get(job_id)
            if row is None or row.state != "claimed" or row.owner != self.id:
                del self.waiting[job_id]  # finished meanwhile (filed as a problem drop)
                continue
            try:
                current = signature(os.lstat(self._work_file(row)))
            except FileNotFoundError:
                current = None  # removed from work/: the check says so
            if current != claimed:
                if claimed is not None:
                    log("changed", job=job_id, file=row.source,
                        note="it changed after it was claimed (still being copied?); checked once it stops changing")
                self.waiting[job_id] = (current, now)  # still changing (or seen for the first time)
                continue
            if now - since < self.options.settle_s:
                continue
            task = CheckTask(job_id, str(self._work_file(row)), row.source,
                             tuple((str(self._work_sidecar(row, s)), s) for s in row.sidecars), current,
                             str(self.root.inbox), self.defaults)
            future = self.checker.submit(task)
            del self.waiting[job_id]  # only now: had the submit failed, the job would still wait for a check
            future.add_done_callback(lambda _: self.wake.set())
            self.checking[job_id] = (future, time.monotonic(), current)

    def _settle_hint(self, now: float) -> float | None:
        """Seconds until a claimed job waiting to settle could be checked (none while nothing could start one:
        a finished check wakes the loop)."""
        if self.paused is not None or len(self.checking) >= self.checker.capacity:
            return None
        pending = [since + self.options.settle_s - now for _, since in self.waiting.values()]
        return max(0.0, min(pending)) if pending else None

    # -- finishing -------------------------------------------------------------------------------------

    def _duplicate(self, row: JobRow, built: JobRow) -> None:
        self._finish(row, "duplicate", duplicate_of=built.id)
        log("duplicate", job=row.id, file=row.source, duplicate_of=built.id, output=f"out/{built.name}/")

    def _finish(self, row: JobRow, state: str, error: str | None = None, duplicate_of: str | None = None,
                attempts: int | None = None) -> None:
        """Record the outcome, then file the originals (a daemon that dies in between, or meets a fault of its
        folders, has them filed later)."""
        fields: dict[str, Any] = {"state": state, "owner": self.id, "error": error, "duplicate_of": duplicate_of}
        if attempts is not None:
            fields["attempts"] = attempts
        self.journal.update(row.id, **fields)
        if state == "failed":
            if (self.root.out / row.name).is_dir():  # it ran: the status next to its output says why too
                self._write_status(row, {"state": "failed", "error": error})
            log("failed", job=row.id, file=row.source, error=error)
        try:
            self._file(row.id)
        except Exception as exc:
            if self._folders_at_fault():
                log("filing_postponed", level="warning", job=row.id, file=row.source, error=str(exc))
                return
            log_exception("filing_failed", exc, job=row.id, file=row.source)
            self._file(row.id, stem=row.id)  # under the job's id: a name the folders surely take

    def _file(self, job_id: str, stem: str | None = None) -> None:
        """Move the originals out of work/ into done/ or failed/, with the note that goes with them."""
        row = self.journal.get(job_id)
        folder = self.root.job_dir(row.id)
        base = os.path.splitext(row.source)[0]
        # Every name of the group starts with the image's stem (a sidecar paired by its NFC form takes it).
        named = base if stem is None else stem
        files = [(self._work_sidecar(row, s), named + os.path.splitext(s)[1]) for s in row.sidecars]
        plan = folder / ".filing.json"  # the names chosen, kept until the journal records the filing
        note = self._note(row)
        if note is not None:
            suffix, content = note
            if not plan.exists():  # else a filing cut short has written (and maybe moved) the note already
                write_json_atomically(folder / ".note.json", content)
            files.append((folder / ".note.json", named + row.source[len(base):] + suffix))
        files.append((self._work_file(row), named + row.source[len(base):]))
        with self.journal.locked():
            went = file_group(files, self.root.failed if row.state == "failed" else self.root.done, named, plan)
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
        """Errors name the files as the artist dropped them, not their paths in work/; an error that names
        none of them (a settings error from deep down) is given the file and its sidecars up front."""
        pairs = [(self._work_file(row), row.source)] + [(self._work_sidecar(row, s), s) for s in row.sidecars]
        for path, name in pairs:
            message = message.replace(str(path), name)
        message = message.replace(str(self.root.job_dir(row.id)) + os.sep, "")
        if not any(name in message for _, name in pairs):
            message = f"{row.source}{' with ' + ', '.join(row.sidecars) if row.sidecars else ''}: {message}"
        return message

    def _write_status(self, row: JobRow, fields: dict[str, Any]) -> None:
        """The status next to the output, for artists: worth a warning when it cannot be written, never a
        job (a fault of out/ pauses the daemon instead)."""
        try:
            write_status(self.root.out / row.name, {"job": row.id, "source": row.source, "sidecars": row.sidecars,
                                                    "key": row.key, "attempt": row.attempts + 1, **fields})
        except OSError as exc:
            if not self._folders_at_fault():
                log("status_not_written", level="warning", job=row.id, file=row.source, error=str(exc))


def _changed(path: Path, entry: Entry) -> bool:
    try:
        return signature(os.lstat(path)) != entry.signature
    except FileNotFoundError:
        return False  # claimed by another daemon: the rename says so


def _asks_if_still_copying(message: str) -> str:
    if "truncated" in message:
        return (message + " If it was still being copied into the inbox when it was taken, drop it again once "
                          "the copy is complete (or start the daemon with a longer --settle).")
    return message


def _last_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__
