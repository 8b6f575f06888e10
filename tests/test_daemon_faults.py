"""The drop-folder daemon against everything a studio drops and everything that happens to it: hostile
sidecars, pipes, names, copies that pause, kill -9, a frozen daemon, two daemons, a broken out/ folder.
Helpers come from test_daemon.py; jobs are small through examples/blockout_defaults.toml."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from test_daemon import Daemon, concept_image, make_root, status_json, wait_until

from lyra_assets.daemon import checks
from lyra_assets.daemon.checks import CheckTask, check
from lyra_assets.daemon.inbox import Inbox, is_temporary, signature
from lyra_assets.daemon.journal import Journal
from lyra_assets.daemon.root import DropRoot, fit_bytes
from lyra_assets.errors import LyraAssetsError

LOG_ORDER_S = 0.1  # two daemons' log lines of one journal step can be this far out of order

# -- the parts, directly -------------------------------------------------------------------------------------


def _task(tmp_path: Path, sidecar: str | None = None, name: str = "a.png", data: bytes | None = None) -> CheckTask:
    image = tmp_path / name
    if data is not None or not image.exists():
        image.write_bytes(concept_image(1) if data is None else data)
    sidecars = ()
    if sidecar is not None:
        (tmp_path / "a.toml").write_text(sidecar)
        sidecars = ((str(tmp_path / "a.toml"), "a.toml"),)
    return CheckTask("job", str(image), name, sidecars, signature(os.lstat(image)), str(tmp_path), None)


@pytest.mark.parametrize("sidecar", ['preset = ["orbit"]\n', 'generator = ["layout"]\n', "[preset]\nname = 1\n"])
def test_a_sidecar_value_of_the_wrong_kind_is_a_report_not_a_crash(tmp_path, sidecar):
    with pytest.raises(LyraAssetsError, match=r"a.toml: (preset|generator) must be a name in quotes"):
        check(_task(tmp_path, sidecar))


def test_any_error_of_the_settings_code_becomes_a_report_that_names_the_sidecar(tmp_path, monkeypatch):
    def broken(image, defaults):
        raise TypeError("unhashable type: 'list'")
    monkeypatch.setattr(checks, "plan_job", broken)
    with pytest.raises(LyraAssetsError, match=r"a.png: the settings in a.toml could not be used \(TypeError: "
                                              r"unhashable type: 'list'\); check that each value"):
        check(_task(tmp_path, "[path]\nframes = 5\n"))


def test_a_check_names_pipes_unreadable_files_and_files_that_changed(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.png")  # opening it would block for ever: only lstat looks at it
    task = CheckTask("job", str(tmp_path / "pipe.png"), "pipe.png", (), (0, 0, 0), str(tmp_path), None)
    with pytest.raises(LyraAssetsError, match=r"pipe.png: a named pipe \(FIFO\), not a file"):
        check(task)
    task = _task(tmp_path)
    with open(task.image, "ab") as f:  # still being written after its claim
        f.write(b"more")
    assert check(task) == {"changed": signature(os.lstat(task.image))}

    cut_short = _task(tmp_path, name="half.png", data=concept_image(3)[:-100])  # its header alone is fine
    with pytest.raises(LyraAssetsError, match="half.png: the image is damaged or truncated"):
        check(cut_short)

    def unreadable(image, defaults):
        raise PermissionError(13, "Permission denied", str(image))
    monkeypatch.setattr(checks, "plan_job", unreadable)
    with pytest.raises(LyraAssetsError, match="a.png: the daemon may not read it .Permission denied.; give its user"):
        check(_task(tmp_path, data=concept_image(2)))


def test_a_daemon_on_this_host_is_dead_only_when_its_process_is(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    host, now = socket.gethostname(), time.time()
    rows = [("frozen", host, os.getpid(), now, now - 3600),  # alive, silent for an hour (SIGSTOP, swapping)
            ("gone", host, 2 ** 22 + 17, now, now),  # no such process
            ("reused", host, os.getpid(), now - 3600, now),  # registered before this process started: PID reused
            ("far", "another-host", 1, now, now - 61)]  # on another host only the heartbeat tells
    with journal.locked() as db:
        db.executemany("INSERT INTO daemons VALUES (?, ?, ?, ?, ?, NULL)", rows)
    assert sorted(journal.dead_daemons(60.0)) == ["far", "gone", "reused"]


def test_names_fit_in_bytes_and_dotted_names_are_taken(tmp_path):
    assert fit_bytes("部" * 80, 100) == "部" * 33  # 99 bytes: whole characters only
    assert not is_temporary("..concept.png") and is_temporary(".concept.png") and is_temporary(".DS_Store")
    inbox = Inbox(tmp_path, settle_s=1.0)
    (tmp_path / "cafe\u0301.png").write_bytes(b"png")  # saved on macOS: NFD
    (tmp_path / "caf\u00e9.toml").write_text("")  # saved on Windows: NFC
    inbox.scan(now=0.0)
    [drop] = inbox.scan(now=2.0)
    assert drop.image.name == "cafe\u0301.png" and [s.name for s in drop.sidecars] == ["caf\u00e9.toml"]


def test_the_daemons_own_folders_are_probed(tmp_path, monkeypatch):
    root = DropRoot.open(tmp_path, create=True)
    assert root.fault() is None
    os.rename(root.out, tmp_path / "elsewhere")
    root.out.write_text("")  # out/ is not a folder any more
    assert root.fault().startswith(f"{root.out}: Not a directory")
    root.out.unlink()
    os.rename(tmp_path / "elsewhere", root.out)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2 ** 40, 2 ** 40, 10 * 2 ** 20))
    assert "the disk is full (10 MiB free)" in root.fault()


def test_an_uncaught_error_is_logged_as_one_json_line():
    # watchdog, for one, logs an error through `logging` when an observer stops mid-event.
    code = ("import logging, warnings\nfrom lyra_assets.daemon.logs import route_to_log\nroute_to_log()\n"
            "warnings.warn('careful')\nlogging.getLogger('watchdog.observers.inotify').error('thread is inactive')\n"
            "logging.getLogger('chatty').info('not shown')\nraise RuntimeError('boom')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["event"] for r in records] == ["python_warning", "library_log", "crashed"]
    assert records[1]["level"] == "error" and records[1]["logger"] == "watchdog.observers.inotify"
    assert records[2]["error"] == "RuntimeError: boom" and "Traceback" in records[2]["traceback"]


# -- the torture run -----------------------------------------------------------------------------------------

ARGS = ("--dead-after", "3", "--sidecar-wait", "4", "--grace", "60")
LONG_NAME = "部屋" * 40 + ".png"  # 240 bytes: a legal name whose output and temporary names must be cut


def _write_with_a_pause(path: Path, data: bytes, pause_s: float) -> None:
    """A copy that stalls (a slow share) for longer than the settle window, half-way through."""
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
        f.flush()
        time.sleep(pause_s)
        f.write(data[len(data) // 2:])


def _stamp(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def test_torture_mixed_drops_kills_a_frozen_daemon_and_a_broken_out_folder(tmp_path):
    root = make_root(tmp_path)
    inbox, logs = root / "inbox", tmp_path / "logs"
    done, failed, ignored = set(), {}, set()  # what each dropped name must come to

    def drop(name: str, data: bytes | str, fate: str = "done", says: str = "") -> None:
        path = inbox / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        if fate == "failed":
            failed[name] = says
        else:
            (done if fate == "done" else ignored).add(name)

    daemons, killed = [Daemon(root, logs, *ARGS), Daemon(root, logs, *ARGS)], {}
    try:
        for i in range(3):
            drop(f"plain {i}.png", concept_image(800 + i))
        drop(LONG_NAME, concept_image(810))
        drop("cafe\u0301 noir.png", concept_image(811))
        drop("caf\u00e9 noir.toml", "[path]\nframes = 5\n")
        drop("..dotted.png", concept_image(812))
        drop("early.png", concept_image(813))
        drop("hall.png", concept_image(814))
        for name, text, says in [
                ("list preset", 'preset = ["orbit"]\n', "list preset.toml"),
                ("list generator", 'generator = ["layout"]\n', "list generator.toml"),
                ("preset table", "[preset]\nname = 'orbit'\n", "preset table.toml"),
                ("nan", "[scene]\neye_height_m = nan\n", "eye_height_m"),
                ("number preset", "preset = 5\n", "number preset.toml")]:
            drop(f"{name}.png", concept_image(820 + len(failed)), "failed", says)
            drop(f"{name}.toml", text, "failed", says)
        os.mkfifo(inbox / "pipe.png")
        failed["pipe.png"] = "a named pipe (FIFO), not a file"
        drop("truncated.png", concept_image(830)[:900], "failed", "still being copied")
        drop("..notes", "text", "failed", "not a concept image")
        drop("no image.toml", "[path]\nframes = 5\n", "failed", "no image named no image.png")
        drop(".hidden.png", b"x", "ignored")
        drop("half.png.part", b"x", "ignored")
        (inbox / "a folder").mkdir()
        ignored.add("a folder")

        # kill -9 each daemon once, each while it runs a job, and start another in its place.
        for n in range(2):
            victim = daemons[n]
            wait_until(lambda d=victim: d.events("running"), "a daemon to run a job", *daemons)
            victim.kill()
            killed[victim.log_path] = time.time()
            daemons[n] = Daemon(root, logs, *ARGS)

        # Freeze one daemon for longer than --dead-after while it runs a job: the other must not take it over.
        for i in range(2):
            drop(f"late {i}.png", concept_image(840 + i))
        frozen = daemons[0]
        deadline = time.monotonic() + 30  # it may well find the other daemon took both: then it holds nothing
        while not frozen.events("running") and time.monotonic() < deadline:
            time.sleep(0.2)
        frozen.signal(signal.SIGSTOP)
        time.sleep(8)  # past --dead-after, and past the other daemon's next look for dead ones
        frozen.signal(signal.SIGCONT)
        frozen_id = frozen.events("started")[0]["daemon"]
        assert not [e for e in daemons[1].events("recovering") if e["dead_daemon"] == frozen_id]

        # A sidecar dropped before a new image of a name built earlier goes with the new one; one dropped for
        # an image built earlier, alone, builds that image again.
        drop("early.toml", "[path]\nframes = 5\n")
        time.sleep(0.5)
        drop("early.png", concept_image(850))
        drop("hall.toml", "[path]\nframes = 5\n")
        copying = threading.Thread(target=_write_with_a_pause, args=(inbox / "paused.png", concept_image(831), 3.0))
        copying.start()
        done.add("paused.png")

        # out/ stops being a folder: both daemons pause, take nothing and charge nothing; then it comes back.
        wait_until(lambda: "early.png" not in os.listdir(inbox), "the new early.png to be taken", *daemons)
        copying.join()
        os.rename(root / "out", tmp_path / "out.aside")
        (root / "out").write_text("")
        wait_until(lambda: all(d.events("paused") for d in daemons), "both daemons to pause", *daemons)
        drop("while paused.png", concept_image(860))
        time.sleep(2)
        assert "while paused.png" in os.listdir(inbox)
        (root / "out").unlink()
        os.rename(tmp_path / "out.aside", root / "out")
        wait_until(lambda: all(d.events("resumed") for d in daemons), "both daemons to resume", *daemons)

        def unfinished() -> dict:
            return {"inbox": sorted(set(os.listdir(inbox)) - ignored), "work": sorted(os.listdir(root / "work")),
                    "jobs": [(j["file"], j["state"], j.get("owner")) for j in status_json(root)["jobs"]
                             if j["state"] not in ("done", "duplicate", "failed")]}

        wait_until(lambda: not any(unfinished().values()), "every drop to be built or filed", *daemons,
                   left=lambda: f"left: {unfinished()}")
        for daemon in daemons:
            daemon.signal(signal.SIGTERM)
        assert [d.wait() for d in daemons] == [0, 0]
    finally:
        for daemon in daemons:
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGCONT)
                daemon.kill()

    # Every log line of every daemon is a JSON object.
    records = {}
    for path in sorted(logs.iterdir()):
        lines = path.read_text(encoding="utf-8").splitlines()
        records[path] = [json.loads(line) for line in lines]
    events = [e for rs in records.values() for e in rs]
    # The only errors are the broken out/ folder's pauses: no step or turn of the loop failed.
    assert {e["event"] for e in events if e["level"] == "error"} == {"paused"}, [
        e for e in events if e["level"] == "error"]

    # Every drop is accounted for exactly once: by a finished job of the journal, or left with a log line.
    jobs = status_json(root)["jobs"]
    nfc = lambda name: unicodedata.normalize("NFC", name)  # noqa: E731
    taken = Counter(nfc(j["file"]) for j in jobs if not j["rerun_of"])
    taken.update(nfc(s) for j in jobs for s in j["sidecars"])
    assert set(taken) == {nfc(n) for n in done | set(failed)} and taken["early.png"] == 2
    assert all(n == 1 for name, n in taken.items() if name != "early.png"), taken
    assert {e["file"] for e in events if e["event"] == "ignored"} >= ignored
    assert set(os.listdir(inbox)) == ignored
    for j in jobs:
        # Filed once, and the journal says where (a kill mid-filing is finished under the names it chose).
        assert j["filed_as"] and (root / j["filed_as"]).exists(), j
    assert len(list((root / "failed").glob("*.error.json"))) == sum(j["state"] == "failed" for j in jobs)
    by_file = {nfc(j["file"]): j for j in jobs if not j["rerun_of"] and j["file"] != "early.png"}
    for name, says in failed.items():
        job = by_file.get(nfc(name)) or next(j for j in jobs if nfc(name) in map(nfc, j["sidecars"]))
        assert job["state"] == "failed" and says in job["error"], (name, job["error"])
        assert (root / (job["filed_as"] + ".error.json")).exists()
    for name in done - {"early.png"}:
        if name.endswith(".toml"):
            continue
        assert by_file[nfc(name)]["state"] in ("done", "duplicate"), by_file[nfc(name)]
    early = [j for j in jobs if j["file"] == "early.png"]
    assert sorted(j["sidecars"] for j in early) == [[], ["early.toml"]] and not any(j["rerun_of"] for j in early)
    [hall_again] = [j for j in jobs if j["rerun_of"]]
    assert hall_again["file"] == "hall.png" and hall_again["sidecars"] == ["hall.toml"]
    assert all(len(p.name.encode()) <= 255 for p in root.rglob("*"))
    assert [e["event"] for e in events if e.get("file") == "paused.png" and e["event"] in (
        "changed", "looks_truncated")]  # claimed half-copied, and waited for
    # Kills and faults charge nothing. A run that dies of its own is charged: on a loaded machine that can be a
    # run stopped as stuck (--stall-timeout), which is the one charge allowed here.
    charged: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "requeued" and e.get("reason", "").startswith(("the run failed", "the check failed")):
            charged.setdefault(e["job"], []).append(e["reason"])
    assert all(charged.get(j["job"]) and all("stopped as stuck" in r for r in charged[j["job"]])
               for j in jobs if j["attempts"]), charged

    # No job ran twice: every key was built once, and a job ran again only after its run was cut short (its
    # daemon killed, or the run requeued when out/ broke), never while its first run could still go on.
    keys = Counter(json.loads(p.read_text())["job_key"] for p in (root / "out").glob("*/manifest.json"))
    assert set(keys.values()) == {1}
    assert Counter(e["job"] for e in events if e["event"] == "done").most_common(1)[0][1] == 1
    for job in {e["job"] for e in events if e["event"] == "running"}:
        runs = sorted((_stamp(e), path) for path, rs in records.items() for e in rs
                      if e["event"] == "running" and e["job"] == job)
        for (start, path), (later, _) in zip(runs, runs[1:]):
            ended = [_stamp(e) for e in records[path] if e.get("job") == job and _stamp(e) > start
                     and e["event"] in ("requeued", "done", "failed")] + [killed.get(path, float("inf"))]
            # The daemon that requeues a run commits it to the journal before it logs it, so another daemon
            # may log the next start a moment before that line's time stamp.
            assert min(ended) <= later + LOG_ORDER_S, (job, runs)
