"""The spawn: the first camera, with floor (and so collision) under it.

A walkthrough starts at the first camera, and no frame of a walk away from it looks down at the floor it
stands on: the fused floor begins where the first view meets it, metres ahead. A level needs ground under
its spawn, so the asset stage extends the floor back under it, whatever generator made the walkthrough:

1. The floor is the fused mesh's upward-facing surface below the camera (world +y is down: every
   generator's world is the upright first camera's OpenCV frame); its height is the area-weighted median
   of those faces' heights near the spawn.
2. A grid of PATCH_CELL_M cells on that plane covers the convex hull of the observed floor near the spawn
   and a disc around the spawn. Cells the observed floor already covers are left to it, except a ring one
   cell wide along its border, so there is no crack where the two meet.
3. The patch sits PATCH_DROP_M below the floor: where it runs under the observed floor, the observed
   floor is drawn (no z-fighting); where it doesn't, the step is too small to see or to trip over.
   Its vertices take the median colour of the observed floor near the spawn, which is what the albedo
   bake falls back to where no frame sees the patch.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.ndimage
import scipy.spatial
import trimesh

from ..trajectory import CameraPath
from . import Spawn

PATCH_CELL_M = 0.05
PATCH_DROP_M = 0.01
UP_COSINE = 0.9  # faces within ~25 degrees of horizontal, facing up, are floor
MIN_DROP_M = 0.3  # floor is at least this far below the camera
FLOOR_BAND_M = 0.1  # faces this close to the floor height belong to it
SPAWN_RADIUS_M = 1.0  # the patch reaches at least this far around the spawn
NEAR_FLOOR_M = 2.0  # the observed floor within this distance of its nearest point shapes the patch
COLOUR_RADIUS_M = 1.0  # the patch's colour: the observed floor within this of its nearest point


def floor_under_spawn(dense: trimesh.Trimesh, path: CameraPath) -> tuple[trimesh.Trimesh, Spawn]:
    """`dense` with a floor patch under the path's first camera (as much as is missing), and that spawn."""
    c2w = np.asarray(path.c2w[0], np.float64)
    yfov = math.degrees(2 * math.atan(path.height / 2 / path.K[0, 1, 1]))
    eye = c2w[:3, 3]
    centroids = dense.triangles_center
    up = -dense.face_normals[:, 1] > UP_COSINE  # OpenCV: y is down, so up is -y
    floor = up & (centroids[:, 1] > eye[1] + MIN_DROP_M)
    if not floor.any():  # nothing to stand on anywhere (a floating scene): the spawn has no ground
        return dense, Spawn(c2w, None, yfov)
    plan = centroids[:, [0, 2]] - eye[[0, 2]]  # plan view (x, z) around the spawn
    distance = np.linalg.norm(plan, axis=1)
    nearest = distance[floor].min()
    near = floor & (distance < nearest + NEAR_FLOOR_M)
    height = _weighted_median(centroids[near, 1], dense.area_faces[near])
    on_floor = floor & (np.abs(centroids[:, 1] - height) < FLOOR_BAND_M)

    # Where the observed floor is: its triangles' corners, edge midpoints and centres, in plan view.
    corners = dense.vertices[dense.faces[on_floor]][:, :, [0, 2]] - eye[[0, 2]]
    samples = np.concatenate([corners, (corners + np.roll(corners, 1, axis=1)) / 2,
                              corners.mean(axis=1, keepdims=True)], axis=1).reshape(-1, 2)
    cells = _patch_cells(plan[on_floor & (distance < nearest + NEAR_FLOOR_M)], samples)
    ground = eye.copy()
    ground[1] = height
    if cells is None:  # the observed floor already reaches under the spawn
        return dense, Spawn(c2w, ground, yfov)
    origin, covered = cells
    # (measured from the floor at the floor's height: the nearest floor face may be a step off it)
    colour_from = on_floor & (distance < distance[on_floor].min() + COLOUR_RADIUS_M)
    colour = np.median(_face_colours(dense)[colour_from], axis=0)
    patch = _grid_mesh(covered, origin + eye[[0, 2]], height + PATCH_DROP_M, colour)
    merged = trimesh.Trimesh(
        np.vstack([dense.vertices, patch.vertices]),
        np.vstack([dense.faces, patch.faces + len(dense.vertices)]),
        vertex_colors=np.vstack([dense.visual.vertex_colors, patch.visual.vertex_colors]), process=False)
    return merged, Spawn(c2w, ground, yfov, float(covered.sum() * PATCH_CELL_M**2))


def _patch_cells(near_floor: np.ndarray, all_floor: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(grid origin, cells to patch) in plan coordinates around the spawn, or None when none are needed."""
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    disc = SPAWN_RADIUS_M * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    hull_points = np.vstack([near_floor, disc])
    hull = scipy.spatial.Delaunay(hull_points[scipy.spatial.ConvexHull(hull_points).vertices])
    lo, hi = hull_points.min(axis=0), hull_points.max(axis=0)
    shape = np.ceil((hi - lo) / PATCH_CELL_M).astype(int) + 1
    ix, iz = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = lo + (np.stack([ix, iz], axis=-1) + 0.5) * PATCH_CELL_M
    inside = hull.find_simplex(centres.reshape(-1, 2)).reshape(shape) >= 0
    observed = np.zeros(shape, bool)
    index = np.floor((all_floor - lo) / PATCH_CELL_M).astype(int)
    keep = np.all((index >= 0) & (index < shape), axis=1)
    observed[index[keep, 0], index[keep, 1]] = True
    observed = scipy.ndimage.binary_closing(observed, border_value=1)  # cells between samples of a big triangle
    missing = inside & ~observed
    spawn_cell = tuple(np.floor(-lo / PATCH_CELL_M).astype(int))
    if not missing[spawn_cell]:
        return None
    # One cell more into the observed floor, so the two overlap instead of leaving a crack.
    return lo, inside & scipy.ndimage.binary_dilation(missing)


def _grid_mesh(cells: np.ndarray, origin: np.ndarray, y: float, colour: np.ndarray) -> trimesh.Trimesh:
    """Two triangles per set cell of a plan grid at height y, facing up, sharing the grid's corners."""
    i, k = np.nonzero(cells)
    corner_id = np.full((cells.shape[0] + 1, cells.shape[1] + 1), -1)
    corners = np.unique(np.concatenate([np.stack([i + a, k + b], axis=1) for a in (0, 1) for b in (0, 1)]),
                        axis=0)
    corner_id[corners[:, 0], corners[:, 1]] = np.arange(len(corners))
    a, b = corner_id[i, k], corner_id[i + 1, k]
    c, d = corner_id[i + 1, k + 1], corner_id[i, k + 1]
    # (b - a) x (c - a) = +x cross (+x +z) points to -y: up, in OpenCV's y-down axes.
    faces = np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])
    xz = origin + corners * PATCH_CELL_M
    vertices = np.stack([xz[:, 0], np.full(len(xz), y), xz[:, 1]], axis=1)
    rgba = np.tile(np.append(np.clip(colour, 0, 255), 255).astype(np.uint8), (len(vertices), 1))
    return trimesh.Trimesh(vertices, faces, vertex_colors=rgba, process=False)


def _face_colours(mesh: trimesh.Trimesh) -> np.ndarray:
    return np.asarray(mesh.visual.vertex_colors, np.float64)[mesh.faces, :3].mean(axis=1)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
