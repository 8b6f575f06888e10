"""Collision proxy: the fused surface decimated hard, to a couple of thousand triangles.

A room's collidable shape is its floors, walls and large furniture: big, nearly flat pieces that quadric
simplification keeps with few triangles while it drops everything small. meshoptimizer's quality
simplifier goes first; where the mesh's open borders (holes fusion left) stop it short of the budget, its
sloppy mode (vertex clustering, which ignores topology) takes over, since a collider needs the shape of
the walkable space, not a clean surface.

Simplification leaves a flat floor as fans of long thin triangles (any triangulation of a plane has no
error), and physics engines handle those badly: a body landing near their edges gets contact normals
tilted by the edge, and a ball set down on such a floor in Bullet rolls away. So flat parts of the collider
are then re-triangulated by Delaunay edge flips (`flip_flat_edges`), which gives them the fattest triangles
their vertices allow, moving the surface by at most FLAT_M (not at all where it is exactly flat).

The floor under the spawn is laid before this stage, on the fused mesh itself (assets/spawn.py), so what
a robot stands on is also what is drawn. Given the walkthrough's cameras, the collider's notes say how many
of them have no floor under them: a ray down meets nothing (places a robot should not be put).
"""
from __future__ import annotations

import meshoptimizer
import numpy as np
import trimesh

from . import Collider
from .lod import compact, simplify

FLAT_M = 0.002  # triangle pairs within 2 mm of one plane count as flat: fused floors are level to ~1 mm
MAX_FLIP_ROUNDS = 100  # Lawson's flips end on their own on a plane; this bounds near-flat surfaces
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
    used, renumbered = compact(flip_flat_edges(vertices, kept))
    collider = Collider(vertices[used], renumbered.astype(np.uint32))
    if cameras is None:
        return collider
    cameras = np.unique(np.asarray(cameras, np.float64).round(3), axis=0)
    bare = sum(ray_distance(collider.vertices, collider.faces, c, DOWN) is None for c in cameras)
    return Collider(collider.vertices, collider.faces, {"cameras_without_floor": int(bare)})


def flip_flat_edges(vertices: np.ndarray, faces: np.ndarray, flat_m: float = FLAT_M) -> np.ndarray:
    """`faces` with every edge shared by two triangles that lie within `flat_m` of one plane flipped (Lawson's
    algorithm) until each such pair is Delaunay: the two angles facing the edge sum to at most 180 degrees.
    On a flat region this is its Delaunay triangulation. The surface moves by at most `flat_m` per flip
    (none on an exactly flat floor); triangles keep their facing; non-manifold edges are left alone."""
    v = np.asarray(vertices, np.float64)
    faces = np.array(faces, np.int64).reshape(-1, 3)
    for _ in range(MAX_FLIP_ROUNDS):
        pairs, edges = trimesh.graph.face_adjacency(faces, return_edges=True)
        if len(pairs) == 0:
            break
        # Rotate each pair's first face to (a, b, c) with a -> b its shared edge; a consistently facing
        # second face is then (b, a, d).
        first, second = faces[pairs[:, 0]], faces[pairs[:, 1]]
        c = first.sum(axis=1) - edges.sum(axis=1)
        d = second.sum(axis=1) - edges.sum(axis=1)
        at_c = np.argmax(first == c[:, None], axis=1)
        a, b = first[np.arange(len(first)), (at_c + 1) % 3], first[np.arange(len(first)), (at_c + 2) % 3]
        normal = np.cross(v[b] - v[a], v[c] - v[a])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-30)
        other = np.cross(v[a] - v[b], v[d] - v[b])  # the second face's normal, from (b, a, d)
        other /= np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-30)
        flat = ((np.abs(np.einsum("ij,ij->i", v[d] - v[a], normal)) <= flat_m)
                & (np.abs(np.einsum("ij,ij->i", v[c] - v[a], other)) <= flat_m)
                & (np.einsum("ij,ij->i", normal, other) > 0))
        # The new faces (a, d, c) and (b, c, d) must both face the old way: the quad a-d-b-c is convex.
        convex = ((np.einsum("ij,ij->i", np.cross(v[d] - v[a], v[c] - v[a]), normal) > 0)
                  & (np.einsum("ij,ij->i", np.cross(v[c] - v[b], v[d] - v[b]), normal) > 0))
        excess = _angle(v[a] - v[c], v[b] - v[c]) + _angle(v[a] - v[d], v[b] - v[d]) - np.pi
        wanted = np.flatnonzero(flat & convex & (excess > 1e-9))
        if len(wanted) == 0:
            break
        # Flip the worst pairs first, and no face twice in a round.
        wanted = wanted[np.argsort(-excess[wanted])]
        claims = pairs[wanted].ravel()
        _, first_claim = np.unique(claims, return_index=True)
        owner = np.full(len(faces), -1)
        owner[claims[first_claim]] = first_claim // 2
        chosen = np.arange(len(wanted))[(owner[pairs[wanted, 0]] == np.arange(len(wanted)))
                                        & (owner[pairs[wanted, 1]] == np.arange(len(wanted)))]
        flip = wanted[chosen]
        faces[pairs[flip, 0]] = np.stack([a[flip], d[flip], c[flip]], axis=1)
        faces[pairs[flip, 1]] = np.stack([b[flip], c[flip], d[flip]], axis=1)
    return faces


def _angle(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row-wise angle between vectors, in radians."""
    return np.arctan2(np.linalg.norm(np.cross(u, w), axis=1), np.einsum("ij,ij->i", u, w))


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
