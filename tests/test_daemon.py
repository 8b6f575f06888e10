"""The drop-folder daemon as studios run it: real `lyra-assets watch` processes, real files, watchdog, SQLite,
signals and kill -9. Also imported by test_daemon_ray.py, which runs the same drop on a local Ray cluster.

Jobs are kept small by the folder's own defaults.toml (9 frames of 208x120, coarse voxels, small textures),
the way an operator would configure a blockout farm.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from lyra_assets.cli import main
from lyra_assets.daemon.inbox import Entry, Inbox, group, is_temporary
from lyra_assets.daemon.root import file_group, printable
from lyra_assets.daemon.settings import load_defaults, plan_job, plan_record, planned_spec
from lyra_assets.errors import LyraAssetsError
from lyra_assets.walkthrough import Walkthrough

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "corridor.png"
FAST_DEFAULTS = (REPO / "examples" / "blockout_defaults.toml").read_text()
LONG_JOB = "[camera]\nwidth = 416\nheight = 240\n[path]\nframes = 61\n"  # a few seconds: time to interrupt it
WAIT_S = 300  # generous bounds on every wait; nothing here asserts a duration
# The UV stage (xatlas) now and then hangs in a native thread join; a run silent this long is stopped and
# run again, so a test sees at most a retry, which the assertions below allow only with a "stalled" event.
STALL_S = "30"


# -- helpers shared with test_daemon_ray.py ------------------------------------------------------------------

class Daemon:
    """A `lyra-assets watch` process; its stderr (JSON log lines) goes to a file."""

    def __init__(self, root: Path, logs: Path, *args: str, settle: float = 0.5) -> None:
        logs.mkdir(exist_ok=True)
        self.log_path = logs / f"daemon-{len(list(logs.iterdir()))}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lyra_assets", "watch", str(root), "--settle", str(settle), "--scan-every", "0.5",
             "--stall-timeout", STALL_S, *args], stdout=subprocess.DEVNULL, stderr=self._log)
        wait_until(lambda: self.events("started") or self.proc.poll() is not None, "the daemon to start", self)
        assert self.proc.poll() is None, self.log_text()

    def events(self, kind: str | None = None) -> list[dict]:
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        return [r for r in records if kind is None or r["event"] == kind]

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT_S)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.wait()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.kill()


def stalls(*daemons: Daemon) -> Counter:
    """Runs stopped as stuck, by job."""
    return Counter(e["job"] for d in daemons for e in d.events("stalled"))


def assert_runs_once(*daemons: Daemon) -> Counter:
    """Every job ran once, plus once more for each run stopped as stuck. Returns the runs by job."""
    runs = Counter(e["job"] for d in daemons for e in d.events("running"))
    stuck = stalls(*daemons)
    assert all(n == 1 + stuck[job] for job, n in runs.items()), (runs, stuck)
    return runs


def wait_until(condition, what: str, *daemons: Daemon, timeout: float = WAIT_S, left=None):
    """`left`, if given, says what is still missing; it comes first in the failure, before the logs' tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    logs = "\n".join(d.log_text() for d in daemons)
    pytest.fail(f"timed out waiting for {what}\n{left() if left else ''}\n{logs}")


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "inbox").mkdir(parents=True)
    (root / "defaults.toml").write_text(FAST_DEFAULTS)
    return root


