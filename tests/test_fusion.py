"""TSDF fusion against exact RGB-D of a known scene (tests/scenes.py): geometry, colour, orientation, budget."""
from __future__ import annotations

import dataclasses

import numpy as np
import igl
import pytest
from scenes import BoxScene, OpenGroundScene, forward_path
from scipy.spatial import cKDTree

from lyra_assets.errors import LyraAssetsError
from lyra_assets.reconstruct import FusedScene, fuse
from lyra_assets.reconstruct.fusion import (BLOCK, SPAWN_GUARD_VOXELS, TRUNCATION_VOXELS, _band, _band_tiles,
                                            _padding, _scene_bounds, _tiles_shape, _untile, _Volume)
from lyra_assets.trajectory import CameraPath, pixel_rays, project, yaw_pose
from lyra_assets.walkthrough import Walkthrough

VOXEL = 0.02
# 320 px wide: a pixel spans at most ~1.3 cm on the walls, finer than the voxel, so the fused surface can
# be held to a tenth of a voxel. Sampling half a pixel off (pixel centres on integers) gives about 0.3.
SIZE = {"width": 320, "height": 192}


def surface_distance(scene: BoxScene, points: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest true surface (the room's walls or a block's faces)."""
    return np.minimum.reduce([_box_distance(points, scene.room_min, scene.room_max)]
                             + [_box_distance(points, lo, hi) for lo, hi in scene.blocks])


def _box_distance(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """|signed distance| from points to the surface of an axis-aligned box."""
    q = np.abs(points - (lo + hi) / 2) - (hi - lo) / 2
    return np.abs(np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0))


def depth_points(walk: Walkthrough, stride: int = 4) -> np.ndarray:
    """World points of every stride-th pixel's depth: the surfaces the cameras saw."""
    points = []
    for i in range(len(walk)):
        rays = pixel_rays(walk.path.K[i], walk.path.width, walk.path.height)[::stride, ::stride]
        cam = rays * walk.depth[i, ::stride, ::stride, None]
        points.append(cam.reshape(-1, 3) @ walk.path.c2w[i, :3, :3].T + walk.path.c2w[i, :3, 3])
    return np.concatenate(points)


def near_box(points: np.ndarray, lo: np.ndarray, hi: np.ndarray, tolerance: float) -> np.ndarray:
    return _box_distance(points, lo, hi) <= tolerance


@pytest.fixture(scope="module")
def scene() -> BoxScene:
    return BoxScene()


@pytest.fixture(scope="module")
def walk(scene: BoxScene) -> Walkthrough:
    return scene.render(forward_path(frames=15, **SIZE))


@pytest.fixture(scope="module")
def fused(walk: Walkthrough) -> FusedScene:
    return fuse(walk, voxel_size=VOXEL)


def test_fused_surface_lies_on_the_true_surface(scene, fused):
    error = surface_distance(scene, fused.mesh.vertices)
    assert error.mean() <= 0.1 * VOXEL


def test_no_fake_surfaces(scene, fused):
    vertices = fused.mesh.vertices
    error = surface_distance(scene, vertices)
    # Unobserved voxels would put a second surface a truncation distance behind every wall, and frustum
    # edges would put sheets in the air. What may remain are short lips where a grazing surface ends in
    # an occluding edge (the hidden side holds the band behind it): a few vertices, within the band.
    assert np.mean(error <= VOXEL) >= 0.995
    assert error.max() <= TRUNCATION_VOXELS * VOXEL
    # Frame 0's guard band (the spawn's view) may hold a wall's depth past a crease just outside its image:
    # a lip no wider than the band.
    margin = max(1.0, SPAWN_GUARD_VOXELS) * VOXEL
    outside_room = np.any((vertices < scene.room_min - margin) | (vertices > scene.room_max + margin), axis=1)
    assert not outside_room.any()
    for lo, hi in scene.blocks:
        inside_block = np.all((vertices > lo + VOXEL) & (vertices < hi - VOXEL), axis=1)
        assert not inside_block.any()


def test_covers_what_the_cameras_saw(walk, fused):
    gap, _ = cKDTree(fused.mesh.vertices).query(depth_points(walk))
    assert np.mean(gap <= VOXEL) >= 0.99


def test_surface_reaches_past_every_edge_of_the_first_view(walk, fused):
    # The first camera is the spawn: the rays through its outermost pixels must meet the surface where
    # frame 0's depth says. A marching cube needs all 8 corners observed, so without frame 0's guard band
    # the surface stops short of its image's edges, and the rays pass through to something behind.
    rays = pixel_rays(walk.path.K[0], walk.path.width, walk.path.height)
    depth = walk.depth[0]
    edge = [(0, slice(None)), (-1, slice(None)), (slice(None), 0), (slice(None), -1)]
    rays = np.concatenate([rays[e] for e in edge])[::3]
    depth = np.concatenate([depth[e] for e in edge])[::3]
    c2w = walk.path.c2w[0]
    vertices, faces = np.asarray(fused.mesh.vertices, np.float64), np.asarray(fused.mesh.faces, np.int64)
    hits = [igl.ray_mesh_intersect(c2w[:3, 3], c2w[:3, :3] @ ray, vertices, faces, True) for ray in rays]
    # Rays have z = 1, so the distance along one is the depth. libigl reports a miss as a meaningless hit.
    found = np.array([h[0][1] if h else np.inf for h in hits])
    assert np.mean(np.abs(found - depth) <= 2 * VOXEL) >= 0.98


def seen(walk: Walkthrough, points: np.ndarray) -> np.ndarray:
    """Points inside some frame's image (the spawn's guard band continues the surface past frame 0's)."""
    inside = np.zeros(len(points), bool)
    for K, w2c in zip(walk.path.K, walk.path.w2c):
        uv, z = project(K, w2c, points)
        inside |= (z > 0) & np.all((uv >= 0) & (uv < [walk.path.width, walk.path.height]), axis=1)
    return inside


def test_vertex_colours_match_the_scene(scene, walk, fused):
    mesh = fused.mesh
    assert mesh.visual.vertex_colors.dtype == np.uint8 and mesh.visual.vertex_colors.shape[1] == 4
    assert (mesh.visual.vertex_colors[:, 3] == 255).all()
    on_surface = (surface_distance(scene, mesh.vertices) <= VOXEL) & seen(walk, mesh.vertices)
    error = np.abs(mesh.visual.vertex_colors[on_surface, :3] / 255 - scene.colour(mesh.vertices[on_surface]))
    assert error.mean() <= 2 / 255
    assert np.percentile(error, 99) <= 8 / 255
    # Taking colour also from views that see the voxel far in front of their surface (the background
    # past a silhouette) puts about 14/255 here.
    assert np.percentile(error, 99.9) <= 10 / 255


def test_faces_point_towards_the_cameras(walk, fused):
    mesh = fused.mesh
    # A face the cameras saw has at least one camera on its front side.
    to_cameras = walk.path.centres[None, :, :] - mesh.triangles_center[:, None, :]
    facing = (np.einsum("fk,fck->fc", mesh.face_normals, to_cameras) > 0).any(axis=1)
    assert np.sum(mesh.area_faces[facing]) >= 0.99 * mesh.area


def test_unknown_depth_neither_adds_nor_carves(scene, walk, fused):
    # After the first 3 frames, the block's pixels become unknown (0). Treating 0 as "far" would carve
    # the block away with 12 views against 3.
    room_only = dataclasses.replace(scene, blocks=[]).render(walk.path)
    depth = walk.depth.copy()
    depth[3:][room_only.depth[3:] != walk.depth[3:]] = 0
    masked = fuse(dataclasses.replace(walk, depth=depth), voxel_size=VOXEL)
    (lo, hi), = scene.blocks
    front = np.array([lo, [hi[0], hi[1], lo[2]]])  # the face the first frames look at
    assert near_box(masked.mesh.vertices, *front, VOXEL / 2).sum() >= 0.9 * near_box(
        fused.mesh.vertices, *front, VOXEL / 2).sum()
    assert surface_distance(scene, masked.mesh.vertices).mean() <= 0.1 * VOXEL


def test_bad_input_is_an_error(walk):
    with pytest.raises(LyraAssetsError, match="no valid depth"):
        fuse(dataclasses.replace(walk, depth=np.zeros_like(walk.depth)))
    with pytest.raises(LyraAssetsError, match="positive"):
        fuse(walk, voxel_size=0.0)
    with pytest.raises(LyraAssetsError, match="too small"):
        fuse(walk, max_voxels=1000)


def test_floaters_are_carved_or_dropped_and_small_objects_kept():
    lamp = (np.array([-1.0, -0.5, 3.0]), np.array([-0.8, -0.3, 3.2]))  # a 20 cm cube hanging in the room
    scene = BoxScene(blocks=BoxScene().blocks + [lamp])
    path = forward_path(frames=15, **SIZE)
    # One more camera at the start, turned round to the back wall, which only it sees.
    c2w = np.concatenate([path.c2w, yaw_pose(np.pi, np.zeros(3))[None]])
    path = CameraPath(c2w, path.K[0], path.width, path.height)
    walk = scene.render(path)
    h, w = path.height // 2, path.width // 2
    walk.depth[7, h - 12:h + 12, w - 12:w + 12] = 1.0  # a blob the other frames see through: carved
    walk.depth[-1, h - 12:h + 12, w - 12:w + 12] = 0.6  # a blob only this frame sees: a small component
    vertices = fuse(walk, voxel_size=VOXEL).mesh.vertices

    seen_through = path.c2w[7, :3, :3] @ [0, 0, 1.0] + path.c2w[7, :3, 3]
    unseen = path.c2w[-1, :3, :3] @ [0, 0, 0.6] + path.c2w[-1, :3, 3]
    for blob in (seen_through, unseen):
        assert np.linalg.norm(vertices - blob, axis=1).min() > 0.15
    assert near_box(vertices, *lamp, VOXEL).sum() >= 200
    back_wall = np.array([scene.room_min, [scene.room_max[0], scene.room_max[1], scene.room_min[2]]])
    assert near_box(vertices, *back_wall, VOXEL).sum() >= 200


def test_explicit_voxel_size_is_honoured(walk, fused):
    coarse = fuse(walk, voxel_size=0.03)
    assert coarse.voxel_size == 0.03 and coarse.notes == []
    assert fused.voxel_size == VOXEL and fused.notes == []
    # Marching cubes' edges are a voxel long on flat walls.
    assert np.median(coarse.mesh.edges_unique_length) == pytest.approx(0.03, rel=0.1)
    assert np.median(fused.mesh.edges_unique_length) == pytest.approx(VOXEL, rel=0.1)


def test_too_fine_a_grid_is_coarsened_with_a_note(scene, walk):
    result = fuse(walk, voxel_size=0.005, max_voxels=2_000_000)
    assert result.voxel_size > 0.005
    assert len(result.notes) == 1 and "coarsened from 0.5 cm" in result.notes[0]
    extent = np.ptp(result.mesh.vertices, axis=0)
    assert np.prod(extent / result.voxel_size) <= 2_000_000
    assert surface_distance(scene, result.mesh.vertices).mean() <= 0.1 * result.voxel_size


def test_default_voxel_size_follows_the_scene(scene, walk):
    budget = 1_000_000  # the default sizing aims at min(DEFAULT_VOXELS, max_voxels): kept small for speed
    small = fuse(walk, max_voxels=budget)
    big_scene = BoxScene(room_min=2 * scene.room_min, room_max=2 * scene.room_max,
                         blocks=[(2 * lo, 2 * hi) for lo, hi in scene.blocks])
    big = fuse(big_scene.render(walk.path.scaled(2.0)), max_voxels=budget)
    assert small.notes == [] and big.notes == []
    assert big.voxel_size / small.voxel_size == pytest.approx(2.0, rel=0.05)


def test_progress_reports_every_frame(walk):
    calls = []
    fuse(walk, voxel_size=0.05, progress=lambda stage, done, total, message="": calls.append((stage, done, total)))
    assert calls == [("fuse", i, len(walk)) for i in range(len(walk) + 1)]


def test_no_observed_surface_is_a_project_error():
    # Negative distances only where no view observed (no cube with all 8 corners seen): no surface.
    from lyra_assets.reconstruct.fusion import _Volume

    volume = _Volume(np.zeros(3), 0.1, (2, 2, 2))
    volume.weight[:], volume.tsdf[:] = 1.0, 1.0
    volume.weight[0, 0, 0, 0, 0, 0], volume.tsdf[0, 0, 0, 0, 0, 0] = 0.0, -1.0
    with pytest.raises(LyraAssetsError, match="no surface"):
        volume.extract_mesh()


def test_ground_seen_edge_on_far_ahead_is_fused_whole():
    """Far ahead, ground is seen nearly edge-on: the pixel rows the band search samples lie metres apart
    there, and the ground between them must still be fused (it once came out in stripes with holes)."""
    scene = OpenGroundScene(blocks=[])
    path = forward_path(frames=3, distance=0.2, width=160, height=96, sway_deg=0.0)
    walk = scene.render(path)
    fused = fuse(walk)  # the grid spans the ground out to 60 m: voxels of about 0.6 m
    points = depth_points(walk, stride=1)[(walk.depth > 0).reshape(-1)]  # the sky has no depth
    distance = np.linalg.norm(points - path.c2w[0, :3, 3], axis=1)
    gap, _ = cKDTree(fused.mesh.vertices).query(points)
    for near, far in [(0, 25), (25, 40)]:  # at 25-40 m one pixel row spans 3-8 m of ground
        ring = (distance >= near) & (distance < far)
        assert np.mean(gap[ring] <= fused.voxel_size) >= 0.97, (near, far)



@pytest.mark.parametrize("frames", [1, 15])
def test_the_band_holds_the_blocks_every_frame_sees_near_its_surface(scene, frames):
    """Only the band's blocks are integrated. Integrating every block of the grid instead, the blocks where
    some frame finds its surface near a voxel (colour weight > 0: |TSDF| < 1) must nearly all be in the
    band. (The band is sampled at every BAND_STRIDE-th pixel: a sliver narrower than that between sampled
    pixels can slip through; the ball-shaped band this replaced missed 26 of 17,019 on the 15-frame walk.)"""
    walk = scene.render(forward_path(frames=frames, **SIZE))
    lo, hi = _scene_bounds(walk)
    volume = _Volume(lo - _padding(VOXEL), VOXEL, _tiles_shape(hi - lo, VOXEL))
    band = _band(walk, volume)
    volume.integrate_walk(walk, *_band_tiles(np.ones_like(band)))
    near = _untile(volume.colour_weight > 0)
    near = near.reshape(band.shape[0], BLOCK, band.shape[1], BLOCK, band.shape[2], BLOCK).any(axis=(1, 3, 5))
    assert np.count_nonzero(near & ~band) <= 2e-4 * np.count_nonzero(near)
    assert band.mean() < 0.5  # and it is a band, not the whole grid
