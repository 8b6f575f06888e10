"""The asset stage: a fused dense mesh and its walkthrough in, a LevelAsset (LOD chain + collider) out.

    dense -> simplify -> LOD0 -> unwrap (uv.py) -> LOD0's atlas
      LOD1, LOD2 ...: simplified from the level before, keeping LOD0's UV seams, so they share its atlas
      a level the seams stop short of its budget: simplified from LOD0 freely and unwrapped on its own
    every level: a normal map baked from the dense mesh at the level's texture size (bake.py)
    every atlas: albedo baked from the frames; the levels sharing LOD0's atlas share its albedo image
      (the same array, so the exporter writes it once)
    then errors and screen coverages (lod.py), and the collider from LOD0 (collision.py): worked out on a
      thread of their own, with the dense mesh's closest-point grid (surface.py), beside LOD0's
      simplification, the unwrap and the bake
Before all that, the floor is extended under the spawn (the first camera) where no frame saw it (spawn.py),
so LOD0 and the collider have ground there.

Texture sizes halve per level (texture_size >> k, at least settings.MIN_TEXTURE_SIZE). A level on LOD0's atlas
bakes its normal map at its own size on LOD0's layout, so its gutters are LOD0's padding scaled down:
with the defaults (2048 px, 4 texels) LOD1 keeps 2 texels and shares, LOD2 would keep 1 and gets its own.
Small atlases (--texture-size 256 to 1024 leave a low level 64-128 px) whose charts do not fit are
charted in fewer pieces, then with narrower gutters (uv.unwrap_fitting), and a level that still does not
fit gets twice its texture size, up to LOD0's (the manifest lists each level's size).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import trimesh

from ..errors import LyraAssetsError
from ..progress import Progress, silent
from ..settings import AssetSettings
from ..walkthrough import Walkthrough
from . import LevelAsset, LodLevel
from .bake import TexelLayout, bake_level
from .collision import make_collider
from .lod import compact, geometric_error, screen_coverages, simplify, surface_samples, welded
from .spawn import floor_under_spawn
from .surface import Surface, vertex_normals
from .uv import Atlas, AtlasFull, tangents, unwrap_fitting

# A level keeps LOD0's atlas if simplifying with the seams kept gets within 10 % of its triangle budget,
# and if LOD0's padding, scaled to the level's smaller texture, still leaves MIN_SHARED_GUTTER texels
# between charts (bilinear filtering needs one, a mip level more two).
SHARED_ATLAS_SLACK = 1.1
MIN_SHARED_GUTTER = 2


@dataclass
class _Geometry:
    """One level's mesh on an atlas, before baking."""

    atlas: Atlas  # the atlas whose layout the level's UVs come from
    kept: np.ndarray  # (V,) the atlas vertices the level uses
    faces: np.ndarray  # (F, 3) over the kept vertices
    size: int  # the level's texture size

    @property
    def vertices(self) -> np.ndarray:
        return self.atlas.vertices[self.kept]

    @property
    def uv(self) -> np.ndarray:
        return self.atlas.uv[self.kept]


def make_level_asset(name: str, dense: trimesh.Trimesh, walk: Walkthrough,
                     settings: AssetSettings = AssetSettings(), progress: Progress = silent) -> LevelAsset:
    """LOD chain with baked textures and a collider for the fused `dense` mesh (vertex colours sRGB)."""
    if len(dense.faces) == 0:
        raise LyraAssetsError("asset stage: the fused mesh has no triangles")
    fused = dense
    dense, spawn = floor_under_spawn(fused, walk.path)
    fused._cache.clear()  # the per-face arrays trimesh kept for that (70 MB at 481 frames) are not needed again
    n_levels = 1 + len(settings.lod_ratios)
    # Neither the dense mesh's closest-point grid, nor the levels' errors, nor the collider need UVs or
    # textures: they are worked out on a thread beside LOD0's simplification, the unwrap and the bake, on the
    # core those leave free (xatlas packs on one; each level's texel layout and gutter fill are serial).
    beside = ThreadPoolExecutor(1, thread_name_prefix="errors-and-collider")
    try:
        dense_vertices, dense_faces = np.asarray(dense.vertices, np.float64), np.asarray(dense.faces)
        surface = beside.submit(Surface, dense)
        dense_samples = beside.submit(surface_samples, dense_vertices, dense_faces)
        progress("lod", 0, n_levels)
        base_vertices, base_faces = welded(dense_vertices, dense_faces)
        lod0_kept, lod0_faces = compact(simplify(base_vertices, base_faces, settings.lod0_triangles))
        lod0_vertices = base_vertices[lod0_kept]
        progress("lod", 1, n_levels, "LOD0")

        def error_of(vertices: np.ndarray, faces: np.ndarray) -> Future[float]:
            return beside.submit(lambda: geometric_error(vertices, faces, surface.result(), dense_samples.result()))

        errors = [error_of(lod0_vertices, lod0_faces)]
        collider = beside.submit(make_collider, lod0_vertices, lod0_faces, settings.collider_triangles,
                                 walk.path.c2w[:, :3, 3])
        levels = _levels(lod0_vertices, lod0_faces, settings, progress)
        errors += [error_of(g.vertices, g.faces) for g in levels[1:]]
        lods = _bake(levels, surface.result(), walk, progress)
        diameter = float(np.linalg.norm(np.ptp(lod0_vertices, axis=0)))
        errors_m = [error.result() for error in errors]
        coverages = screen_coverages(errors_m, [len(g.faces) for g in levels], diameter)
        for lod, error, coverage in zip(lods, errors_m, coverages):
            lod.geometric_error, lod.screen_coverage = error, coverage
        return LevelAsset(name, lods, collider.result(), spawn=spawn)
    finally:
        beside.shutdown(cancel_futures=True)  # after an error: the running task only is waited for


