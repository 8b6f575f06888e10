"""End-to-end benchmark of the main job: the example image -> walkthrough (832x480) -> GLB with 4 LODs and
albedo + normal textures, default settings otherwise.

    .venv/bin/python bench/bench_build.py [--frames 121 241 481] [--big-texture 4096] [--skip-references]
    .venv/bin/python bench/bench_build.py --goal [--repeat 3]   # only the 10 s goal's build, on an idle machine

Every build runs in a fresh child process, so its peak RSS (walkthrough and all) and CPU seconds (its
threads and the ffmpeg it starts) are its own. What it prints:

- warm build, 121 frames at 832x480, 4 LODs, 2048² albedo + normal: wall and CPU seconds, per stage, the
  output folder's size; with numba's kernels in the user's cache (`lyra-assets warm-up` runs first). The
  goal on an idle 2-core machine is <= 10 s wall; the load average is printed before and after, as a
  shared machine's numbers are slower. `--goal` runs only this build (`--repeat` times) and stops;
- first build / warm build, wall and CPU, in a fresh environment: an empty numba cache folder
  (NUMBA_CACHE_DIR set to a new temporary folder, as for a user who never ran lyra-assets), then the
  README's set-up step `lyra-assets warm-up` (its own wall and CPU printed), then the build; goal <= 1.2x.
  Also the same first build without the warm-up step (it compiles what it uses), for comparison. CPU
  ratios hold on a busy machine; wall ratios follow its load;
- peak RSS at each --frames at 2048² (goal: 481 frames <= 2.0 GB) and at 121 frames at --big-texture
  (goal <= 2.5 GB);
- each stage against its reference tool, from bench_fusion.py (Open3D's VoxelBlockGrid, CPU seconds) and
  bench_assets.py (fast-simplification; xatlas in one piece: time and the share of the atlas filled), run
  at 121 frames, unless --skip-references.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
EXAMPLE = BENCH.parent / "examples" / "corridor.png"
TARGET_WALL_S, TARGET_FIRST_RATIO = 10.0, 1.2
TARGET_RSS_GB = {2048: 2.0, 4096: 2.5}  # at the largest frame count, and at 121 frames


def one_build(frames: int, texture: int, out: Path) -> dict:
    """One build in this process (the child's side): what the parent prints."""
    from lyra_assets import build

    started, cpu = time.perf_counter(), _cpu_seconds()
    result = build(EXAMPLE, "walk_forward", out,
                   options={"path": {"frames": frames}, "assets": {"texture_size": texture}})
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    folder = result.glb.parent
    return {"wall": wall, "cpu": cpu, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "timings": result.manifest["timings_s"], "lods": result.manifest["lods"],
            "folder_mb": sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6,
            "walkthrough_mb": sum(f.stat().st_size for f in (folder / "walkthrough").rglob("*")
                                  if f.is_file()) / 1e6,
            "depth_mb": (folder / "walkthrough" / "depth.npz").stat().st_size / 1e6}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_child(frames: int, texture: int, scratch: Path, env: dict[str, str] | None = None) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch))
    run = subprocess.run([sys.executable, __file__, "--child", str(frames), str(texture), str(out)],
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    if run.returncode != 0:
        raise SystemExit(f"build of {frames} frames at {texture}² failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def warm_up(env: dict[str, str] | None = None) -> dict:
    """`lyra-assets warm-up` as the set-up command runs it: its wall and CPU seconds."""
    started, cpu = time.perf_counter(), _cpu_seconds()
    run = subprocess.run([sys.executable, "-m", "lyra_assets", "--json-progress", "warm-up"],
                         capture_output=True, text=True, env={**os.environ, **(env or {})})
    if run.returncode != 0:
        raise SystemExit(f"lyra-assets warm-up failed:\n{run.stderr}")
    outputs = json.loads(run.stdout.strip().splitlines()[-1])["outputs"]
    return {"wall": time.perf_counter() - started, "cpu": _cpu_seconds() - cpu, "compiled": len(outputs["compiled"])}


def goal_run(repeat: int) -> None:
    """Only the goal's build: warm (the user's cache filled first), `repeat` times, each in a new process."""
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    warm_up()
    with tempfile.TemporaryDirectory(prefix="bench_build_") as scratch_dir:
        runs = [run_child(121, 2048, Path(scratch_dir)) for _ in range(repeat)]
    for run in runs:
        stages = ", ".join(f"{stage} {run['timings'].get(stage, float('nan')):.2f}"
                           for stage in ("walk_total", "fuse", "assets", "export"))
        print(f"  {run['wall']:.2f} s wall, {run['cpu']:.1f} s CPU ({stages} s)")
    best = min(run["wall"] for run in runs)
    print(f"warm 121-frame build at 832x480 -> 4 LODs, 2048² albedo + normal: best {best:.2f} s wall of {repeat} "
          f"({best / TARGET_WALL_S:.2f}x the {TARGET_WALL_S:.0f} s goal); load average now {os.getloadavg()[0]:.1f}")


def reference_rows() -> list[str]:
    """The ratio lines of the per-stage benchmarks (each prints its reference tools against ours)."""
    rows = []
    for script, keep in (("bench_fusion.py", ("lyra_assets fuse", "open3d")),
                         ("bench_assets.py", ("(ours)", "fast-simplification", "one piece", "make_level_asset"))):
        # Fusion's best of 2: a process's first fusion takes more CPU (2.79 s against 2.31 s at best of 3, where
        # Open3D's barely moved), which put the ratio at 1.99x in one run and 2.38x in the next.
        args = ["--repeat", "2", "--voxel"] if script == "bench_fusion.py" else []
        run = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True)
        lines = run.stdout.splitlines() if run.returncode == 0 else [f"failed: {run.stderr[-500:]}"]
        rows += [f"  {script}: {line.strip()}" for line in lines if any(k in line for k in keep)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[121, 241, 481])
    parser.add_argument("--big-texture", type=int, default=4096)
    parser.add_argument("--skip-references", action="store_true")
    parser.add_argument("--goal", action="store_true", help="only the warm 121-frame build of the 10 s goal")
    parser.add_argument("--repeat", type=int, default=3, help="with --goal: builds to run")
    args = parser.parse_args()
    if args.goal:
        return goal_run(args.repeat)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory(prefix="bench_build_") as scratch_dir:
        scratch = Path(scratch_dir)
        fresh = {"NUMBA_CACHE_DIR": str(scratch / "fresh-cache")}  # a user who never ran lyra-assets
        set_up = warm_up(fresh)  # the README's set-up step
        warm_up()  # the user's own cache
        # the warm build and the first one side by side, so that a shared machine's load changes little
        warm = run_child(121, 2048, scratch)
        first = run_child(121, 2048, scratch, fresh)
        bare = run_child(121, 2048, scratch, {"NUMBA_CACHE_DIR": str(scratch / "bare-cache")})  # no warm-up
        print("\nbuild, example corridor, walk_forward: 121 frames at 832x480 -> GLB, 4 LODs, 2048² textures")
        for stage in ("generate", "walk_total", "fuse", "assets", "export"):
            print(f"  {stage:<11} {warm['timings'].get(stage, float('nan')):7.2f} s")
        for lod in warm["lods"]:
            print(f"  {lod['node']}: {lod['triangles']:>7,} triangles, {lod['texture_size']}² texture, "
                  f"error {1000 * lod['geometric_error_m']:.1f} mm, screen coverage {lod['screen_coverage']:.3f}")
        print(f"warm: {warm['wall']:.1f} s wall ({warm['wall'] / TARGET_WALL_S:.2f}x the {TARGET_WALL_S:.0f} s "
              f"goal on an idle machine), {warm['cpu']:.1f} s CPU; load average now {os.getloadavg()[0]:.1f}")
        print(f"fresh environment (empty numba cache): set-up's `lyra-assets warm-up` compiled {set_up['compiled']} "
              f"kernels in {set_up['wall']:.1f} s wall, {set_up['cpu']:.1f} s CPU; then the first build: "
              f"{first['wall']:.1f} s wall, {first['cpu']:.1f} s CPU: {first['wall'] / warm['wall']:.2f}x the "
              f"warm wall (goal <= {TARGET_FIRST_RATIO}x), {first['cpu'] / warm['cpu']:.2f}x its CPU")
        print(f"  the same first build without the warm-up step (it compiles what it uses): {bare['wall']:.1f} s "
              f"wall, {bare['cpu']:.1f} s CPU: {bare['wall'] / warm['wall']:.2f}x the warm wall, "
              f"{bare['cpu'] / warm['cpu']:.2f}x its CPU")
        print(f"output folder {warm['folder_mb']:.0f} MB: walkthrough {warm['walkthrough_mb']:.0f} MB "
              f"(depth.npz {warm['depth_mb']:.1f} MB)")

        print("\npeak RSS (each build in its own process):")
        runs = [(frames, 2048) for frames in args.frames] + [(121, args.big_texture)]
        for frames, texture in runs:
            run = warm if (frames, texture) == (121, 2048) else run_child(frames, texture, scratch)
            goal = ""
            if texture in TARGET_RSS_GB and (texture != 2048 or frames == max(args.frames)):
                goal = f"  ({run['rss_gb'] / TARGET_RSS_GB[texture]:.2f}x the {TARGET_RSS_GB[texture]} GB goal)"
            print(f"  {frames:4} frames, {texture}²: {run['rss_gb']:.2f} GB, {run['wall']:.1f} s wall, "
                  f"{run['cpu']:.1f} s CPU{goal}")
    if not args.skip_references:
        print("\nstages against their reference tools (121 frames; ratios above 1: ours is faster):")
        print("\n".join(reference_rows()))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(one_build(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
