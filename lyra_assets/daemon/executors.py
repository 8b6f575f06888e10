"""The executor seam: where a job's run happens, and the local one (a pool of worker processes, the default).

An executor takes a runner.Task and returns a concurrent.futures.Future of the outputs (paths relative to
the job's output folder), or one that fails with:

    BadInput     the pipeline refused the input (LyraAssetsError); the message says what to fix; no retry
    RunBroken    the run crashed, hit an unexpected error or was stopped as stuck: worth another attempt
    Interrupted  the daemon stopped it on shutdown: re-queued without charging an attempt

The daemon keeps at most `capacity` runs in flight and decides everything else from the journal.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from ..errors import LyraAssetsError
from . import runner
from .runner import Task

# A worker is replaced after this many jobs: the pipeline's memory grows slowly from job to job (about
# 0.3 MiB a job in bench/bench_daemon.py), and a farm daemon runs for months. A fresh worker costs a few
# seconds of imports, about 1% of 100 small jobs.
JOBS_PER_WORKER = 100


class BadInput(Exception):
    """The input cannot be built as it is; str() says what to fix."""


class RunBroken(Exception):
    """The run ended abnormally (a crash or an unexpected error); another attempt may succeed."""


class Interrupted(Exception):
    """The daemon stopped the run (shutdown); it did not fail."""


class Executor(Protocol):
    capacity: int

    def submit(self, task: Task) -> Future: ...

    def stop(self, job: str, reason: str) -> None:
        """Stop one run now (it is stuck); its future fails with RunBroken(reason)."""

    def interrupt(self) -> None:
        """Stop every run in flight now; their futures fail with Interrupted."""

    def close(self) -> None: ...


class LocalExecutor:
    """`capacity` long-lived worker processes, one job at a time each.

    Each worker is its own process rather than a slot in a shared pool, so a run that kills its process
    (a segfault, the OOM killer) is charged to that job alone, and the daemon can stop one run by killing its
    worker. Workers live across jobs (JOBS_PER_WORKER), so imports and a model a generator caches stay loaded.
    They start
    with `spawn` (the daemon has threads; forking them is unsafe), ignore SIGINT/SIGTERM (a service manager
    signals the whole group; the daemon decides when a run stops) and exit when the daemon dies, even by
    kill -9, so no orphan keeps writing a job the restarted daemon runs again.
    """

    def __init__(self, workers: int, work: Callable[[Any], Any] = runner.run) -> None:
        self.capacity = workers
        context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(context, work) for _ in range(workers)]
        self._idle = list(self._workers)
        self._busy: dict[str, _Worker] = {}  # job -> the worker running it
        self._lock = threading.Lock()

    def submit(self, task: Task) -> Future:
        with self._lock:
            worker = self._idle.pop()  # the daemon never submits more than capacity
            self._busy[task.job] = worker
        future: Future = Future()
        future.set_running_or_notify_cancel()
        threading.Thread(target=self._drive, args=(worker, task, future), name=f"run {task.job}",
                         daemon=True).start()
        return future

    def _drive(self, worker: _Worker, task: Task, future: Future) -> None:
        outputs, error = None, None
        try:
            outputs = worker.run(task)
        except BaseException as exc:  # BadInput, RunBroken, Interrupted, or a broken pipe
            error = exc if isinstance(exc, (BadInput, RunBroken, Interrupted)) else RunBroken(
                f"lost contact with the worker process ({exc!r})")
        # The worker is free before the future says so: the daemon submits the next task as soon as it sees
        # this one done, and a submit that found no idle worker lost that job (it stayed claimed for ever).
        with self._lock:
            del self._busy[task.job]
            self._idle.append(worker)
        if error is None:
            future.set_result(outputs)
        else:
            future.set_exception(error)

    def stop(self, job: str, reason: str) -> None:
        with self._lock:
            worker = self._busy.get(job)
        if worker is not None:
            worker.stop(reason)

    def interrupt(self) -> None:
        for worker in self._workers:
            worker.interrupt()

    def close(self) -> None:
        for worker in self._workers:
            worker.close()


class _Worker:
    def __init__(self, context, work: Callable[[Any], Any]) -> None:
        self._context = context
        self._work = work  # a module-level function: `spawn` sends it to the process by name
        self._process = None
        self._conn: Connection | None = None
        self._lifeline: Connection | None = None
        self._lock = threading.Lock()
        self._interrupted = False
        self._stopped: str | None = None  # why the current run was stopped
        self._jobs = 0  # run by the current process

    def run(self, task: Task) -> dict[str, str]:
        with self._lock:
            if self._interrupted:
                raise Interrupted()
            self._stopped = None
            if self._process is None or not self._process.is_alive() or self._jobs >= JOBS_PER_WORKER:
                self._start()
            process, conn = self._process, self._conn
            conn.send(task)
            self._jobs += 1
        ready = wait([conn, process.sentinel])
        reply = None
        if conn in ready:
            try:
                reply = conn.recv()
            except EOFError:  # the process died just after its last message
                pass
        if reply is None:
            with self._lock:
                self._discard()
                if self._interrupted:
                    raise Interrupted()
                if self._stopped:
                    raise RunBroken(self._stopped)
            raise RunBroken(f"the worker process died ({_describe_exit(process.exitcode)})")
        kind, value = reply
        if kind == "ok":
            return value
        if kind == "bad-input":
            raise BadInput(value)
        raise RunBroken(value)

    def _start(self) -> None:
        self._discard()
        self._jobs = 0
        self._conn, child_conn = self._context.Pipe()
        lifeline_end, self._lifeline = self._context.Pipe(duplex=False)
        self._process = self._context.Process(target=_serve, args=(child_conn, lifeline_end, self._work),
                                              name="lyra-assets worker")
        self._process.start()
        child_conn.close()
        lifeline_end.close()

    def _discard(self) -> None:
        """End the worker process: closing our ends of its pipes makes an idle one exit (and a dead one is
        only reaped); kill it if it does not."""
        for conn in (self._conn, self._lifeline):
            if conn is not None:
                conn.close()
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._process = self._conn = self._lifeline = None

    def stop(self, reason: str) -> None:
        with self._lock:
            self._stopped = reason
            if self._process is not None:
                self._process.kill()

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            if self._process is not None:
                self._process.kill()

    def close(self) -> None:
        with self._lock:
            self._interrupted = True
            self._discard()


def _serve(conn: Connection, lifeline: Connection, work: Callable[[Any], Any]) -> None:
    """A worker process: run tasks until the daemon closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _log_output_as_json()
    threading.Thread(target=_exit_with_daemon, args=(lifeline,), daemon=True).start()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        try:
            reply = ("ok", work(task))
        except LyraAssetsError as exc:
            reply = ("bad-input", str(exc))
        except Exception:  # a bug or a resource problem: reported with its traceback, retried
            reply = ("error", traceback.format_exc())
        conn.send(reply)


def _log_output_as_json() -> None:
    """The worker shares the daemon's stderr, whose every line is a JSON object: whatever a library prints
    there (a warning, a native library's message, a traceback) is wrapped into a `worker_output` line."""
    sys.stderr.flush()
    read, write = os.pipe()
    original = os.dup(2)
    os.dup2(write, 2)
    os.close(write)

    def forward() -> None:
        with os.fdopen(read, "rb") as lines, os.fdopen(original, "wb", buffering=0) as out:
            for line in lines:
                record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": "warning",
                          "event": "worker_output", "pid": os.getpid(),
                          "line": line.decode("utf-8", "replace").rstrip("\n")}
                out.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    threading.Thread(target=forward, name="stderr as JSON", daemon=True).start()


def _exit_with_daemon(lifeline: Connection) -> None:
    """The daemon holds the only other end of `lifeline`; it closes when the daemon exits or dies."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"