def _levels(lod0_vertices: np.ndarray, lod0_faces: np.ndarray, settings: AssetSettings,
            progress: Progress) -> list[_Geometry]:
    """LOD0 on its atlas, then each lower level: on LOD0's atlas, or simplified freely and unwrapped alone."""
    n_levels = 1 + len(settings.lod_ratios)
    progress("uv", 0, 1)
    lod0_atlas = unwrap_fitting(lod0_vertices, lod0_faces, settings.texture_size, settings.padding,
                                settings.texels_per_metre, "LOD0")
    progress("uv", 1, 1, "LOD0 atlas")
    # Each lower level: geometry on LOD0's atlas, or faces over LOD0's welded mesh still to be unwrapped.
    # Each level on the atlas is simplified from the one before it: nested levels, and each step starts
    # from a few times its budget instead of LOD0's whole mesh.
    plans: list[_Geometry | np.ndarray] = []
    previous = lod0_atlas.faces
    for k, ratio in enumerate(settings.lod_ratios, start=1):
        target = max(4, round(len(lod0_faces) * ratio))
        gutter = lod0_atlas.padding * settings.texture_size_of(k) / settings.texture_size
        shared = simplify(lod0_atlas.vertices, previous, target) if gutter >= MIN_SHARED_GUTTER else None
        if shared is not None and len(shared) <= SHARED_ATLAS_SLACK * target:
            kept, faces = compact(shared)
            plans.append(_Geometry(lod0_atlas, kept, faces, settings.texture_size_of(k)))
            previous = shared
        else:
            plans.append(simplify(lod0_vertices, lod0_faces, target))
        progress("lod", k + 1, n_levels, f"LOD{k}" + ("" if isinstance(plans[-1], _Geometry) else " (own atlas)"))

    levels = [_Geometry(lod0_atlas, np.arange(len(lod0_atlas.vertices)), lod0_atlas.faces.astype(np.int64),
                        settings.texture_size)]
    atlases, n_atlases = 1, 1 + sum(not isinstance(plan, _Geometry) for plan in plans)
    for k, plan in enumerate(plans, start=1):
        if not isinstance(plan, _Geometry):
            plan = _own_atlas(lod0_vertices, plan, k, settings)
            atlases += 1
            progress("uv", atlases, n_atlases, f"LOD{k} atlas")
        levels.append(plan)
    return levels


def _own_atlas(vertices: np.ndarray, faces: np.ndarray, level: int, settings: AssetSettings) -> _Geometry:
    """A level simplified without LOD0's seams, unwrapped on its own at its texture size; if its charts do
    not fit that even with narrow gutters, at twice the size (up to LOD0's), rather than fail the build."""
    kept, local = compact(faces)
    size = settings.texture_size_of(level)
    while True:
        density = settings.texels_per_metre and settings.texels_per_metre * size / settings.texture_size
        try:
            atlas = unwrap_fitting(vertices[kept], local, size, settings.padding, density, f"LOD{level}")
            return _Geometry(atlas, np.arange(len(atlas.vertices)), atlas.faces.astype(np.int64), size)
        except AtlasFull:
            if size >= settings.texture_size:
                raise
            size *= 2


def _bake(levels: list[_Geometry], surface: Surface, walk: Walkthrough, progress: Progress) -> list[LodLevel]:
    """Normal map for every level, albedo for every atlas (levels on an atlas share its image). Progress
    counts texels of the atlases, so it moves chunk by chunk through the long levels."""
    albedo_of: dict[int, np.ndarray] = {}  # id(atlas) -> albedo image
    total, done = sum(g.size**2 for g in levels), 0
    progress("bake", 0, total)
    lods = []
    for k, g in enumerate(levels):
        normals = vertex_normals(g.vertices, g.faces)
        frame = tangents(g.vertices, g.faces, normals, g.uv)
        layout = TexelLayout(g.vertices, g.faces, normals, frame, g.uv, g.size)
        # The atlas' own level bakes its albedo: LOD0, or a re-unwrapped level.
        own_albedo = id(g.atlas) not in albedo_of
        what = f"LOD{k} normal map" + (" and albedo" if own_albedo else "")

        def report(texels: int, of: int, before: int = done, size: int = g.size, what: str = what) -> None:
            progress("bake", before + size * size * texels // max(of, 1), total, what)

        baked = bake_level(layout, surface, walk if own_albedo else None, report)
        done += g.size**2
        if own_albedo:
            albedo_of[id(g.atlas)] = baked.albedo.image
        lods.append(LodLevel(g.vertices.astype(np.float32), g.faces.astype(np.uint32), normals, g.uv, frame,
                             albedo_of[id(g.atlas)], baked.normal_map, screen_coverage=0.0, geometric_error=0.0))
    return lods
