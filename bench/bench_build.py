"""End-to-end benchmark of the main job: the example image -> walkthrough (121 frames at 832x480) -> GLB
with 4 LODs and 2048² albedo + normal textures, with the default settings.

Target: <= 30 s wall and <= 4 GB peak RSS on 2 cores. A small warm-up build runs first so numba's one-time
kernel compilation (cached on disk afterwards) is not counted. The per-stage comparisons with the reference
tools are in bench_fusion.py (Open3D TSDF) and bench_assets.py (fast-simplification, unchunked xatlas).

    .venv/bin/python bench/bench_build.py
"""
from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from lyra_assets import build

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "corridor.png"
TARGET_S, TARGET_RSS_GB = 30.0, 4.0


def main() -> None:
    with tempfile.TemporaryDirectory() as out:
        build(EXAMPLE, out_dir=Path(out) / "warm",
              options={"path": {"frames": 5}, "assets": {"lod0_triangles": 5000, "texture_size": 512}})
        started = time.perf_counter()
        result = build(EXAMPLE, "walk_forward", Path(out) / "bench")
        wall = time.perf_counter() - started
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    timings = result.manifest["timings_s"]
    print("build, example corridor, walk_forward: 121 frames at 832x480 -> GLB, 4 LODs, 2048² textures")
    for stage in ("generate", "walk_total", "fuse", "assets", "export"):
        print(f"  {stage:<11} {timings.get(stage, float('nan')):7.2f} s")
    print(f"  saving the walkthrough folder and the rest: {wall - sum(timings.get(s, 0) for s in ('walk_total', 'fuse', 'assets', 'export')):.2f} s")
    for lod in result.manifest["lods"]:
        print(f"  {lod['node']}: {lod['triangles']:>7,} triangles, {lod['texture_size']}² texture, "
              f"error {1000 * lod['geometric_error_m']:.1f} mm, screen coverage {lod['screen_coverage']:.3f}")
    print(f"total {wall:.1f} s wall ({wall / TARGET_S:.2f}x the {TARGET_S:.0f} s target), "
          f"peak RSS {rss_gb:.2f} GB ({rss_gb / TARGET_RSS_GB:.2f}x the {TARGET_RSS_GB:.0f} GB target)")


if __name__ == "__main__":
    main()
