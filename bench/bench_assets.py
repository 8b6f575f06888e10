"""Asset-stage benchmark: LOD chain, UV atlas and bakes on a fused room, against the reference tools.

    .venv/bin/python bench/bench_assets.py [--frames 121] [--width 832] [--height 480] [--voxel 0.01]
                                           [--ply dense.ply] [--texture 2048] [--lod0 150000]
                                           [--xatlas-faces 20000]

Renders a BoxScene walkthrough (tests/scenes.py: exact RGB-D of a textured room with a block) and fuses it
with lyra_assets.reconstruct at its default voxel size or --voxel (or loads --ply), then:

1. runs make_level_asset end to end, timing each sub-stage from its progress reports (the gaps between
   them), with the process's peak RSS, and the quality numbers: per level triangles, geometric error,
   screen coverage, baked albedo PSNR against the true colours at the texels' surface points, and for
   levels sharing LOD0's atlas the PSNR of their colours against LOD0's at the same surface points;
2. compares the pieces with the reference tools on the same data, in the same process:
   - decimation of the dense mesh to the LOD0 budget: meshoptimizer (ours) against fast-simplification
     and, if installed, pymeshlab's quadric edge collapse (time, and geometric error measured the same way);
   - UV unwrapping: our chunked xatlas against xatlas on the whole mesh in one piece, on a mesh decimated to
     --xatlas-faces triangles (unchunked xatlas grows about as n^1.9: the full LOD0 would take minutes).

Each run happens in a fresh fork of this process (which holds the walkthrough and the dense mesh), so the
peak RSS is that run's own (inputs included). Reference tools are optional: missing ones are skipped.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import BoxScene, forward_path, sample_bilinear

from lyra_assets.assets import bake, lod, surface, uv
from lyra_assets.assets.level import make_level_asset
from lyra_assets.settings import AssetSettings
from lyra_assets.walkthrough import Walkthrough

SCENE = BoxScene()
WALK: Walkthrough  # made once in the parent; forked children inherit them
DENSE: trimesh.Trimesh


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's CPU and its ended children's: the UV packing runs in forked processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def warm_up() -> None:
    """Load numba's compiled kernels (cached on disk) on a tiny input so no timing includes them."""
    small = SCENE.render(forward_path(frames=2, width=32, height=24))
    v, f = trimesh.remesh.subdivide_to_size(SCENE.mesh().vertices, SCENE.mesh().faces, 0.5)
    mesh = trimesh.Trimesh(v, f, vertex_colors=np.full((len(v), 4), 200, np.uint8))
    make_level_asset("warm", mesh, small, AssetSettings(lod0_triangles=500, texture_size=64))


