"""The drop-folder daemon: `lyra-assets watch ROOT` turns images dropped in ROOT/inbox/ into assets in ROOT/out/.

One concern per module:

    root.py          the folder layout, and filing originals into done/ and failed/ without overwriting
    inbox.py         what has arrived: a periodic scan with a settle window; watchdog events only wake it
    journal.py       the SQLite journal (WAL), the single source of truth for jobs and daemons
    settings.py      ROOT/defaults.toml and resolving a dropped file into a validated job plan and key
    checks.py        checking a claimed file (sidecar, key, pixels) in a checker process, off the daemon's loop
    status.py        the small status JSON next to each job's output, for artists and the Blender add-on
    runner.py        what a worker runs: the pipeline's `build` (or `mesh`, resuming from a walkthrough)
    executors.py     the executor seam and the local process pool (the default)
    ray_executor.py  the same seam on a Ray cluster (optional extra `ray`)
    service.py       the daemon loop: claim, check, schedule, finish, recover, pause on folder faults, stop
    logs.py          structured log lines (JSON) on stderr
    commands.py      the `watch` and `status` commands
"""
