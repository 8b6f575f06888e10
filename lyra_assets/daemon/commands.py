"""`lyra-assets watch ROOT` and `lyra-assets status ROOT`, added to the main command group in cli.py."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ..errors import LyraAssetsError
from .journal import STALE_AFTER_S, JobRow, Journal
from .root import DropRoot
from .status import read_status

EXIT_BAD_INPUT = 2  # as lyra_assets.cli: bad input prints one line and exits 2


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=1),
              help="Jobs run at once. [1; with --ray, the cluster's CPUs]")
@click.option("--polling", is_flag=True, help="Poll the inbox instead of OS file events (for NFS/SMB shares).")
@click.option("--ray", "ray_address", envvar="RAY_ADDRESS", metavar="auto|ADDRESS",
              help="Run jobs on a Ray cluster (needs lyra-assets[ray]). [$RAY_ADDRESS]")
@click.option("--gpu-generator", "gpu_generators", multiple=True, metavar="NAME",
              help="With --ray: run this generator in the GPU actor (generators that need a GPU always do).")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds a file must stay unchanged before it counts as arrived.")
@click.option("--scan-every", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds between scans of the inbox (file events wake it sooner).")
@click.option("--grace", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM/SIGINT, seconds running jobs get to finish before they are stopped and re-queued.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Crashed runs of one file before it goes to failed/.")
@click.option("--sidecar-wait", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds a sidecar without an image waits for one before it goes to failed/.")
@click.option("--stall-timeout", type=click.FloatRange(min=0.1), default=3600.0, show_default=True,
              help="Seconds without progress after which a run is stopped as stuck (and counts as a crash).")
@click.option("--dead-after", type=click.FloatRange(min=1), default=STALE_AFTER_S, show_default=True,
              help="Seconds without a heartbeat after which a daemon on another host counts as dead and its jobs "
                   "are taken over (one on this host counts as dead only once its process is gone).")
@click.pass_context
def watch(ctx: click.Context, root: Path, workers: int | None, polling: bool, ray_address: str | None,
          gpu_generators: tuple[str, ...], settle: float, scan_every: float, grace: float, max_attempts: int,
          sidecar_wait: float, stall_timeout: float, dead_after: float) -> None:
    """Build every image dropped into ROOT/inbox/, until stopped (SIGTERM or Ctrl-C).

    Results go to ROOT/out/<name>/ (with a status.json), originals to ROOT/done/, and what cannot be built
    to ROOT/failed/ with a <file>.error.json saying what to fix. Settings for every job may go in
    ROOT/defaults.toml; a sidecar next to an image wins over them. Log lines are JSON, on stderr.
    """
    from .service import Options, Service
    from .settings import load_defaults

    try:
        drop_root = DropRoot.open(root, create=True)
        defaults = load_defaults(drop_root.defaults)
        executor = _executor(ray_address, workers, frozenset(gpu_generators))
    except LyraAssetsError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_BAD_INPUT)
    options = Options(settle_s=settle, scan_every_s=scan_every, grace_s=grace, max_attempts=max_attempts,
                      sidecar_wait_s=sidecar_wait, stall_s=stall_timeout, stale_after_s=dead_after, polling=polling)
    ctx.exit(Service(drop_root, executor, defaults, options).run())


def _executor(ray_address: str | None, workers: int | None, gpu_generators: frozenset[str]):
    if ray_address:
        from .ray_executor import RayExecutor

        return RayExecutor(ray_address, workers, gpu_generators)
    if gpu_generators:
        raise LyraAssetsError("--gpu-generator places generators on Ray GPU workers; it needs --ray")
    from .executors import LocalExecutor

    return LocalExecutor(workers or 1)


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Everything, machine-readable.")
@click.pass_context
def status(ctx: click.Context, root: Path, as_json: bool) -> None:
    """What the drop folder ROOT is doing: queued, running, done and failed jobs, and why."""
    try:
        drop_root = DropRoot.open(root, create=False)
    except LyraAssetsError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_BAD_INPUT)
    journal = Journal(drop_root.journal)
    jobs, counts = journal.jobs(), journal.counts()
    dead = set(journal.dead_daemons(STALE_AFTER_S))
    daemons = [{"id": d.id, "host": d.host, "pid": d.pid, "started": d.started, "heartbeat": d.heartbeat}
               for d in journal.daemons() if d.id not in dead]
    names = {row.id: row.name for row in jobs}
    records = [_record(drop_root, row, names) for row in jobs]
    if as_json:
        click.echo(json.dumps({"root": str(drop_root.path), "counts": counts, "daemons": daemons, "jobs": records},
                              indent=2, ensure_ascii=False))
        return
    order = ("claimed", "queued", "running", "done", "duplicate", "failed")
    click.echo(f"{drop_root.path}: " + (", ".join(f"{counts[s]} {s}" for s in order if counts.get(s)) or "no jobs"))
    for d in daemons:
        click.echo(f"daemon {d['id']}  up {_ago(d['started'])}, last seen {_ago(d['heartbeat'])} ago")
    if not daemons:
        click.echo("no daemon is running on this folder")
    shown = [r for r in records if r["state"] in ("claimed", "queued", "running")]
    shown += [r for r in records if r["state"] == "failed"][-20:]
    shown += [r for r in records if r["state"] in ("done", "duplicate")][-10:]
    for record in shown:
        click.echo(f"  {record['state']:<9} {record['file']:<40} {_detail(record)}")


def _detail(record: dict[str, Any]) -> str:
    if record["state"] == "running":
        status = record["status"] or {}
        if status.get("stage") and status.get("total"):
            return f"{status['stage']} {status['done']}/{status['total']}  {record['output']}"
        return record["output"] or ""
    if record["state"] == "failed":
        return record["error"] or ""
    if record["state"] == "done":
        return record["output"] or ""
    if record["state"] == "duplicate":
        return f"same as {record['output']}"
    return ""


def _record(root: DropRoot, row: JobRow, names: dict[str, str]) -> dict[str, Any]:
    record = {"job": row.id, "file": row.source, "sidecars": row.sidecars, "state": row.state,
              "attempts": row.attempts, "key": row.key, "error": row.error, "rerun_of": row.rerun_of,
              "output": None, "status": None,
              "filed_as": None if row.filed_as is None else str(Path(row.filed_as).relative_to(root.path))}
    if row.state == "duplicate" and row.duplicate_of:
        record["output"] = f"out/{names[row.duplicate_of]}/"
    elif (root.out / row.name).is_dir() and row.state in ("running", "done", "failed", "queued"):
        record["output"] = f"out/{row.name}/"
        record["status"] = read_status(root.out / row.name)
    return record


def _ago(t: float) -> str:
    seconds = max(0, int(time.time() - t))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
