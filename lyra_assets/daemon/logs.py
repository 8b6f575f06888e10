"""Structured log lines: one JSON object per line on stderr, for journald, launchd logs and log shippers."""
from __future__ import annotations

import json
import sys
import threading
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
