"""The asset stage: a fused dense mesh and its walkthrough in, a LevelAsset (LOD chain + collider) out.

    dense -> simplify -> LOD0 -> unwrap (uv.py) -> LOD0's atlas
      LOD1, LOD2 ...: simplified from the level before, keeping LOD0's UV seams, so they share its atlas
      a level the seams stop short of its budget: simplified from LOD0 freely and unwrapped on its own
    every level: a normal map baked from the dense mesh at the level's texture size (bake.py)
    every atlas: albedo baked from the frames; the levels sharing LOD0's atlas share its albedo image
      (the same array, so the exporter writes it once)
    then errors and screen coverages (lod.py), and the collider from LOD0 (collision.py)
Before all that, the floor is extended under the spawn (the first camera) where no frame saw it (spawn.py),
so LOD0 and the collider have ground there.

Texture sizes halve per level (texture_size >> k, at least settings.MIN_TEXTURE_SIZE). A level on LOD0's atlas
bakes its normal map at its own size on LOD0's layout, so its gutters are LOD0's padding scaled down:
with the defaults (2048 px, 4 texels) LOD1 keeps 2 texels and shares, LOD2 would keep 1 and gets its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from ..errors import LyraAssetsError
from ..progress import Progress, silent
from ..settings import AssetSettings
from ..walkthrough import Walkthrough
from . import LevelAsset, LodLevel
from .bake import Surface, bake_albedo, bake_normal_map, texels, vertex_normals
from .collision import make_collider
from .lod import compact, geometric_error, screen_coverages, simplify, surface_samples, welded
from .spawn import floor_under_spawn
from .uv import Atlas, tangents, unwrap

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
    dense, spawn = floor_under_spawn(dense, walk.path)
    n_levels = 1 + len(settings.lod_ratios)
    surface = Surface(dense)
    progress("lod", 0, n_levels)
    base_vertices, base_faces = welded(np.asarray(dense.vertices, np.float64), dense.faces)
    lod0_kept, lod0_faces = compact(simplify(base_vertices, base_faces, settings.lod0_triangles))
    lod0_vertices = base_vertices[lod0_kept]
    progress("lod", 1, n_levels, "LOD0")

    progress("uv", 0, 1)
    lod0_atlas = unwrap(lod0_vertices, lod0_faces, settings.texture_size, settings.padding,
                        settings.texels_per_metre)
    progress("uv", 1, 1, "LOD0 atlas")
    # Each lower level: geometry on LOD0's atlas, or faces over LOD0's welded mesh still to be unwrapped.
    # Each level on the atlas is simplified from the one before it: nested levels, and each step starts
    # from a few times its budget instead of LOD0's whole mesh.
    plans: list[_Geometry | np.ndarray] = []
    previous = lod0_atlas.faces
    for k, ratio in enumerate(settings.lod_ratios, start=1):
        target = max(4, round(len(lod0_faces) * ratio))
        gutter = settings.padding * settings.texture_size_of(k) / settings.texture_size
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

    lods = _bake(levels, surface, walk, progress)
    dense_samples = surface_samples(surface.vertices, surface.faces)
    errors = [geometric_error(g.vertices, g.faces, surface, dense_samples) for g in levels]
    diameter = float(np.linalg.norm(np.ptp(lod0_vertices, axis=0)))
    coverages = screen_coverages(errors, [len(g.faces) for g in levels], diameter)
    for lod, error, coverage in zip(lods, errors, coverages):
        lod.geometric_error, lod.screen_coverage = error, coverage
    collider = make_collider(lod0_vertices, lod0_faces, settings.collider_triangles, walk.path.c2w[:, :3, 3])
    return LevelAsset(name, lods, collider, spawn=spawn)


def _own_atlas(vertices: np.ndarray, faces: np.ndarray, level: int, settings: AssetSettings) -> _Geometry:
    """A level simplified without LOD0's seams, unwrapped on its own at its texture size."""
    kept, local = compact(faces)
    size = settings.texture_size_of(level)
    density = settings.texels_per_metre and settings.texels_per_metre * size / settings.texture_size
    atlas = unwrap(vertices[kept], local, size, settings.padding, density)
    return _Geometry(atlas, np.arange(len(atlas.vertices)), atlas.faces.astype(np.int64), size)


def _bake(levels: list[_Geometry], surface: Surface, walk: Walkthrough, progress: Progress) -> list[LodLevel]:
    """Normal map for every level, albedo for every atlas (levels on an atlas share its image)."""
    albedo_of: dict[int, np.ndarray] = {}  # id(atlas) -> albedo image
    total = len(levels) + len({id(g.atlas) for g in levels})
    done = 0
    progress("bake", done, total)
    lods = []
    for k, g in enumerate(levels):
        vertices = g.vertices
        normals = vertex_normals(vertices, g.faces)
        frame = tangents(vertices, g.faces, normals, g.uv)
        tex = texels(vertices, g.faces, normals, frame, g.uv, g.size)
        hit = surface.closest(tex.points)
        normal_map = bake_normal_map(tex, hit)
        done += 1
        progress("bake", done, total, f"LOD{k} normal map")
        if id(g.atlas) not in albedo_of:  # the atlas' own level bakes first: LOD0, or a re-unwrapped one
            albedo_of[id(g.atlas)] = bake_albedo(tex, hit, walk).image
            done += 1
            progress("bake", done, total, f"LOD{k} albedo")
        lods.append(LodLevel(vertices.astype(np.float32), g.faces.astype(np.uint32), normals, g.uv, frame,
                             albedo_of[id(g.atlas)], normal_map, screen_coverage=0.0, geometric_error=0.0))
    return lods
