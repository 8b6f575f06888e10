"""Structured log lines: one JSON object per line on stderr, for journald, launchd logs and log shippers.

Nothing else may reach stderr as plain text: uncaught exceptions (in any thread) and Python warnings are
logged as JSON lines too, with the traceback as a field (workers wrap their output the same way)."""
from __future__ import annotations

import json
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


def route_to_log() -> None:
    """Send uncaught exceptions and warnings through `log` instead of printing them."""
    sys.excepthook = lambda kind, exc, tb: log_exception("crashed", exc)
    threading.excepthook = lambda args: log_exception("thread_crashed", args.exc_value,
                                                      thread=getattr(args.thread, "name", None))
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log(
        "python_warning", level="warning", message=str(message), category=category.__name__,
        where=f"{filename}:{lineno}")
