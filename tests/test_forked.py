"""A call in a forked child: its result, its error, a child that dies, and stopping one that runs."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from lyra_assets import forked
from lyra_assets.errors import LyraAssetsError

pytestmark = pytest.mark.skipif(not forked.AVAILABLE, reason="forked calls are Linux only")


def _pid_and_sum(values: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(values.sum())


def _fail(message: str) -> None:
    raise ValueError(message)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_result_comes_back_from_another_process():
    pid, total = forked.Forked(_pid_and_sum, np.arange(10.0)).result()
    assert pid != os.getpid() and total == 45.0


def test_the_childs_error_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="no such chart"):
        forked.Forked(_fail, "no such chart").result()


def test_a_child_that_dies_is_an_error_that_says_what_to_do():
    with pytest.raises(LyraAssetsError, match=r"_die died in its helper process .*run the job again"):
        forked.Forked(_die).result()


def test_kill_stops_a_running_child_and_reaps_it():
    child = forked.Forked(time.sleep, 60)
    started = time.monotonic()
    child.kill()
    assert time.monotonic() - started < 10
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(child._pid, os.WNOHANG)
    child.kill()  # a second kill does nothing


def _open_links() -> list[str]:
    """What each open descriptor is: 'pipe:[inode]' for a pipe."""
    links = []
    for name in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    return links


def test_the_child_holds_no_copy_of_the_parents_pipes():
    read, write = os.pipe()  # e.g. ffmpeg's input: its reader waits until every copy of `write` is closed
    try:
        inside = forked.Forked(_open_links).result()
        pipe = f"pipe:[{os.fstat(write).st_ino}]"
    finally:
        os.close(read)
        os.close(write)
    assert pipe not in inside
