"""Collision proxy: the fused surface decimated hard, to a couple of thousand triangles.

A room's collidable shape is its floors, walls and large furniture: big, nearly flat pieces that quadric
simplification keeps with few triangles while it drops everything small. meshoptimizer's quality
simplifier goes first; where the mesh's open borders (holes fusion left) stop it short of the budget, its
sloppy mode (vertex clustering, which ignores topology) takes over, since a collider needs the shape of
the walkable space, not a clean surface.

The floor under the spawn is laid before this stage, on the fused mesh itself (assets/spawn.py), so what
a robot stands on is also what is drawn. Given the walkthrough's cameras, the collider's notes say how many
of them have no floor under them: a ray down meets nothing (places a robot should not be put).
"""
from __future__ import annotations

import meshoptimizer
import numpy as np

from . import Collider
from .lod import compact, simplify

SLOPPY_WHEN_OVER = 1.5  # quality simplification ending above 1.5x the budget hands over to sloppy mode
DOWN = np.array([0.0, 1.0, 0.0])  # OpenCV axes: y points down
LEVEL_MAX_SLOPE_DEG = 20.0  # steeper triangles are walls or ramps, not a ceiling
LEVEL_GAP_M = 0.3  # a ceiling's triangles lie at least this far above the spawn


def make_collider(vertices: np.ndarray, faces: np.ndarray, target_triangles: int = 2000,
                  cameras: np.ndarray | None = None) -> Collider:
    """A low-triangle mesh following the surface of `vertices`/`faces` (a welded mesh, OpenCV axes); given the
    `cameras` (N, 3 positions), notes counting those with no floor under them."""
    vertices = np.ascontiguousarray(vertices, np.float32)
    kept = simplify(vertices, faces, target_triangles)
    if len(kept) > SLOPPY_WHEN_OVER * target_triangles:
        kept = _sloppy(vertices, kept, target_triangles)
    used, renumbered = compact(kept)
    collider = Collider(vertices[used], renumbered.astype(np.uint32))
    if cameras is None:
        return collider
    cameras = np.unique(np.asarray(cameras, np.float64).round(3), axis=0)
    bare = sum(ray_distance(collider.vertices, collider.faces, c, DOWN) is None for c in cameras)
    return Collider(collider.vertices, collider.faces, {"cameras_without_floor": int(bare)})


def _ceiling_height(collider: Collider) -> float | None:
    """The area-weighted median height (y) of the collider's near-level triangles above the spawn (the
    ceiling); None when there are none."""
    v = np.asarray(collider.vertices, np.float64)[collider.faces]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    area = np.linalg.norm(normal, axis=1)
    height = v[:, :, 1].mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.abs(normal[:, 1]) / area >= np.cos(np.radians(LEVEL_MAX_SLOPE_DEG))
    chosen = level & (height < -LEVEL_GAP_M)  # the spawn is the origin; y points down
    if not chosen.any():
        return None
    order = np.argsort(height[chosen])
    weights = np.cumsum(area[chosen][order])
    return float(height[chosen][order][np.searchsorted(weights, weights[-1] / 2)])


def _sloppy(vertices: np.ndarray, faces: np.ndarray, target_triangles: int) -> np.ndarray:
    indices = np.ascontiguousarray(faces, np.uint32).ravel()
    destination = np.empty(len(indices), np.uint32)
    count = meshoptimizer.simplify_sloppy(destination, indices, vertices,
                                          target_index_count=3 * target_triangles, target_error=1.0)
    return destination[:count].reshape(-1, 3).astype(np.int64)


def ray_distance(vertices: np.ndarray, faces: np.ndarray, origin, direction) -> tuple[float, int] | None:
    """Distance along the unit `direction` from `origin` to the nearest triangle hit, and that triangle;
    None when the ray hits nothing. Möller-Trumbore on every triangle at once (colliders are small)."""
    v = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    origin, direction = np.asarray(origin, np.float64), np.asarray(direction, np.float64)
    edge1, edge2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    p = np.cross(direction, edge2)
    det = np.einsum("ij,ij->i", edge1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = origin - v[:, 0]
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, edge1)
        w = (q @ direction) * inv
        t = np.einsum("ij,ij->i", edge2, q) * inv
        hit = (np.abs(det) > 1e-12) & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    if not hit.any():
        return None
    index = int(np.flatnonzero(hit)[np.argmin(t[hit])])
    return float(t[index]), index


def spawn_clearance(collider: Collider) -> dict[str, float | str | None]:
    """What a robot placed at the spawn (the first camera, the world's origin) finds, in metres: the floor
    below it (a ray down; distance and slope), the ceiling above it and the free height between them.
    The ceiling is a ray up where that meets the collider ("ray"); else, as no camera looks straight up, the
    height of the collider's level ceiling elsewhere ("level ceiling"). None where there is nothing (no floor:
    the spawn is unsafe; no ceiling: open sky)."""
    spawn = np.zeros(3)
    clearance: dict[str, float | str | None] = dict.fromkeys(
        ["floor_distance_m", "floor_slope_deg", "ceiling_distance_m", "ceiling_from", "free_height_m"])
    floor = ray_distance(collider.vertices, collider.faces, spawn, DOWN)
    if floor is not None:
        a, b, c = np.asarray(collider.vertices, np.float64)[collider.faces[floor[1]]]
        normal = np.cross(b - a, c - a)
        slope = np.degrees(np.arccos(min(1.0, abs(normal @ DOWN) / np.linalg.norm(normal))))
        clearance.update(floor_distance_m=round(floor[0], 4), floor_slope_deg=round(float(slope), 2))
    ceiling = ray_distance(collider.vertices, collider.faces, spawn, -DOWN)
    level = None if ceiling is not None else _ceiling_height(collider)
    if ceiling is not None:
        clearance.update(ceiling_distance_m=round(ceiling[0], 4), ceiling_from="ray")
    elif level is not None:
        clearance.update(ceiling_distance_m=round(-level, 4), ceiling_from="level ceiling")
    if floor is not None and clearance["ceiling_distance_m"] is not None:
        clearance["free_height_m"] = round(clearance["floor_distance_m"] + clearance["ceiling_distance_m"], 4)
    return clearance
