"""A function call in a forked child process: for C extensions that hold the GIL for long (xatlas' packer),
so the process's other threads keep running meanwhile, and for trying several inputs at once.

Linux only (`AVAILABLE`): a fork there costs milliseconds and needs no re-import; spawn's fresh interpreter
would spend longer importing than the call takes. The child runs only the given function (numpy and C
code), never the parent's other threads' work, so the locks those threads may hold at the fork don't matter;
and it never collects the parent's garbage (see the child's first lines).
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
from typing import Any, Callable, Generic, TypeVar

from .errors import LyraAssetsError

AVAILABLE = sys.platform.startswith("linux")
T = TypeVar("T")
_in_child = False
_kept: list[Any] = []  # a child's objects that are never destroyed (see keep)


def keep(thing: T) -> T:
    """In a forked child, hold `thing` until the child exits, which runs no destructor: for objects whose
    destructor can hang. An xatlas.Atlas stops its worker threads with a wake-up that is lost if a worker
    is just going to sleep, then waits for that worker for ever (a test build hung there). Elsewhere,
    `thing` is left to be freed as usual."""
    if _in_child:
        _kept.append(thing)
    return thing


class Forked(Generic[T]):
    """`function(*args)` running in a forked child; `result()` waits for it (raising what it raised),
    `kill()` stops it. The result comes back pickled through a pipe."""

    def __init__(self, function: Callable[..., T], *args: Any) -> None:
        self._what = getattr(function, "__name__", "the call")
        read, write = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the child: call, send, and leave without the parent's exit handlers
            global _in_child
            _in_child = True
            # The parent's garbage is not this child's to collect: freeing an object that owns threads (an
            # xatlas.Atlas) would wait for ever on threads that only the parent has.
            gc.disable()
            # Only its own pipe stays open: a copy of another pipe's end (ffmpeg's input, a daemon worker's
            # sentinel) would keep the other side waiting for this child.
            os.closerange(3, write)
            os.closerange(write + 1, os.sysconf("SC_OPEN_MAX"))
            try:
                try:
                    outcome = (True, function(*args))
                except BaseException as exc:  # noqa: BLE001  every error goes back to the parent
                    outcome = (False, exc)
                try:
                    data = pickle.dumps(outcome, pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001  e.g. an error that can't be pickled: say what it was
                    data = pickle.dumps((False, LyraAssetsError(f"{self._what} failed in its helper process: "
                                                                f"{outcome[1]!r} ({exc})")))
                with os.fdopen(write, "wb") as pipe:
                    pipe.write(data)
            finally:
                os._exit(0)
        os.close(write)
        self._pipe = os.fdopen(read, "rb")
        self._reaped = False

    def result(self) -> T:
        with self._pipe:
            data = self._pipe.read()
        _, status = os.waitpid(self._pid, 0)
        self._reaped = True
        if not data:
            raise LyraAssetsError(f"{self._what} died in its helper process (wait status {status}); run the job "
                                  f"again, and report it if it happens again")
        ok, value = pickle.loads(data)
        if not ok:
            raise value
        return value

    def kill(self) -> None:
        """Stop the child if its result was not taken, and reap it."""
        if self._reaped:
            return
        self._pipe.close()
        os.kill(self._pid, signal.SIGKILL)  # a child that ended but is not reaped yet is still there to kill
        os.waitpid(self._pid, 0)
        self._reaped = True
