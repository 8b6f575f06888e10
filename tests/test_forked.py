"""A call in a forked child: its result, its error, a child that dies, and stopping one that runs."""
from __future__ import annotations

import gc
import os
import signal
import time

import numpy as np
import pytest
import xatlas

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


def _collect_often() -> int:
    gc.set_threshold(1)  # every allocation below runs the collector
    return len([[] for _ in range(1000)])


def test_the_child_does_not_collect_the_parents_garbage():
    # The parent's garbage may own threads (an xatlas.Atlas whose task scheduler has run): freeing it in the
    # child waited for ever on threads the child doesn't have (seen in a test build).
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.random.default_rng(0).random((30, 3), np.float32), np.arange(30, dtype=np.uint32).reshape(-1, 3))
    atlas.generate()
    thresholds = gc.get_threshold()
    gc.set_threshold(10**9)  # nothing collects the cycle below before the fork
    cycle = [atlas]
    cycle.append(cycle)
    del atlas, cycle
    child = forked.Forked(_collect_often)

    def give_up(*_):
        raise TimeoutError("the child hangs")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(30)
    try:
        assert child.result() == 1000
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        child.kill()
        gc.set_threshold(*thresholds)
        gc.collect()


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not picklable")


def _fail_unpicklably() -> None:
    raise _Unpicklable("lost in the pipe")


def test_an_error_that_cannot_be_pickled_still_says_what_it_was():
    with pytest.raises(LyraAssetsError, match=r"_fail_unpicklably failed in its helper process: .*lost in the pipe"):
        forked.Forked(_fail_unpicklably).result()


def _keep_and_count() -> tuple[int, bool]:
    thing = object()
    return len(forked._kept), forked.keep(thing) is thing and len(forked._kept) == 1


def test_keep_holds_objects_in_a_child_only():
    assert forked.Forked(_keep_and_count).result() == (0, True)
    forked.keep(object())
    assert forked._kept == []  # the parent frees as usual
