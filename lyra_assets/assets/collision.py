"""Collision proxy: the fused surface decimated hard, to a couple of thousand triangles.

A room's collidable shape is its floors, walls and large furniture: big, nearly flat pieces that quadric
simplification keeps with few triangles while it drops everything small. meshoptimizer's quality
simplifier goes first; where the mesh's open borders (holes fusion left) stop it short of the budget, its
sloppy mode (vertex clustering, which ignores topology) takes over, since a collider needs the shape of
the walkable space, not a clean surface.
"""
from __future__ import annotations

import meshoptimizer
import numpy as np

from . import Collider
from .lod import compact, simplify

SLOPPY_WHEN_OVER = 1.5  # quality simplification ending above 1.5x the budget hands over to sloppy mode


def make_collider(vertices: np.ndarray, faces: np.ndarray, target_triangles: int = 2000) -> Collider:
    """A low-triangle mesh following the surface of `vertices`/`faces` (a welded mesh, OpenCV axes)."""
    vertices = np.ascontiguousarray(vertices, np.float32)
    kept = simplify(vertices, faces, target_triangles)
    if len(kept) > SLOPPY_WHEN_OVER * target_triangles:
        kept = _sloppy(vertices, kept, target_triangles)
    used, renumbered = compact(kept)
    return Collider(vertices[used], renumbered.astype(np.uint32))


def _sloppy(vertices: np.ndarray, faces: np.ndarray, target_triangles: int) -> np.ndarray:
    indices = np.ascontiguousarray(faces, np.uint32).ravel()
    destination = np.empty(len(indices), np.uint32)
    count = meshoptimizer.simplify_sloppy(destination, indices, vertices,
                                          target_index_count=3 * target_triangles, target_error=1.0)
    return destination[:count].reshape(-1, 3).astype(np.int64)
