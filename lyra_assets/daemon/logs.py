"""Structured log lines: one JSON object per line on stderr, for journald, launchd logs and log shippers.

Nothing else may reach stderr as plain text: uncaught exceptions (in any thread), Python warnings and
libraries' `logging` records (watchdog's, for one) are logged as JSON lines too, with the traceback as a
field (workers wrap their output the same way)."""
from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
import warnings
from datetime import UTC, datetime
from typing import Any

_lock = threading.Lock()  # executor threads log too; keep lines whole


def log(event: str, level: str = "info", **fields: Any) -> None:
    record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level,
              "event": event, **fields}
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    with _lock:
        sys.stderr.write(line)
        sys.stderr.flush()


def log_exception(event: str, exc: BaseException, **fields: Any) -> None:
    """An error with its traceback as one JSON line."""
    log(event, level="error", error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)), **fields)


class _LibraryRecords(logging.Handler):
    """A library's `logging` record (warning or worse) as one JSON line, not logging's plain-text fallback."""

    def emit(self, record: logging.LogRecord) -> None:
        fields = {"logger": record.name, "message": record.getMessage()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["traceback"] = "".join(traceback.format_exception(record.exc_info[1]))
        log("library_log", level=record.levelname.lower(), **fields)


def route_to_log() -> None:
    """Send uncaught exceptions, warnings and libraries' log records through `log` instead of printing them."""
    logging.basicConfig(level=logging.WARNING, handlers=[_LibraryRecords()], force=True)
    sys.excepthook = lambda kind, exc, tb: log_exception("crashed", exc)
    threading.excepthook = lambda args: log_exception("thread_crashed", args.exc_value,
                                                      thread=getattr(args.thread, "name", None))
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log(
        "python_warning", level="warning", message=str(message), category=category.__name__,
        where=f"{filename}:{lineno}")