def concept_image(i: int, size=(256, 144), fmt: str = "PNG") -> bytes:
    """The example corridor, small, with a mark that makes image i's bytes its own."""
    image = Image.open(EXAMPLE).convert("RGB").resize(size)
    draw = ImageDraw.Draw(image)
    draw.rectangle([4, 4, 20, 20], fill=((i * 37) % 256, (i * 91) % 256, (i * 53 + 7) % 256))
    draw.rectangle([24, 4, 40, 20], fill=(i % 256, (i // 256) % 256, 200))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size in a few hundred bytes: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def status_json(root: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "lyra_assets", "status", str(root), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def settled(root: Path, expected_jobs: int | None = None) -> bool:
    """Everything claimed has finished and been filed, and only ignored names are left in the inbox."""
    inbox = [p.name for p in (root / "inbox").iterdir() if not is_temporary(p.name)]
    if inbox or any((root / "work").iterdir()):
        return False
    jobs = status_json(root)["jobs"]
    return (expected_jobs is None or len(jobs) == expected_jobs) and all(
        j["state"] in ("done", "duplicate", "failed") for j in jobs)


def read_glb(path: Path) -> dict:
    """The glTF JSON of a .glb, after checking its header: a half-written file fails here."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data)
    assert magic == b"glTF" and version == 2 and length == len(data)
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    assert chunk_type == 0x4E4F534A  # JSON
    return json.loads(data[20:20 + chunk_length])


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def content(path: Path) -> str:
    """What a dropped entry is: a link's target, or the file's bytes (hashed)."""
    return "-> " + os.readlink(path) if path.is_symlink() else hashlib.sha256(path.read_bytes()).hexdigest()


# -- the 200-file drop ---------------------------------------------------------------------------------------

BAD_SIDECARS = {  # sidecar text -> what the error must say
    "[camrea]\nhfov_deg = 70\n": "unknown key 'camrea'",
    "[path]\nframes = = 3\n": "not a valid TOML settings file",
    '{"path": {"frames": 9,}}': "not a valid JSON settings file",
    "[path]\nframes = -1\n": "path.frames",
    'preset = "nope"\n': "unknown preset 'nope'",
    'generator = "dreamer"\n': "unknown generator 'dreamer'",
    'out_dir = "../../outside"\nname = "../../evil"\n': "unknown key 'out_dir'",  # writes nothing outside
    "[1, 2, 3]": "must be a table",
    '[lyra2]\nwork_dir = "../../outside"\npython = "/bin/sh"\n': "python, work_dir cannot be set from a drop folder",
}


class Drop:
    """200 files as a busy studio drops them, with what each one must turn into."""

    def __init__(self, tmp_path: Path) -> None:
        self.files: dict[str, bytes | str] = {}  # name in the inbox -> bytes, or a link target
        self.valid: dict[str, str] = {}  # image name -> sha256, each a job that must build once
        self.duplicates: dict[str, str] = {}  # image name -> sha256 of the valid image it copies
        self.bad: dict[str, str] = {}  # name -> what its error must say
        self.growing: dict[str, bytes] = {}  # written slowly while the daemon watches
        self.ignored = {".hidden.png": b"x", "~$lock.png": b"x", "download.png.crdownload": b"x", "x.tmp": b"x"}
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        (self.outside / "secret.png").write_bytes(concept_image(999))
        (self.outside / "passwords.txt").write_text("hunter2\n")

        names = ["Façade été {}.png", "日本語の部屋 {}.png", "  spaced   out {}  .png", "room #{}.png", "room @{}.png",
                 "🏰 castle {}.jpg", "concept_{}.png", "Concept Art (final) v{}.jpeg"]
        for i in range(20):  # unicode, spaces, and pairs that sanitise to the same output name
            fmt = "JPEG" if names[i % len(names)].endswith(("jpg", "jpeg")) else "PNG"
            self._valid(names[i % len(names)].format(i), concept_image(i, fmt=fmt))
        for i in range(20, 25):  # with good sidecars
            self._valid(f"with sidecar {i}.png", concept_image(i))
            self.files[f"with sidecar {i}.toml"] = ('preset = "strafe"\n' if i % 2 else "[path]\nframes = 5\n").encode()
        self._valid("caf\udce9 from an old share.png", concept_image(30))  # a Latin-1 name: not UTF-8
        for i in range(25, 30):  # still being written when the daemon first sees them
            data = concept_image(i)
            self.valid[f"growing {i}.png"] = hashlib.sha256(data).hexdigest()
            self.growing[f"growing {i}.png"] = data

        for i, (text, says) in enumerate(BAD_SIDECARS.items()):
            suffix = ".json" if text.startswith(("{", "[1")) else ".toml"
            self.files[f"bad sidecar {i}.png"] = concept_image(100 + i)
            self.files[f"bad sidecar {i}{suffix}"] = text.encode()
            self.bad[f"bad sidecar {i}.png"] = says
        self.files["two sidecars.png"] = concept_image(120)
        self.files["two sidecars.toml"] = b"[path]\nframes = 5\n"
        self.files["two sidecars.json"] = b'{"path": {"frames": 5}}'
        self.bad["two sidecars.png"] = "keep one"

        png, jpeg = concept_image(200), concept_image(201, fmt="JPEG")
        for i in range(12):
            self._bad(f"empty {i}.{'png' if i % 2 else 'jpg'}", b"", "the file is empty")
        for i in range(20):
            data = png if i % 2 else jpeg
            self._bad(f"truncated {i}.{'png' if i % 2 else 'jpg'}", data[:len(data) * (i + 3) // 30],
                      "damaged or truncated")
        for i in range(20):
            corrupt = bytearray(png)
            corrupt[len(png) // 2:len(png) // 2 + 64] = os.urandom(64)
            self._bad(f"corrupt {i}.png", bytes(corrupt), "damaged or truncated")
        not_images = [b"hello, I am text\n" * 20, b"%PDF-1.7\n" + os.urandom(300), b"PK\x03\x04" + os.urandom(300),
                      b"<html><body>not a picture</body></html>", os.urandom(500)]
        for i in range(20):
            self._bad(f"not an image {i}.{('png', 'jpg', 'webp', 'tiff')[i % 4]}", not_images[i % 5],
                      "not an image Pillow can read")
        for i in range(12):
            side = (30000, 9000, 8100)[i % 3]  # above Pillow's own limit, and above ours only
            self._bad(f"bomb {i}.png", png_header_only(side, side), "decompression bomb")
        for i in range(5):
            self._bad(f"tiny {i}.png", concept_image(300 + i, size=(40, 30)), "too small")
        for i, name in enumerate(["readme.txt", "scene.blend", "notes.md", "palette.ase", "Thumbs.db"]):
            self._bad(name, os.urandom(64) if i % 2 else b"some notes\n", "not a concept image")
        self.files["outside.png"] = str(self.outside / "secret.png")
        self.bad["outside.png"] = "outside the inbox"
        self.files["sneaky.png"] = "../../outside/passwords.txt"
        self.bad["sneaky.png"] = "links are not followed"
        self.files["inside link.png"] = "concept_6.png"  # even to a file in the inbox: never followed
        self.bad["inside link.png"] = "links are not followed"

        originals = list(self.valid)[:20]  # the plain valid images: duplicates of them fill the drop to 200
        i = 0
        while len(self.files) + len(self.growing) < 200:
            source = originals[i % len(originals)]
            name = f"copy {i} of {source}" if i % 3 else f"Kopie ({i}) {source.strip()}"
            self.files[name] = self.files[source]
            self.duplicates[name] = self.valid[source]
            i += 1

    def _valid(self, name: str, data: bytes) -> None:
        self.files[name] = data
        self.valid[name] = hashlib.sha256(data).hexdigest()

    def _bad(self, name: str, data: bytes, says: str) -> None:
        self.files[name] = data
        self.bad[name] = says

    def inputs(self) -> dict[str, str]:
        """Every file that must come out in done/ or failed/, by name (as text), with what it is."""
        return {printable(name): ("-> " + value) if isinstance(value, str) else hashlib.sha256(value).hexdigest()
                for name, value in {**self.files, **self.growing}.items()}

    def put(self, inbox: Path) -> list[threading.Thread]:
        """Drop everything at once. Growing files are written in pieces over a few seconds (one through a
        .part name, renamed at the end, the way browsers save); returns the writer threads."""
        for name, data in self.ignored.items():
            (inbox / name).write_bytes(data)
        writers = []
        for i, (name, data) in enumerate(self.growing.items()):
            temporary = name + ".part" if i == 0 else name
            writers.append(threading.Thread(target=_write_slowly, args=(inbox, temporary, name, data)))
            writers[-1].start()
        for name, value in self.files.items():
            if isinstance(value, str):
                os.symlink(value, inbox / name)
            else:
                (inbox / name).write_bytes(value)
        return writers


def _write_slowly(inbox: Path, temporary: str, name: str, data: bytes) -> None:
    pieces = 20
    with open(inbox / temporary, "wb") as f:
        for i in range(pieces):
            f.write(data[len(data) * i // pieces:len(data) * (i + 1) // pieces])
            f.flush()
            time.sleep(0.15)
    if temporary != name:
        os.rename(inbox / temporary, inbox / name)


def run_drop(tmp_path: Path, *daemon_args: str) -> list[dict]:
    """The acceptance run: 200 files dropped at once into a watched folder. Returns the daemon's log."""
    root = make_root(tmp_path)
    drop = Drop(tmp_path)
    outside_before = snapshot(drop.outside)
    assert len(drop.inputs()) == 200
    with Daemon(root, tmp_path / "logs", "--workers", "2", *daemon_args, settle=1.0) as daemon:
        writers = drop.put(root / "inbox")
        for writer in writers:
            writer.join()
        wait_until(lambda: settled(root), "all 200 files to be built or filed", daemon)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0

    # Every valid image produced its asset exactly once: one output folder per image, none twice.
    manifests = [json.loads(p.read_text()) for p in (root / "out").glob("*/manifest.json")]
    assert sorted(m["provenance"]["job"]["image_sha256"] for m in manifests) == sorted(drop.valid.values())
    for folder in (root / "out").iterdir():
        assert json.loads((folder / "status.json").read_text())["state"] == "done", folder
        gltf = read_glb(folder / f"{folder.name}.glb")
        assert {f"{folder.name}_LOD0"} <= {n.get("name") for n in gltf["nodes"]}
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left behind
    assert len(assert_runs_once(daemon)) == len(drop.valid)

    # Nothing lost: every input is in done/ or failed/, byte for byte (links as links), nothing else is.
    filed = {p.name: content(p) for folder in ("done", "failed") for p in (root / folder).iterdir()
             if not p.name.endswith((".error.json", ".duplicate.json"))}
    assert filed == drop.inputs()
    assert sorted(p.name for p in (root / "inbox").iterdir()) == sorted(drop.ignored)  # left alone
    assert not any((root / "work").iterdir())

    done = {p.name for p in (root / "done").iterdir()}
    assert set(map(printable, drop.valid)) <= done and set(drop.duplicates) <= done
    # Of identical images, whichever came first was built; each other one points at that asset.
    by_sha = {m["provenance"]["job"]["image_sha256"]: m for m in manifests}
    sha_of = {**drop.valid, **drop.duplicates}
    notes = {p.name.removesuffix(".duplicate.json"): json.loads(p.read_text())
             for p in (root / "done").glob("*.duplicate.json")}
    assert len(notes) == len(drop.duplicates)
    for name, note in notes.items():
        assert note["output"] == f"out/{by_sha[sha_of[name]]['asset']}/"

    # Every bad file is in failed/ with an error that says what is wrong and what to do.
    for name, says in drop.bad.items():
        error = json.loads((root / "failed" / f"{name}.error.json").read_text())["error"]
        assert says in error, (name, error)
    assert len(list((root / "failed").glob("*.error.json"))) == len(drop.bad)
    jobs = status_json(root)["jobs"]
    assert Counter(j["state"] for j in jobs) == {"done": len(drop.valid), "duplicate": len(drop.duplicates),
                                                  "failed": len(drop.bad)}
    assert all(j["attempts"] == stalls(daemon)[j["job"]] for j in jobs)

    # Nothing was written outside the root (the links' targets included).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "outside", "root"]
    assert snapshot(drop.outside) == outside_before
    return daemon.events()


def test_two_hundred_files_dropped_at_once(tmp_path):
    events = run_drop(tmp_path)
    assert [e["executor"] for e in events if e["event"] == "started"] == ["LocalExecutor"]


# -- crashes, signals, several daemons -----------------------------------------------------------------------

def drop_long_job(root: Path, name: str = "long") -> None:
    (root / "inbox" / f"{name}.toml").write_text(LONG_JOB)
    (root / "inbox" / f"{name}.png").write_bytes(concept_image(7))


def running_status(root: Path, name: str) -> dict | None:
    """The job's status once its worker is inside a pipeline stage."""
    try:
        status = json.loads((root / "out" / name / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return status if status["state"] == "running" and status.get("worker") and status["stage"] != "start" else None


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def assert_built_once(root: Path, name: str = "long") -> dict:
    """One job, done, its outputs whole and nothing left of the interrupted run."""
    folder = root / "out" / name
    assert sorted(p.name for p in (root / "out").iterdir()) == [name]
    names = {p.name for p in folder.iterdir()}
    assert names >= {f"{name}.glb", "manifest.json", "preview.png", "status.json", "walkthrough"}
    assert not [n for n in names if n.startswith(".")]  # no temporaries of the interrupted run
    read_glb(folder / f"{name}.glb")
    manifest = json.loads((folder / "manifest.json").read_text())
    walk = Walkthrough.load(folder / "walkthrough")
    assert len(walk) == 61 and manifest["job_key"] == walk.info["job_key"]
    assert json.loads((folder / "status.json").read_text())["state"] == "done"
    assert sorted(p.name for p in (root / "done").iterdir()) == [f"{name}.png", f"{name}.toml"]
    assert not any((root / "work").iterdir()) and not any((root / "inbox").iterdir())
    [job] = status_json(root)["jobs"]
    assert job["state"] == "done"
    return job


def test_kill_9_mid_job_then_restart_completes_once(tmp_path):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs") as first:
        drop_long_job(root)
        status = wait_until(lambda: running_status(root, "long"), "the job to be running", first)
        first.kill()  # SIGKILL: no cleanup of any kind
    # The worker goes with the daemon, so it cannot write into a job the next daemon runs again.
    wait_until(lambda: gone(status["worker"]["pid"]), "the orphaned worker to exit", timeout=30)
    with Daemon(root, tmp_path / "logs") as second:
        wait_until(lambda: settled(root, 1), "the job to complete after the restart", second)
        assert [e["reason"] for e in second.events("requeued")] == ["the daemon running it stopped"]
        assert len(second.events("done")) == 1
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
    job = assert_built_once(root)
    assert job["attempts"] == stalls(second).total()  # the job did not fail: its daemon died


def test_sigterm_mid_job_exits_cleanly_and_the_job_completes_after_restart(tmp_path):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--grace", "300") as first:
        drop_long_job(root)
        status = wait_until(lambda: running_status(root, "long"), "the job to be running", first)
        first.signal(signal.SIGTERM)
        first.signal(signal.SIGINT)  # a second signal: do not wait out the grace period
        assert first.wait() == 0
        assert [e["reason"] for e in first.events("requeued")] == ["shutdown"]
        assert gone(status["worker"]["pid"])
    [job] = status_json(root)["jobs"]
    assert job["state"] == "queued" and job["attempts"] == 0  # re-queued without charging an attempt
    assert json.loads((root / "out" / "long" / "status.json").read_text())["state"] == "queued"
    with Daemon(root, tmp_path / "logs") as second:
        wait_until(lambda: settled(root, 1), "the job to complete after the restart", second)
        second.signal(signal.SIGINT)  # Ctrl-C stops it the same way
        assert second.wait() == 0
    assert assert_built_once(root)["attempts"] == stalls(second).total()


def test_sigterm_lets_the_running_job_finish_within_the_grace_period(tmp_path):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--grace", "300") as daemon:
        drop_long_job(root)
        wait_until(lambda: running_status(root, "long"), "the job to be running", daemon)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
        events = [e["event"] for e in daemon.events()]
    assert events.index("stopping") < events.index("done") < events.index("stopped")
    assert assert_built_once(root)["attempts"] == stalls(daemon).total()


def test_a_run_that_keeps_crashing_ends_in_failed_after_max_attempts(tmp_path):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--max-attempts", "2") as daemon:
        drop_long_job(root)
        pids = []
        for attempt in (1, 2):
            status = wait_until(lambda n=attempt: (s := running_status(root, "long")) and s["attempt"] == n and s,
                                f"attempt {attempt} to be running", daemon)
            pids.append(status["worker"]["pid"])
            os.kill(status["worker"]["pid"], signal.SIGKILL)  # as the OOM killer or a segfault would
        wait_until(lambda: settled(root, 1), "the job to be given up", daemon)
        assert daemon.proc.poll() is None  # the daemon itself carries on
    assert pids[0] != pids[1]  # a fresh worker for the second attempt
    error = json.loads((root / "failed" / "long.png.error.json").read_text())["error"]
    assert "gave up after 2 attempts" in error and "killed by SIGKILL" in error
    assert (root / "failed" / "long.toml").exists()
    assert json.loads((root / "out" / "long" / "status.json").read_text())["state"] == "failed"


def test_a_stuck_run_is_stopped_and_retried(tmp_path):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--stall-timeout", "10") as daemon:
        drop_long_job(root)
        stuck = wait_until(lambda: running_status(root, "long"), "the job to be running", daemon)["worker"]["pid"]
        os.kill(stuck, signal.SIGSTOP)  # frozen mid-job, as a deadlocked native library leaves it
        wait_until(lambda: settled(root, 1), "the job to be stopped and run again", daemon)
        reasons = [e["reason"] for e in daemon.events("requeued")]
        assert daemon.events("stalled")[0]["job"] == daemon.events("running")[0]["job"]
    wait_until(lambda: gone(stuck), "the stuck worker to be killed", timeout=30)
    assert reasons[0].startswith("the run failed: no progress for") and reasons[0].endswith("stopped as stuck")
    assert assert_built_once(root)["attempts"] >= 1


def test_two_daemons_on_one_root_run_each_job_once(tmp_path):
    root = make_root(tmp_path)
    images = {f"image {i}.png": concept_image(400 + i) for i in range(12)}
    copies = {f"copy of image {i}.png": images[f"image {i}.png"] for i in range(0, 12, 2)}
    # One watches with OS file events, the other polls as it would on a network share.
    with Daemon(root, tmp_path / "logs", "--workers", "1") as a, \
            Daemon(root, tmp_path / "logs", "--workers", "1", "--polling") as b:
        for name, data in {**images, **copies}.items():
            (root / "inbox" / name).write_bytes(data)
        wait_until(lambda: settled(root, len(images) + len(copies)), "all jobs to finish", a, b)
        claimed = [e["file"] for d in (a, b) for e in d.events("claimed")]
        built = assert_runs_once(a, b)
        for daemon in (a, b):
            daemon.signal(signal.SIGTERM)
            assert daemon.wait() == 0
    assert sorted(claimed) == sorted({**images, **copies})  # every file claimed by exactly one daemon
    assert len(built) == len(images)  # every distinct image built once, by one daemon
    manifests = [json.loads(p.read_text()) for p in (root / "out").glob("*/manifest.json")]
    assert sorted(m["provenance"]["job"]["image_sha256"] for m in manifests) == sorted(
        hashlib.sha256(d).hexdigest() for d in images.values())
    assert len(list((root / "done").glob("*.duplicate.json"))) == len(copies)


def test_a_late_sidecar_is_a_new_job_and_status_reports_it(tmp_path):
    root = make_root(tmp_path)
    with Daemon(root, tmp_path / "logs", "--sidecar-wait", "1") as daemon:
        (root / "inbox" / "hall.png").write_bytes(concept_image(500))
        wait_until(lambda: settled(root, 1), "hall.png to be built", daemon)
        (root / "inbox" / "hall.toml").write_text("[path]\nframes = 5\n")  # after the image was claimed
        (root / "inbox" / "orphan.toml").write_text("[path]\nframes = 5\n")  # no image ever comes
        wait_until(lambda: settled(root, 3), "the sidecar's job", daemon)
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0
    first = json.loads((root / "out" / "hall" / "manifest.json").read_text())
    again = json.loads((root / "out" / "hall-2" / "manifest.json").read_text())
    first, again = first["provenance"]["job"], again["provenance"]["job"]
    assert first["settings"]["path"]["frames"] == 9 and again["settings"]["path"]["frames"] == 5
    assert again["image_sha256"] == first["image_sha256"]
    assert sorted(p.name for p in (root / "done").iterdir()) == ["hall.png", "hall~2.png", "hall~2.toml"]
    assert "no image named orphan.png" in json.loads((root / "failed" / "orphan.toml.error.json").read_text())["error"]

    listing = CliRunner().invoke(main, ["status", str(root)])
    assert listing.exit_code == 0, listing.output
    assert "2 done, 1 failed" in listing.output and "no daemon is running" in listing.output
    assert "orphan.toml" in listing.output and "no image named" in listing.output
    jobs = json.loads(CliRunner().invoke(main, ["status", str(root), "--json"]).output)["jobs"]
    [rerun] = [j for j in jobs if j["rerun_of"]]
    assert rerun["file"] == "hall.png" and rerun["sidecars"] == ["hall.toml"] and rerun["output"] == "out/hall-2/"


def test_watch_refuses_bad_defaults_and_status_a_folder_that_is_not_one(tmp_path):
    root = make_root(tmp_path)
    (root / "defaults.toml").write_text("[path]\nframse = 9\n")
    refused = CliRunner().invoke(main, ["watch", str(root)])
    assert refused.exit_code == 2 and "defaults.toml" in refused.output and "framse" in refused.output
    (root / "defaults.toml").write_text("colour = 1\n")
    refused = CliRunner().invoke(main, ["watch", str(root)])
    assert refused.exit_code == 2 and "unknown key 'colour'" in refused.output
    missing = CliRunner().invoke(main, ["status", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a drop folder" in missing.output
    without_ray = CliRunner().invoke(main, ["watch", str(root), "--gpu-generator", "layout"])
    assert without_ray.exit_code == 2


# -- the parts, directly -------------------------------------------------------------------------------------

def test_a_rerun_resumes_from_the_walkthrough_an_interrupted_run_saved(tmp_path):
    from lyra_assets.daemon.runner import Task, run
    from lyra_assets.pipeline import generate

    (tmp_path / "defaults.toml").write_text(FAST_DEFAULTS)
    image = tmp_path / "work" / "hall.png"
    image.parent.mkdir()
    image.write_bytes(concept_image(700))
    spec = plan_job(image, load_defaults(tmp_path / "defaults.toml"))
    out = tmp_path / "out"
    saved = generate(spec, out_dir=out).walkthrough_dir  # what the first run got done
    (out / "hall" / ".hall.glb.1234abcd.tmp").write_bytes(b"half a file")  # and what it left half-written
    before = (saved / "manifest.json").stat()
    task = Task("job", str(image), str(out), "hall", plan_record(spec), {"job": "job", "key": spec.key, "attempt": 2})
    outputs = run(task)
    assert outputs["glb"] == "hall.glb" and read_glb(out / "hall" / "hall.glb")
    after = (saved / "manifest.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not generated again
    assert not [p.name for p in (out / "hall").iterdir() if p.name.startswith(".")]


def _not_an_image_task(folder: Path, name: str):
    """A run that a worker refuses at once: its image is not a PNG."""
    from lyra_assets.daemon.runner import Task

    (folder / f"{name}.png").write_bytes(b"not a png")
    record = {"image": str(folder / f"{name}.png"), "image_sha256": "-", "name": name, "settings": {}}
    return Task(name, record["image"], str(folder / "out"), name, {"key": "-", "job": record}, {"job": name})


def test_local_workers_report_bad_input_and_are_replaced_after_their_quota(tmp_path, monkeypatch):
    from lyra_assets.daemon import executors

    monkeypatch.setattr(executors, "JOBS_PER_WORKER", 1)  # read in the daemon process: replace every time
    pool = executors.LocalExecutor(workers=1)
    pids = []
    try:
        for name in ("one", "two"):
            with pytest.raises(executors.BadInput, match=f"{name}.png: not an image"):
                pool.submit(_not_an_image_task(tmp_path, name)).result(timeout=WAIT_S)
            pids.append(json.loads((tmp_path / "out" / name / "status.json").read_text())["worker"]["pid"])
    finally:
        pool.close()
    assert pids[0] != pids[1] and all(gone(pid) for pid in pids)


def test_a_local_worker_is_free_once_its_run_is_seen_done(tmp_path):
    """The daemon submits the next task as soon as a run's future is done (its callback wakes the loop). A
    worker freed only after that left the submit without one: the job stayed claimed for ever."""
    from lyra_assets.daemon import executors

    pool = executors.LocalExecutor(workers=1)
    followed = []
    try:
        first = pool.submit(_not_an_image_task(tmp_path, "one"))  # the worker is still starting: not done yet
        first.add_done_callback(lambda _: followed.append(pool.submit(_not_an_image_task(tmp_path, "two"))))
        [second] = wait_until(lambda: followed, "the callback to submit the next task")
        with pytest.raises(executors.BadInput, match="two.png: not an image"):
            second.result(timeout=WAIT_S)
    finally:
        pool.close()


def test_temporary_names_are_ignored():
    for name in (".DS_Store", ".concept.png.swp", "concept.png.part", "x.TMP", "a.crdownload", "~$scene.png"):
        assert is_temporary(name), name
    for name in ("concept.png", "concept.toml", "part.png", "my~$.png"):
        assert not is_temporary(name), name


def test_a_file_arrives_once_unchanged_for_the_settle_window(tmp_path):
    inbox = Inbox(tmp_path, settle_s=2.0)
    (tmp_path / "a.png").write_bytes(b"12")
    assert inbox.scan(now=100.0) == []
    assert inbox.scan(now=101.0) == [] and inbox.wait_hint(101.0) == pytest.approx(1.0)
    with open(tmp_path / "a.png", "ab") as f:  # still being written
        f.write(b"34")
    assert inbox.scan(now=102.5) == []
    [drop] = inbox.scan(now=104.5)
    assert drop.image.name == "a.png" and drop.sidecars == ()
    (tmp_path / "a.toml").write_text("")  # a sidecar that is still arriving holds its image back
    assert inbox.scan(now=105.0) == []
    [drop] = inbox.scan(now=107.0)
    assert [s.name for s in drop.sidecars] == ["a.toml"]


def test_a_sidecar_belongs_to_one_image_of_its_name():
    seen = {name: ((1, 1, inode), 0.0) for inode, name in enumerate(["a.png", "a.jpg", "a.toml", "b.json"])}
    drops = {d.image.name if d.image else d.sidecars[0].name: d for d in group(seen, now=10.0, settle_s=1.0)}
    assert [s.name for s in drops["a.jpg"].sidecars] == ["a.toml"] and drops["a.jpg"].problem is None
    assert "give each image its own name" in drops["a.png"].problem
    assert drops["b.json"].image is None  # a sidecar alone
    assert Entry("x.y.png", 0.0).stem == "x.y"


def test_filing_never_overwrites_and_keeps_a_group_together(tmp_path):
    work, done = tmp_path / "work", tmp_path / "done"
    work.mkdir(), done.mkdir()
    (done / "a.toml").write_text("older")
    (work / "1.png").write_bytes(b"image")
    (work / "1.toml").write_text("sidecar")
    files = [(work / "1.toml", "a.toml"), (work / "gone.json", "a.png.error.json"), (work / "1.png", "a.png")]
    went = file_group(files, done, "a")
    assert [p.name if p else None for p in went] == ["a~2.toml", None, "a~2.png"]
    assert (done / "a.toml").read_text() == "older" and (done / "a~2.png").read_bytes() == b"image"


def test_a_filing_cut_short_is_finished_under_the_names_it_chose(tmp_path, monkeypatch):
    work, failed = tmp_path / "work", tmp_path / "failed"
    work.mkdir(), failed.mkdir()
    (failed / "a.png").write_text("older")
    plan, note, image = work / ".filing.json", work / ".note.json", work / "1.png"
    note.write_text("report")
    image.write_bytes(b"image")
    files = [(note, "a.png.error.json"), (image, "a.png")]
    real_rename, moves = os.rename, []

    def killed_after_one_move(src, dst):
        if moves:
            raise SystemExit("killed")
        moves.append(dst)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", killed_after_one_move)
    with pytest.raises(SystemExit):
        file_group(files, failed, "a", plan)
    monkeypatch.setattr(os, "rename", real_rename)
    (failed / "a~3.png").write_text("another group filed meanwhile")  # takes no name of the plan
    went = file_group(files, failed, "a", plan)
    assert [p.name for p in went] == ["a~2.png.error.json", "a~2.png"]
    assert sorted(p.name for p in failed.iterdir()) == ["a.png", "a~2.png", "a~2.png.error.json", "a~3.png"]
    # Killed after every move, before the journal took note: the next try moves nothing and says where it went.
    assert [p.name for p in file_group(files, failed, "a", plan)] == ["a~2.png.error.json", "a~2.png"]
    assert len(list(failed.iterdir())) == 4


def test_defaults_are_checked_and_a_sidecar_wins_over_them(tmp_path):
    (tmp_path / "defaults.toml").write_text(FAST_DEFAULTS)
    defaults = load_defaults(tmp_path / "defaults.toml")
    image = tmp_path / "a.png"
    image.write_bytes(concept_image(1))
    spec = plan_job(image, defaults)
    assert spec.preset.path.frames == 9 and spec.fusion.voxel_size_m == 0.2 and spec.assets.texture_size == 256
    (tmp_path / "a.toml").write_text('preset = "strafe"\n[path]\nframes = 5\n[assets]\ntexture_size = 512\n')
    with_sidecar = plan_job(image, defaults)
    assert with_sidecar.preset.name == "strafe" and with_sidecar.preset.path.frames == 5
    assert with_sidecar.preset.camera.width == 208 and with_sidecar.assets.texture_size == 512
    assert with_sidecar.key != spec.key
    assert planned_spec(plan_record(with_sidecar)).key == with_sidecar.key  # what a worker builds is what was checked
    for text, says in [("[camera]\nhfvo = 3\n", "camera"), ('generator = "nope"\n', "unknown generator"),
                       ("[fusion]\nvoxel_size_m = -1\n", "voxel_size_m"), ("[assets]\ntexture = 3\n", "[assets]"),
                       ('preset = ["orbit"]\n', "preset must be a name")]:
        (tmp_path / "defaults.toml").write_text(text)
        with pytest.raises(LyraAssetsError, match="defaults.toml") as error:
            load_defaults(tmp_path / "defaults.toml")
        assert says in str(error.value)