def fuse_walk(voxel: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from lyra_assets.reconstruct import fuse

    mesh = fuse(WALK, voxel_size=voxel).mesh
    return np.asarray(mesh.vertices), np.asarray(mesh.faces), np.asarray(mesh.visual.vertex_colors)


# -- the stage end to end --------------------------------------------------------------------------------


def run_stage(settings: AssetSettings) -> dict:
    warm_up()
    marks: list[tuple[float, str, str]] = []

    def progress(stage: str, done: int, total: int, message: str = "") -> None:
        marks.append((time.perf_counter(), stage, message))

    start = time.perf_counter()
    cpu = cpu_seconds()
    asset = make_level_asset("room", DENSE, WALK, settings, progress)
    total, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    # A sub-stage's time is the gap from the previous report to the one that names it.
    steps, previous = [("dense surface (grid, normals)", marks[0][0] - start)], start
    for when, stage, message in marks:
        if message:
            steps.append((f"{stage}: {message}", when - previous))
        previous = when
    steps.append(("errors, coverage, collider", start + total - marks[-1][0]))
    quality = []
    for level in asset.lods:
        tex = bake.texels(level.vertices, level.faces, level.normals, level.tangents, level.uv,
                          level.albedo.shape[0])
        truth = SCENE.colour(tex.points)
        shown = level.albedo.reshape(-1, 3)[tex.index] / 255.0
        psnr = 10 * np.log10(1.0 / np.mean((shown - truth) ** 2))
        quality.append((len(level.faces), level.albedo.shape[0], level.normal_map.shape[0],
                        level.geometric_error, level.screen_coverage, psnr))
    shared = [k for k, level in enumerate(asset.lods[1:], start=1) if level.albedo is asset.lods[0].albedo]
    return {"total": total, "cpu": cpu, "steps": steps, "quality": quality, "rss": peak_rss_mb(),
            "collider": len(asset.collider.faces),
            "shared": [(k, shared_atlas_psnr(asset.lods[0], asset.lods[k])) for k in shared]}


def shared_atlas_psnr(lod0, level) -> float:
    """PSNR (dB) of what a level sharing LOD0's atlas shows against what LOD0 shows at the same points
    (points spread over the level; LOD0's colour at its closest point), both sampled bilinearly."""
    import igl

    points = lod.surface_samples(level.vertices, level.faces, 200_000, seed=1)

    def shown(mesh) -> np.ndarray:
        _, face, closest = igl.point_mesh_squared_distance(points, mesh.vertices.astype(np.float64),
                                                           mesh.faces.astype(np.int64))
        tri = mesh.vertices[mesh.faces[face]].astype(np.float64)
        bary = igl.barycentric_coordinates(closest, tri[:, 0].copy(), tri[:, 1].copy(), tri[:, 2].copy())
        texcoords = np.einsum("pk,pkd->pd", bary, mesh.uv[mesh.faces[face]].astype(np.float64))
        return sample_bilinear(mesh.albedo, texcoords)

    return float(10 * np.log10(1.0 / np.mean((shown(level) - shown(lod0)) ** 2)))


# -- references ------------------------------------------------------------------------------------------


def run_decimation(target: int) -> list[tuple[str, float, int, float]]:
    """(tool, seconds, triangles, geometric error) for each decimator available."""
    vertices, faces = lod.welded(np.asarray(DENSE.vertices), DENSE.faces)
    dense = surface.Surface(DENSE)
    samples = lod.surface_samples(dense.vertices, dense.faces)
    rows = []

    def measure(name: str, run) -> None:
        start = time.perf_counter()
        v, f = run()
        seconds = time.perf_counter() - start
        rows.append((name, seconds, len(f), lod.geometric_error(v, f, dense, samples)))

    measure("meshoptimizer (ours)", lambda: (vertices, lod.simplify(vertices, faces, target)))
    try:
        import fast_simplification

        measure("fast-simplification", lambda: fast_simplification.simplify(
            vertices.astype(np.float32), faces.astype(np.int64), target_count=target))
    except ImportError:
        rows.append(("fast-simplification", float("nan"), 0, float("nan")))
    try:
        import pymeshlab

        def meshlab():
            ms = pymeshlab.MeshSet()
            ms.add_mesh(pymeshlab.Mesh(vertices, faces))
            ms.meshing_decimation_quadric_edge_collapse(targetfacenum=target, preservetopology=True)
            m = ms.current_mesh()
            return m.vertex_matrix(), m.face_matrix()

        measure("pymeshlab quadric", meshlab)
    except ImportError:
        rows.append(("pymeshlab quadric", float("nan"), 0, float("nan")))
    return rows


def run_unwrap(faces_budget: int, size: int) -> list[tuple[str, float, float, int, int, float]]:
    """(how, seconds, CPU seconds, triangles, charts, texel share used) for chunked (ours) and whole-mesh
    xatlas. CPU seconds are the fairer figure on a machine other jobs share."""
    import xatlas

    vertices, faces = lod.welded(np.asarray(DENSE.vertices), DENSE.faces)
    kept, small = lod.compact(lod.simplify(vertices, faces, faces_budget))
    small_vertices = vertices[kept]
    rows = []
    start, cpu = time.perf_counter(), cpu_seconds()
    atlas = uv.unwrap(small_vertices, small, size)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    charts = int(uv._chart_ids(atlas.faces.astype(np.int64), len(atlas.vertices)).max()) + 1
    rows.append(("chunked xatlas (ours)", seconds, cpu, len(small), charts, _uv_share(atlas.uv, atlas.faces)))
    start, cpu = time.perf_counter(), cpu_seconds()
    whole = xatlas.Atlas()
    whole.add_mesh(small_vertices.astype(np.float32), small.astype(np.uint32))
    options = xatlas.PackOptions()
    options.resolution = size
    options.padding = 4
    options.bilinear = True
    whole.generate(xatlas.ChartOptions(), options)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    _, indices, texcoords = whole[0]
    # Its layout may come out other than size x size (xatlas picks the density); its share is of its own
    # width x height.
    rows.append(("xatlas, one piece", seconds, cpu, len(small), whole.chart_count, _uv_share(texcoords, indices)))
    return rows


def _uv_share(texcoords: np.ndarray, faces: np.ndarray) -> float:
    t = np.asarray(texcoords, np.float64)[np.asarray(faces, np.int64)]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return float(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())


# -- main ------------------------------------------------------------------------------------------------


def main() -> None:
    global WALK, DENSE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--ply", type=Path, help="dense mesh to use instead of fusing the walkthrough")
    parser.add_argument("--voxel", type=float, help="fusion voxel size in metres (default: fusion's own)")
    parser.add_argument("--texture", type=int, default=2048)
    parser.add_argument("--lod0", type=int, default=150_000)
    parser.add_argument("--xatlas-faces", type=int, default=20_000)
    args = parser.parse_args()

    start = time.perf_counter()
    WALK = SCENE.render(forward_path(frames=args.frames, width=args.width, height=args.height, distance=3.0))
    print(f"walkthrough: {args.frames} frames {args.width}x{args.height} ({time.perf_counter() - start:.0f} s)")
    context = multiprocessing.get_context("fork")
    if args.ply:
        DENSE = trimesh.load(args.ply, process=False)
    else:
        # In a child: fusion's parallel kernels start OpenMP, after which this process could not fork.
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            vertices, faces, colours = pool.submit(fuse_walk, args.voxel).result()
        DENSE = trimesh.Trimesh(vertices, faces, vertex_colors=colours, process=False)
    print(f"dense mesh: {len(DENSE.faces):,} triangles, {len(DENSE.vertices):,} vertices")

    settings = AssetSettings(lod0_triangles=args.lod0, texture_size=args.texture)
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        stage = pool.submit(run_stage, settings).result()
    print(f"\nmake_level_asset: {stage['total']:.2f} s wall, {stage['cpu']:.2f} s CPU, "
          f"peak RSS {stage['rss']:.0f} MB (walkthrough and dense mesh included)")
    for name, seconds in stage["steps"]:
        print(f"  {name:<32} {seconds:6.2f} s")
    print("\n  level  triangles  albedo  normal  error (m)  coverage  albedo PSNR vs truth (dB)")
    for k, (tris, albedo, normal, error, coverage, psnr) in enumerate(stage["quality"]):
        print(f"  LOD{k}   {tris:9,}  {albedo:6}  {normal:6}  {error:9.4f}  {coverage:8.3f}  {psnr:6.1f}")
    print(f"  collider: {stage['collider']} triangles")
    for k, psnr in stage["shared"]:
        print(f"  LOD{k} on LOD0's atlas shows LOD0's colours at {psnr:.1f} dB PSNR")

    with ProcessPoolExecutor(1, mp_context=context) as pool:
        decimation = pool.submit(run_decimation, args.lod0).result()
    print(f"\ndecimation to {args.lod0:,} triangles:")
    ours = decimation[0][1]
    for name, seconds, tris, error in decimation:
        if np.isnan(seconds):
            print(f"  {name:<24} not installed, skipped")
        else:
            print(f"  {name:<24} {seconds:6.2f} s  ({seconds / ours:5.2f}x ours)  {tris:9,} triangles  "
                  f"error {error:.4f} m")

    with ProcessPoolExecutor(1, mp_context=context) as pool:
        unwrap_rows = pool.submit(run_unwrap, args.xatlas_faces, args.texture).result()
    print(f"\nUV atlas of the dense mesh decimated to {args.xatlas_faces:,} triangles, {args.texture}px:")
    ours, ours_cpu = unwrap_rows[0][1:3]
    for name, seconds, cpu, tris, charts, share in unwrap_rows:
        print(f"  {name:<24} {seconds:6.2f} s  {cpu:6.2f} s CPU  ({seconds / ours:5.2f}x, {cpu / ours_cpu:5.2f}x CPU "
              f"ours)  {charts:6} charts  UV area {share:.2f} of the atlas")


if __name__ == "__main__":
    main()
