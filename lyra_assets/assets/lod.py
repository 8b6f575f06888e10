"""LOD chain geometry: meshoptimizer simplification, measured geometric error, screen-coverage thresholds.

Simplification is meshoptimizer's `simplify` (edge collapses under quadric error, "quality" mode, not the
sloppy clustering one). It keeps a subset of the input vertices and never moves one, and it treats
vertices that share a position but not an index as a seam: collapses run along a seam on both sides at
once or not at all. A mesh split at its UV chart borders therefore keeps its charts, and every kept vertex
keeps its UV, which is what lets the first LODs share LOD0's atlas.

Geometric error (LodLevel.geometric_error) is a sampled two-sided Hausdorff distance in metres: the
largest of (a) distances from ERROR_SAMPLES points spread uniformly over the level's surface to the dense
mesh and (b) distances from ERROR_SAMPLES points spread over the dense mesh to the level's surface.
(a) alone would miss a feature the level has lost (a collapsed post's tip lies far from the level, but
the level lies close to the post's foot). Both use surface.Surface's exact closest-point query.

Screen coverage (LodLevel.screen_coverage) is the fraction of the screen's height the asset's bounding
sphere spans, as in Unity's LOD groups; a level is shown while the asset covers at least its value.
Level k hands over to level k + 1 once level k + 1's error projects under PIXEL_ERROR pixels on a
REFERENCE_HEIGHT_PX screen, but not before the coverage has dropped by the square root of their triangle
ratio (so on-screen triangle density never rises at a switch, and the thresholds strictly decrease even
for levels without error). The last level has 0: a level asset is never culled, it is the world around.
"""
from __future__ import annotations

import math

import meshoptimizer
import numpy as np
import trimesh

from ..errors import LyraAssetsError
from .geometry import repeats_a_vertex, triangle_areas
from .surface import Surface, weld

ERROR_SAMPLES = 20_000  # per direction: the 99.99th percentile of the true distances, near enough the max
PIXEL_ERROR = 1.0
REFERENCE_HEIGHT_PX = 1080
MAX_COVERAGE_STEP = 0.9  # thresholds drop by at least 10 % per level, even between equal triangle counts
NO_ERROR_LIMIT = 1.0  # meshoptimizer's target_error is relative to the mesh's extent: 1 = reach the count


def welded(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with coincident vertices merged and faces that lost a corner to the merge dropped."""
    ids = weld(vertices)  # 0 .. n - 1
    _, first = np.unique(ids, return_index=True)  # each id's first vertex
    faces = ids[np.asarray(faces, np.int64)]
    return np.asarray(vertices)[first], faces[~repeats_a_vertex(faces)]


def simplify(vertices: np.ndarray, faces: np.ndarray, target_triangles: int) -> np.ndarray:
    """(F', 3) int64 faces indexing the same vertices, F' <= max(target_triangles, what seams allow)."""
    indices = np.ascontiguousarray(faces, np.uint32).ravel()
    if len(indices) // 3 <= target_triangles:
        return np.asarray(faces, np.int64).reshape(-1, 3)
    destination = np.empty(len(indices), np.uint32)
    count = meshoptimizer.simplify(destination, indices, np.ascontiguousarray(vertices, np.float32),
                                   target_index_count=3 * max(int(target_triangles), 1),
                                   target_error=NO_ERROR_LIMIT)
    return destination[:count].reshape(-1, 3).astype(np.int64)


def compact(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept vertex indices, faces renumbered over them): drop vertices no face uses."""
    kept, renumbered = np.unique(faces, return_inverse=True)
    return kept, renumbered.reshape(-1, 3)


# -- error -------------------------------------------------------------------------------------------------


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int = ERROR_SAMPLES,
                    seed: int = 0) -> np.ndarray:
    """(count, 3) points spread uniformly (by area) over a mesh's surface; the same seed, the same points."""
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    area = triangle_areas(vertices, faces)
    if not area.sum() > 0:
        raise LyraAssetsError("the mesh has no surface area to sample")
    rng = np.random.default_rng(seed)
    face = np.minimum(np.searchsorted(np.cumsum(area) / area.sum(), rng.random(count)), len(faces) - 1)
    r1, r2 = rng.random(count), rng.random(count)
    flip = r1 + r2 > 1.0  # fold the unit square onto the triangle: uniform barycentrics
    r1, r2 = np.where(flip, 1.0 - r1, r1), np.where(flip, 1.0 - r2, r2)
    tri = vertices[faces[face]]
    return tri[:, 0] + r1[:, None] * (tri[:, 1] - tri[:, 0]) + r2[:, None] * (tri[:, 2] - tri[:, 0])


def geometric_error(vertices: np.ndarray, faces: np.ndarray, dense: Surface,
                    dense_samples: np.ndarray) -> float:
    """Sampled two-sided Hausdorff distance (metres) between a level and the dense mesh (module doc)."""
    to_dense = dense.closest(surface_samples(vertices, faces)).distances
    to_level = Surface(trimesh.Trimesh(vertices, faces, process=False)).closest(dense_samples).distances
    return float(max(to_dense.max(), to_level.max()))


# -- screen coverage ---------------------------------------------------------------------------------------


def screen_coverages(errors: list[float], triangles: list[int], diameter: float) -> list[float]:
    """Decreasing thresholds, one per level (module doc): show level k while coverage >= result[k]."""
    worst = np.maximum.accumulate(np.asarray(errors, np.float64))  # a coarser level is never "better"
    out, previous = [], 1.0
    for k in range(len(errors) - 1):
        step = min(math.sqrt(triangles[k + 1] / max(triangles[k], 1)), MAX_COVERAGE_STEP)
        density_cap = previous * step
        error_px_free = PIXEL_ERROR * diameter / (max(worst[k + 1], 1e-12) * REFERENCE_HEIGHT_PX)
        previous = min(density_cap, error_px_free)
        out.append(previous)
    return out + [0.0]
