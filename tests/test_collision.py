"""Collision proxy: a couple of thousand triangles that keep the room's floor and walls where they are."""
from __future__ import annotations

import igl
import numpy as np
import pytest
import trimesh
from scenes import BoxScene

from lyra_assets.assets.collision import make_collider, ray_distance, spawn_clearance
from lyra_assets.assets.lod import surface_samples


def _fine_room(edge: float) -> trimesh.Trimesh:
    scene = BoxScene()
    v, f = trimesh.remesh.subdivide_to_size(scene.mesh().vertices, scene.mesh().faces, edge)
    return trimesh.Trimesh(v, f, process=True)


def _distances(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    squared, _, _ = igl.point_mesh_squared_distance(points, np.asarray(vertices, np.float64),
                                                    np.asarray(faces, np.int64))
    return np.sqrt(squared)


def test_collider_keeps_floor_and_walls_with_few_triangles():
    room = _fine_room(0.1)
    collider = make_collider(room.vertices, room.faces, target_triangles=500)
    assert len(collider.faces) <= 500
    assert collider.faces.dtype == np.uint32 and collider.faces.max() < len(collider.vertices)
    truth = BoxScene().mesh()
    # Both ways: the collider lies on the true surfaces, and every true surface is covered.
    assert _distances(surface_samples(collider.vertices, collider.faces), truth.vertices, truth.faces).max() < 0.01
    assert _distances(surface_samples(truth.vertices, truth.faces), collider.vertices, collider.faces).max() < 0.01
    # Standing on the floor: points on the floor plane are on the collider.
    scene = BoxScene()
    rng = np.random.default_rng(0)
    floor = np.column_stack([rng.uniform(-1.9, 1.9, 500), np.full(500, scene.room_max[1]), rng.uniform(-1.4, 5.9, 500)])
    assert _distances(floor, collider.vertices, collider.faces).max() < 0.01


def test_collider_meets_its_budget_on_a_mesh_full_of_holes():
    # Fusion leaves holes; their borders stop quality simplification early, and sloppy mode takes over.
    room = _fine_room(0.05)
    rng = np.random.default_rng(1)
    holey = room.faces[rng.random(len(room.faces)) > 0.05]
    collider = make_collider(room.vertices, holey, target_triangles=300)
    assert len(collider.faces) <= 1.5 * 300
    truth = BoxScene().mesh()
    # Coarser, but still the room: nearly all of the true surface lies on the collider.
    assert np.percentile(_distances(surface_samples(truth.vertices, truth.faces), collider.vertices,
                                    collider.faces), 95) < 0.05


def test_the_notes_count_cameras_with_no_floor_under_them():
    """A forward walk never sees the floor under its first camera. The collider adds no invisible floor of
    its own (the asset stage lays a visible floor under the spawn before this); its notes count the cameras
    a ray down from which meets nothing, and its shape is the same with or without cameras."""
    room = _fine_room(0.25)
    centres = room.triangles_center
    unseen = (np.abs(centres[:, 1] - BoxScene().room_max[1]) < 1e-6) & (centres[:, 2] < 2.0)
    faces = room.faces[~unseen]
    cameras = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 4.0]])  # the last one is over seen floor
    collider = make_collider(room.vertices, faces, target_triangles=2000, cameras=cameras)
    assert collider.notes == {"cameras_without_floor": 2}
    assert ray_distance(collider.vertices, collider.faces, cameras[0], [0, 1, 0]) is None
    distance, _ = ray_distance(collider.vertices, collider.faces, cameras[2], [0, 1, 0])
    assert distance == pytest.approx(1.6, abs=1e-4)
    assert np.array_equal(collider.faces, make_collider(room.vertices, faces, target_triangles=2000).faces)
    whole = make_collider(room.vertices, room.faces, target_triangles=2000, cameras=cameras)
    assert whole.notes == {"cameras_without_floor": 0}
    clearance = spawn_clearance(whole)
    assert clearance == {"floor_distance_m": pytest.approx(1.6), "floor_slope_deg": 0.0,
                         "ceiling_distance_m": pytest.approx(1.2), "ceiling_from": "ray",
                         "free_height_m": pytest.approx(2.8)}
