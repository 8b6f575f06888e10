"""Collision proxy: a couple of thousand triangles that keep the room's floor and walls where they are."""
from __future__ import annotations

import igl
import numpy as np
import pytest
import scipy.spatial
import trimesh
from scenes import BoxScene

from lyra_assets.assets.collision import flip_flat_edges, make_collider, ray_distance, spawn_clearance
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


def _fan_on_ellipse(lift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A floor polygon (plan points on an ellipse, at y = `lift` times their squared distance from the centre)
    triangulated as a fan of long thin triangles from its first point, as simplification leaves a flat floor;
    and its plan points."""
    angles = (np.arange(24) + np.random.default_rng(3).uniform(-0.3, 0.3, 24)) * 2 * np.pi / 24
    plan = np.column_stack([2.0 * np.cos(angles), np.sin(angles)])
    vertices = np.column_stack([plan[:, 0], lift * (plan ** 2).sum(axis=1), plan[:, 1]])
    fan = np.array([[0, i, i + 1] for i in range(1, len(plan) - 1)])  # facing up: -y in OpenCV axes
    return vertices, fan, plan


def _up_facing(vertices: np.ndarray, faces: np.ndarray) -> bool:
    v = vertices[faces]
    return bool((np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 1] < 0).all())


def test_a_flat_fan_is_flipped_into_its_delaunay_triangulation():
    vertices, fan, plan = _fan_on_ellipse(lift=0.0)
    assert _up_facing(vertices, fan)
    flipped = flip_flat_edges(vertices, fan)
    delaunay = scipy.spatial.Delaunay(plan).simplices  # unique: no four of the points share a circle
    assert {tuple(sorted(t)) for t in flipped} == {tuple(sorted(t)) for t in delaunay}
    assert _up_facing(vertices, flipped)
    # The thinnest triangle's smallest angle grows (the fan's slivers are gone).
    assert _smallest_angle(vertices, flipped) > 3 * _smallest_angle(vertices, fan)


def test_triangles_that_are_not_flat_are_not_flipped():
    vertices, fan, _ = _fan_on_ellipse(lift=0.1)  # a bowl: 10 cm deep at 1 m from its centre, 40 cm at 2 m
    assert np.array_equal(flip_flat_edges(vertices, fan), fan)


def _smallest_angle(vertices: np.ndarray, faces: np.ndarray) -> float:
    v = np.asarray(vertices, np.float64)[faces]
    angles = []
    for i in range(3):
        u, w = v[:, (i + 1) % 3] - v[:, i], v[:, (i + 2) % 3] - v[:, i]
        angles.append(np.arccos(np.clip(np.einsum("ij,ij->i", u, w)
                                        / np.linalg.norm(u, axis=1) / np.linalg.norm(w, axis=1), -1, 1)))
    return float(np.min(angles))
