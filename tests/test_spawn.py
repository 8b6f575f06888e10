"""The floor under the spawn: the asset stage extends an observed floor that starts metres ahead of the first
camera back under it, and leaves a floor that already reaches there alone."""
from __future__ import annotations

import numpy as np
import trimesh
from scenes import forward_path

from lyra_assets.assets.spawn import PATCH_CELL_M, PATCH_DROP_M, floor_under_spawn

FLOOR_Y = 1.6  # OpenCV axes: 1.6 m below the first camera
TILE = (200, 120, 90)


def floor(z_from: float, z_to: float = 8.0, half_width: float = 2.0) -> trimesh.Trimesh:
    """A tiled floor facing up (-y), x in +-half_width, z from z_from to z_to, with a back wall."""
    plane = trimesh.creation.box(extents=[2 * half_width, 0.0, z_to - z_from])
    grid = trimesh.Trimesh(*trimesh.remesh.subdivide_to_size(plane.vertices, plane.faces, 0.1))
    up = grid.face_normals[:, 1] < -0.5
    grid.update_faces(up)
    grid.remove_unreferenced_vertices()
    grid.apply_translation([0.0, FLOOR_Y, (z_from + z_to) / 2])
    wall = trimesh.creation.box(extents=[2 * half_width, FLOOR_Y, 0.0])
    wall.apply_translation([0.0, FLOOR_Y / 2, z_to])
    mesh = trimesh.util.concatenate([grid, wall])
    mesh.visual.vertex_colors = np.tile([*TILE, 255], (len(mesh.vertices), 1)).astype(np.uint8)
    return mesh


def test_floor_starting_ahead_is_extended_under_the_spawn():
    dense = floor(z_from=3.0)
    merged, spawn = floor_under_spawn(dense, forward_path())
    assert np.allclose(spawn.ground, [0.0, FLOOR_Y, 0.0], atol=1e-6)
    assert spawn.yfov_deg > 0 and spawn.patched_m2 > 3.0
    patch = merged.faces[len(dense.faces):]
    corners = merged.vertices[patch]
    # Flat, facing up, a centimetre under the observed floor, and right under the camera.
    assert np.allclose(corners[..., 1], FLOOR_Y + PATCH_DROP_M)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    assert np.all(normals[:, 1] < 0)
    under = (np.abs(corners[..., 0]).max(axis=1) < PATCH_CELL_M) & (np.abs(corners[..., 2]).max(axis=1) < PATCH_CELL_M)
    assert under.any()
    # It reaches the observed floor (one cell under it, so no crack) and no further.
    assert corners[..., 2].max() <= 3.0 + 2 * PATCH_CELL_M
    assert corners[..., 2].max() >= 3.0
    # Coloured like the floor, for texels no frame sees.
    assert np.all(merged.visual.vertex_colors[len(dense.vertices):, :3] == TILE)


def test_floor_already_under_the_spawn_is_left_alone():
    dense = floor(z_from=-1.5)
    merged, spawn = floor_under_spawn(dense, forward_path())
    assert merged is dense and spawn.patched_m2 == 0.0
    assert np.allclose(spawn.ground, [0.0, FLOOR_Y, 0.0], atol=1e-6)


def test_no_floor_no_patch():
    wall = floor(z_from=3.0)
    wall.apply_translation([0.0, -5.0, 0.0])  # everything above the camera: nothing to stand on
    merged, spawn = floor_under_spawn(wall, forward_path())
    assert merged is wall and spawn.ground is None
