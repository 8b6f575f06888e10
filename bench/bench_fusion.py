"""Fusion benchmark: lyra_assets.reconstruct.fuse against Open3D's VoxelBlockGrid on the same walkthrough.

    .venv/bin/python bench/bench_fusion.py [--frames 121] [--width 832] [--height 480] [--voxel 0.01 ...]

Renders a BoxScene walkthrough (tests/scenes.py: exact RGB-D of a room with a block) and fuses it at the
default voxel size and at each --voxel: ours, and Open3D's VoxelBlockGrid (its tensor TSDF, when open3d is
installed) at the same voxel size and truncation. Prints wall seconds and CPU seconds (best of --repeat;
CPU time is the fairer figure on a machine other jobs share), the run's peak RSS, triangles, the surface
error against the true boxes in voxels (mean and max over vertices), and Open3D's time over ours.

Every run happens in a fresh fork of this process, which holds the walkthrough: the peak RSS is that run's
own (walkthrough included), and no run inherits another's thread pools. open3d is optional (pip install
open3d; its wheel also needs the system's libusb-1.0); without it those rows are skipped. Open3D's
legacy ScalableTSDFVolume is left out: in open3d 0.20.0 it returns an empty mesh even for a flat wall.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import BoxScene, forward_path

from lyra_assets.reconstruct import fuse
from lyra_assets.reconstruct.fusion import TRUNCATION_VOXELS
from lyra_assets.walkthrough import Walkthrough

SCENE = BoxScene()
WALK: Walkthrough  # rendered once in the parent; the forked runs inherit it


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    vertices: np.ndarray
    triangles: int
    voxel: float
    peak_rss_gb: float = 0.0


class Clock:
    """Wall and CPU time (all threads) of a with-block."""

    def __enter__(self) -> Self:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run_ours(voxel: float | None) -> Run:
    fuse(SCENE.render(forward_path(frames=3)), voxel_size=0.1)  # load the compiled kernels before timing
    with Clock() as clock:
        fused = fuse(WALK, voxel_size=voxel, max_voxels=400_000_000)
    return Run(clock.wall, clock.cpu, fused.mesh.vertices, len(fused.mesh.faces), fused.voxel_size)


def run_open3d(voxel: float) -> Run:
    import open3d as o3d
    import open3d.core as o3c

    path, w2c = WALK.path, WALK.path.w2c
    settings = {"depth_scale": 1.0, "depth_max": float(WALK.depth.max()) + 1.0,
                "trunc_voxel_multiplier": float(TRUNCATION_VOXELS)}
    with Clock() as clock:
        grid = o3d.t.geometry.VoxelBlockGrid(("tsdf", "weight", "color"), (o3c.float32,) * 3, (1, 1, 3),
                                             voxel_size=voxel, block_resolution=8, block_count=100_000)
        for i in range(len(WALK)):
            # Its kernels truncate (u, v) to integers, like ours: pixel centres at +0.5, K passed as is.
            K, extrinsic = o3c.Tensor(path.K[i]), o3c.Tensor(w2c[i])
            depth = o3d.t.geometry.Image(o3c.Tensor(WALK.depth[i]))
            colour = o3d.t.geometry.Image(o3c.Tensor(WALK.frames[i].astype(np.float32) / 255))
            blocks = grid.compute_unique_block_coordinates(depth, K, extrinsic, **settings)
            grid.integrate(blocks, depth, colour, K, extrinsic, **settings)
        mesh = grid.extract_triangle_mesh(weight_threshold=1.0)
    return Run(clock.wall, clock.cpu, mesh.vertex.positions.numpy(), len(mesh.triangle.indices), voxel)


def measure(runner, voxel: float | None, repeat: int) -> Run:
    """Best of `repeat` runs, each in a fresh fork of this process."""
    runs = []
    for _ in range(repeat):
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
            runs.append(pool.submit(_in_child, runner, voxel).result())
    best = min(runs, key=lambda run: run.seconds)
    best.cpu_seconds = min(run.cpu_seconds for run in runs)
    return best


def _in_child(runner, voxel: float | None) -> Run:
    run = runner(voxel)
    run.peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return run


def surface_error(run: Run) -> np.ndarray:
    """Distance from each fused vertex to the nearest true surface, in voxels."""

    def box(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # |signed distance| to an axis-aligned box
        q = np.abs(run.vertices - (lo + hi) / 2) - (hi - lo) / 2
        return np.abs(np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0))

    boxes = [box(SCENE.room_min, SCENE.room_max)] + [box(lo, hi) for lo, hi in SCENE.blocks]
    return np.minimum.reduce(boxes) / run.voxel


def main() -> None:
    global WALK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--voxel", type=float, nargs="*", default=[0.01], help="metres, besides the default")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with Clock() as clock:
        WALK = SCENE.render(forward_path(frames=args.frames, width=args.width, height=args.height))
    print(f"BoxScene walkthrough: {args.frames} frames at {args.width}x{args.height} (rendered in "
          f"{clock.wall:.0f} s); {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    try:
        import open3d  # noqa: F401

        references = [("open3d VoxelBlockGrid", run_open3d)]
    except ImportError as exc:
        print(f"open3d not available ({exc}): its rows are skipped")
        references = []

    header = (f"{'method':26} {'voxel':>7} {'wall':>8} {'cpu':>8} {'peak RSS':>9} {'triangles':>10} "
              f"{'mean err':>9} {'max err':>8} {'time vs ours (wall, cpu)':>25}")
    print(header)
    print("-" * len(header))
    for voxel in [None, *args.voxel]:
        ours = measure(run_ours, voxel, args.repeat)
        rows = [("lyra_assets fuse" + (" (default)" if voxel is None else ""), ours, "")]
        for name, runner in references:
            theirs = measure(runner, ours.voxel, args.repeat)
            ratio = f"{theirs.seconds / ours.seconds:.2f}x, {theirs.cpu_seconds / ours.cpu_seconds:.2f}x"
            rows.append((name, theirs, ratio))
        for name, run, ratio in rows:
            error = surface_error(run)
            print(f"{name:26} {100 * run.voxel:5.2f}cm {run.seconds:7.2f}s {run.cpu_seconds:7.2f}s "
                  f"{run.peak_rss_gb:7.2f}GB {run.triangles:10,} {error.mean():7.3f}vx {error.max():6.2f}vx "
                  f"{ratio:>25}")
    print("wall, cpu: best of the runs; errors: fused vertices to the true surfaces, in voxels; "
          "time vs ours: Open3D's over ours (above 1: ours is faster)")


if __name__ == "__main__":
    main()
