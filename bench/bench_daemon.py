"""Soak benchmark of the drop-folder daemon (`lyra-assets watch`) with the embedded `layout` generator.

Three runs on the same kind of job (a 256x144 concept image, the blockout settings below):

1. direct    `build()` called in this process, one job after another: the pipeline's own time per job
2. daemon    the same number of jobs dropped into a watched folder with one worker: time per job through
             the daemon, and the daemon's own overhead per job: the CPU time of the daemon process itself
             (scanning, claiming, validating and keying, the journal, filing) and the idle gap between one
             job's end and the next one's start
3. soak      --jobs distinct images dropped at once with --workers: jobs per minute, the daemon's CPU time
             per job, and the resident memory (RSS) of the daemon and of its workers sampled over the run; a
             leak shows as growth between the early and the late samples

Wall times depend on what else the machine is doing; the load average is printed with them.

With --chaos, instead: --drops files (about --bad-share of them bad in every way the daemon must survive:
empty, truncated, not images, sidecars with values of the wrong kind, pipes), one of them a --big-mp
megapixel image, dropped while the daemon is killed with SIGKILL every --kill-every drops and started
again (as a service manager would, also after any other exit). At the end every drop must be accounted for
exactly once (a finished job of the journal, filed in done/ or failed/), and no key built twice. Reported:
lost and doubled drops, daemon exits other than the kills, and the peak resident memory (VmHWM) of the
daemon process itself and of its checker and workers.

    .venv/bin/python bench/bench_daemon.py                       # 500 jobs, 2 workers
    .venv/bin/python bench/bench_daemon.py --jobs 100 --workers 1
    .venv/bin/python bench/bench_daemon.py --chaos               # 1,000 drops, 20 % bad, kill -9 every 200
    .venv/bin/python bench/bench_daemon.py --chaos --drops 100 --kill-every 40
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageDraw

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "corridor.png"
SETTINGS = (EXAMPLE.parent / "blockout_defaults.toml").read_text()
OVERHEAD_JOBS = 20
STALL_S = 60  # a job silent this long is stopped and retried (the daemon's default, an hour, suits big jobs)


def concept_image(i: int) -> bytes:
    image = Image.open(EXAMPLE).convert("RGB").resize((256, 144))
    draw = ImageDraw.Draw(image)
    draw.rectangle([4, 4, 20, 20], fill=((i * 37) % 256, (i * 91) % 256, (i * 53 + 7) % 256))
    draw.rectangle([24, 4, 40, 20], fill=(i % 256, (i // 256) % 256, 200))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def direct_seconds_per_job(folder: Path, jobs: int) -> float:
    """The pipeline alone, in this process, after one warm-up job (imports, JIT compilation)."""
    import tomllib

    from lyra_assets.pipeline import build

    settings = tomllib.loads(SETTINGS)

    def run(i: int) -> None:
        image = folder / f"direct {i}.png"
        image.write_bytes(concept_image(10_000 + i))
        build(image, out_dir=folder / "out", options=settings)

    run(-1)
    started = time.perf_counter()
    for i in range(jobs):
        run(i)
    return (time.perf_counter() - started) / jobs


class Soak:
    """A daemon on a fresh root; `jobs` distinct images dropped at once; RSS sampled until all are built."""

    def __init__(self, folder: Path, jobs: int, workers: int, first_image: int) -> None:
        self.root = folder / "root"
        (self.root / "inbox").mkdir(parents=True)
        (self.root / "defaults.toml").write_text(SETTINGS)
        self.jobs, self.workers, self.first_image = jobs, workers, first_image
        self.log = folder / "daemon.log"
        self.samples: list[tuple[int, float, float]] = []  # (jobs done, daemon MiB, workers MiB)
        self.daemon_cpu_s = 0.0

    def run(self) -> dict:
        with open(self.log, "wb") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "lyra_assets", "watch", str(self.root), "--workers",
                                       str(self.workers), "--settle", "0.5", "--scan-every", "0.5",
                                       "--stall-timeout", str(STALL_S)],
                                      stdout=subprocess.DEVNULL, stderr=log)
            try:
                while not self.events("started"):
                    time.sleep(0.1)
                for i in range(self.jobs):  # appear whole: written under a temporary name, then renamed
                    part = self.root / "inbox" / f"concept {i}.png.part"
                    part.write_bytes(concept_image(self.first_image + i))
                    part.rename(part.with_suffix(""))
                finished = 0
                while finished < self.jobs:
                    time.sleep(1.0)
                    finished = len(self.events("done")) + len(self.events("failed"))
                    self.samples.append((finished, rss_mib(daemon.pid), sum(map(rss_mib, children(daemon.pid)))))
                self.daemon_cpu_s = cpu_seconds(daemon.pid)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait()
        done, failed = self.events("done"), self.events("failed")
        first_claim = min(stamp(e) for e in self.events("claimed"))
        finished = sorted(stamp(e) for e in done + failed)
        wall = finished[-1] - first_claim
        started = sorted(stamp(e) for e in self.events("running"))
        gaps = [b - a for a, b in zip(finished, started[1:], strict=False)]  # meaningful with one worker
        return {"jobs": self.jobs, "done": len(done), "failed": len(failed), "wall_s": wall,
                "jobs_per_minute": 60 * len(done) / wall,
                # after the first job, which also pays for starting the worker (imports, JIT compilation)
                "steady_seconds_per_job": (finished[-1] - finished[0]) / (len(finished) - 1),
                "first_job_s": finished[0] - started[0], "daemon_cpu_s_per_job": self.daemon_cpu_s / self.jobs,
                "gap_s": sum(gaps) / len(gaps), "stalled": len(self.events("stalled"))}

    def events(self, kind: str) -> list[dict]:
        lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return [e for e in map(json.loads, filter(lambda line: line.startswith("{"), lines)) if e["event"] == kind]


def stamp(event: dict) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


BAD_KINDS = {  # name -> (image bytes or None for a pipe, sidecar text or None)
    "empty": (lambda i: b"", None),
    "truncated": (lambda i: concept_image(i)[:700], None),
    "not an image": (lambda i: b"%PDF-1.7\n" + bytes(range(256)) * 2, None),
    "list preset": (concept_image, 'preset = ["orbit"]\n'),
    "preset table": (concept_image, "[preset]\nname = 'orbit'\n"),
    "nan": (concept_image, "[scene]\neye_height_m = nan\n"),
    "pipe": (None, None),
}


def big_image(megapixels: float) -> bytes:
    """A concept image of that many pixels (4:3), quick to encode: the corridor scaled up."""
    width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    image = Image.open(EXAMPLE).convert("RGB").resize((width, width * 3 // 4), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


class Chaos:
    """Drops, about a share of them bad, with the daemon killed (SIGKILL) every `kill_every` drops."""

    def __init__(self, folder: Path, drops: int, bad_share: float, kill_every: int, big_mp: float,
                 workers: int) -> None:
        self.root = folder / "root"
        (self.root / "inbox").mkdir(parents=True)
        (self.root / "defaults.toml").write_text(SETTINGS)
        self.logs = folder / "logs"
        self.logs.mkdir()
        self.drops, self.bad_share, self.kill_every, self.big_mp, self.workers = (
            drops, bad_share, kill_every, big_mp, workers)
        self.names: list[str] = []  # every file dropped (images and sidecars)
        self.kills = self.exits = 0
        self.peak = {"daemon": 0.0, "children": 0.0}
        self.daemon: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.logs / f"daemon-{self.kills + self.exits}.log", "wb")
        self.daemon = subprocess.Popen([sys.executable, "-m", "lyra_assets", "watch", str(self.root), "--workers",
                                        str(self.workers), "--settle", "0.5", "--scan-every", "0.5",
                                        "--stall-timeout", str(STALL_S)], stdout=subprocess.DEVNULL, stderr=log)
        log.close()

    def watch(self) -> None:
        """Sample peak memory; restart a daemon that exited on its own (counted)."""
        if self.daemon.poll() is not None:
            self.exits += 1
            self.start()
            return
        self.peak["daemon"] = max(self.peak["daemon"], peak_mib(self.daemon.pid))
        for child in children(self.daemon.pid):
            self.peak["children"] = max(self.peak["children"], peak_mib(child))

    def drop(self, i: int) -> None:
        inbox = self.root / "inbox"
        if i == self.drops // 2 and self.big_mp:
            name, data, sidecar = f"big {i}.png", big_image(self.big_mp), None
        elif (i * 7919) % 100 < self.bad_share * 100:
            kind = list(BAD_KINDS)[i % len(BAD_KINDS)]
            make, sidecar = BAD_KINDS[kind]
            name, data = f"{kind} {i}.png", None if make is None else make(i)
        else:
            name, data, sidecar = f"concept {i}.png", concept_image(i), None
        if sidecar is not None:
            (inbox / f"{name[:-4]}.toml").write_text(sidecar)
            self.names.append(f"{name[:-4]}.toml")
        if data is None:
            os.mkfifo(inbox / name)
        else:  # appears whole: written under a temporary name, then renamed
            part = inbox / f"{name}.part"
            part.write_bytes(data)
            part.rename(inbox / name)
        self.names.append(name)

    def run(self) -> dict:
        started = time.monotonic()
        self.start()
        for i in range(self.drops):
            if i and i % self.kill_every == 0:
                time.sleep(2)  # let it take some of what was dropped, then kill it mid-work
                self.watch()
                self.daemon.kill()
                self.daemon.wait()
                self.kills += 1
                self.start()
            self.drop(i)
            if i % 20 == 0:
                self.watch()
        while not self.settled():
            self.watch()
            time.sleep(1.0)
        self.watch()
        self.daemon.send_signal(signal.SIGTERM)
        code = self.daemon.wait()
        self.exits += code != 0
        return self.account(time.monotonic() - started)

    def settled(self) -> bool:
        if any((self.root / "inbox").iterdir()) or any((self.root / "work").iterdir()):
            return False
        jobs = self.jobs()
        return bool(jobs) and all(j["state"] in ("done", "duplicate", "failed") for j in jobs)

    def jobs(self) -> list[dict]:
        result = subprocess.run([sys.executable, "-m", "lyra_assets", "status", str(self.root), "--json"],
                                capture_output=True, text=True, timeout=120)
        return json.loads(result.stdout)["jobs"] if result.returncode == 0 else []

    def account(self, wall_s: float) -> dict:
        jobs = self.jobs()
        taken = Counter(j["file"] for j in jobs if not j["rerun_of"])
        taken.update(s for j in jobs for s in j["sidecars"])
        filed = [j for j in jobs if j["filed_as"] and (self.root / j["filed_as"]).exists()]
        keys = Counter(json.loads(p.read_text())["job_key"] for p in (self.root / "out").glob("*/manifest.json"))
        lines = [line for p in self.logs.iterdir() for line in p.read_text(errors="replace").splitlines()]
        not_json = sum(not line.startswith("{") for line in lines)
        done = Counter(json.loads(line)["job"] for line in lines if line.startswith("{") and '"done"' in line
                       and json.loads(line)["event"] == "done")
        return {"drops": self.drops, "files": len(self.names), "wall_s": wall_s, "kills": self.kills,
                "other_exits": self.exits, "lost": sum(1 for n in self.names if taken[n] == 0) + len(jobs) - len(filed),
                "doubled": sum(n - 1 for n in taken.values() if n > 1) + sum(n - 1 for n in keys.values() if n > 1)
                + sum(n - 1 for n in done.values() if n > 1),
                "states": Counter(j["state"] for j in jobs), "not_json_lines": not_json, **self.peak}


def peak_mib(pid: int) -> float:
    """The peak resident memory of a process so far (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def chaos(args: argparse.Namespace) -> None:
    print(f"daemon chaos: {args.drops} drops, about {args.bad_share:.0%} bad, kill -9 every {args.kill_every} "
          f"drops, one {args.big_mp:g} MP image, {args.workers} workers, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        result = Chaos(Path(tmp), args.drops, args.bad_share, args.kill_every, args.big_mp, args.workers).run()
    print(f"accounted             {result['files']} files ({result['drops']} drops) in {result['wall_s']:.0f} s: "
          f"{dict(result['states'])}")
    print(f"lost                  {result['lost']}")
    print(f"doubled               {result['doubled']}")
    print(f"daemon exits          {result['kills']} kill -9 (ours), {result['other_exits']} other (crashes)")
    print(f"log lines not JSON    {result['not_json_lines']}")
    print(f"peak RSS (MiB)        daemon {result['daemon']:.0f} (goal <= 300), checker and workers (each, max) "
          f"{result['children']:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chaos", action="store_true", help="the fault run instead (see above)")
    parser.add_argument("--drops", type=int, default=1000)
    parser.add_argument("--bad-share", type=float, default=0.2)
    parser.add_argument("--kill-every", type=int, default=200)
    parser.add_argument("--big-mp", type=float, default=56.0, help="megapixels of the one big image (0: none)")
    args = parser.parse_args()
    if args.chaos:
        chaos(args)
        return
    print(f"daemon soak: {os.cpu_count()} CPUs; each job a 256x144 image, 9 frames of 208x120, voxel 0.2 m, "
          f"LOD0 2000 triangles, 256 px textures")
    with tempfile.TemporaryDirectory() as tmp:
        direct = direct_seconds_per_job(Path(tmp), OVERHEAD_JOBS)
    with tempfile.TemporaryDirectory() as tmp:
        through = Soak(Path(tmp), OVERHEAD_JOBS, workers=1, first_image=20_000).run()
    print(f"direct build()        {direct:6.3f} s/job ({OVERHEAD_JOBS} jobs in one process, after a warm-up job)")
    print(f"through the daemon    {through['steady_seconds_per_job']:6.3f} s/job (1 worker, {OVERHEAD_JOBS} jobs "
          f"dropped at once; its first job, starting the worker, took {through['first_job_s']:.1f} s)")
    print(f"daemon overhead       {through['daemon_cpu_s_per_job'] * 1000:6.1f} ms CPU/job in the daemon process, "
          f"{through['gap_s'] * 1000:.1f} ms from one job's end to the next one's start")
    print(f"load average          {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        soak = Soak(Path(tmp), args.jobs, args.workers, first_image=0)
        result = soak.run()
    print(f"soak                  {result['done']} done, {result['failed']} failed of {args.jobs} in "
          f"{result['wall_s']:.0f} s with {args.workers} workers: {result['jobs_per_minute']:.1f} jobs/minute, "
          f"{result['daemon_cpu_s_per_job'] * 1000:.1f} ms daemon CPU/job (load average {os.getloadavg()[0]:.1f}); "
          f"{result['stalled']} runs stopped as stuck after {STALL_S} s without progress, and run again")
    print("RSS (MiB)             jobs done   daemon   workers (sum)")
    samples = soak.samples
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        done, daemon, workers = min(samples, key=lambda s: abs(s[0] - fraction * args.jobs))
        print(f"                      {done:9d} {daemon:8.0f} {workers:9.0f}")
    print(f"                      max       {max(s[1] for s in samples):8.0f} {max(s[2] for s in samples):9.0f}")


if __name__ == "__main__":
    main()
