"""Baking: closest points on the dense mesh, texel rasterisation, normal maps, albedo from frames, gutters.

Scenes with known answers: a bumpy wall under a flat quad (normals known in closed form), two cameras
over a plane with frames of known colour (the weighted mean in linear light known in closed form), and
the textured BoxScene room rendered along a walk (colour known at every surface point).
"""
from __future__ import annotations

import igl
import numpy as np
import pytest
import trimesh
from scenes import BoxScene, forward_path

from lyra_assets.assets.bake import (
    TexelLayout,
    _rasterise,
    bake_albedo,
    bake_level,
    bake_normal_map,
    fill_gutter,
    texels,
)
from lyra_assets.assets.colour import linear_to_srgb, srgb_to_linear
from lyra_assets.assets.surface import Surface, vertex_normals
from lyra_assets.assets.uv import tangents, unwrap
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov
from lyra_assets.walkthrough import Walkthrough

AMPLITUDE, WAVELENGTH, WALL_Z = 0.02, 0.25, 2.0


def _grid_wall(n: int, height=lambda x, y: 0.0 * x) -> trimesh.Trimesh:
    """A 1 x 1 m wall at z = WALL_Z (+ height), x, y in [-0.5, 0.5], facing -z (towards the origin)."""
    x, y = np.meshgrid(np.linspace(-0.5, 0.5, n + 1), np.linspace(-0.5, 0.5, n + 1))
    vertices = np.column_stack([x.ravel(), y.ravel(), WALL_Z + height(x, y).ravel()])
    i = np.arange(n)[:, None] * (n + 1) + np.arange(n)[None, :]
    a, b, c, d = i.ravel(), i.ravel() + 1, i.ravel() + n + 1, i.ravel() + n + 2
    faces = np.concatenate([np.column_stack([a, d, b]), np.column_stack([a, c, d])])
    return trimesh.Trimesh(vertices, faces, process=False)


def _bump(x, y):
    return AMPLITUDE * np.sin(2 * np.pi * x / WAVELENGTH)


def _wall_uv(vertices: np.ndarray) -> np.ndarray:
    """Planar UVs: u grows with x; v with y (y points down, so the image is upright on the wall)."""
    return (vertices[:, :2] + 0.5).astype(np.float64)


def _flat_level(n: int = 4):
    wall = _grid_wall(n)
    v, f = np.asarray(wall.vertices), np.asarray(wall.faces)
    uv = _wall_uv(v)
    normals = vertex_normals(v, f)
    return v, f, normals, tangents(v, f, normals, uv), uv


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


# -- colour and rasterisation ------------------------------------------------------------------------------


def test_srgb_round_trip_and_known_values():
    x = np.linspace(0, 1, 101)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert srgb_to_linear(0.5) == pytest.approx(0.2140, abs=1e-4)


def test_rasterise_covers_exactly_the_texel_centres_inside_each_triangle():
    uv_px = np.array([[1.2, 0.7], [7.9, 2.1], [3.3, 6.8]])
    face_map = _rasterise(uv_px, np.array([[0, 1, 2]]), 8)
    x, y = np.meshgrid(np.arange(8) + 0.5, np.arange(8) + 0.5)
    sides = [(uv_px[(k + 1) % 3, 0] - uv_px[k, 0]) * (y - uv_px[k, 1])
             - (uv_px[(k + 1) % 3, 1] - uv_px[k, 1]) * (x - uv_px[k, 0]) for k in range(3)]
    inside = np.all(np.stack(sides) >= 0, axis=0) | np.all(np.stack(sides) <= 0, axis=0)
    assert np.array_equal(face_map == 0, inside)
    # A triangle lying in the plane z = 0 as it lies in UV space: each texel's point is its centre.
    vertices = np.column_stack([uv_px, np.zeros(3)])
    frames = np.tile([[0.0, 0.0, 1.0]], (3, 1)), np.tile([[1.0, 0.0, 0.0, 1.0]], (3, 1))
    tex = texels(vertices, np.array([[0, 1, 2]]), *frames, uv_px / 8, 8)
    assert np.array_equal(np.sort(tex.index), np.flatnonzero(inside))
    np.testing.assert_allclose(tex.points[:, :2], np.column_stack([x.ravel()[tex.index], y.ravel()[tex.index]]),
                               atol=1e-9)


def test_gutter_takes_the_nearest_covered_value():
    rng = np.random.default_rng(1)
    covered = np.zeros((32, 32), bool)
    covered[5:12, 4:9] = True
    covered[20:30, 18:27] = True
    image = np.where(covered[..., None], rng.integers(0, 255, (32, 32, 3)), 0).astype(np.uint8)
    filled = fill_gutter(image.copy(), covered)
    assert np.array_equal(filled[covered], image[covered])
    rows, cols = np.nonzero(covered)
    for r, c in [(0, 0), (15, 15), (31, 31), (12, 12), (5, 10)]:
        d = (rows - r) ** 2 + (cols - c) ** 2
        nearest = d == d.min()  # ties: any nearest texel will do
        assert any(np.array_equal(filled[r, c], image[rr, cc]) for rr, cc in zip(rows[nearest], cols[nearest]))


# -- the dense surface --------------------------------------------------------------------------------------


def test_closest_points_match_an_exact_aabb_tree_near_and_far():
    wall = _grid_wall(60, _bump)
    surface = Surface(wall)
    rng = np.random.default_rng(0)
    near = np.column_stack([rng.uniform(-0.6, 0.6, (4000, 2)), WALL_Z + rng.normal(0, 0.03, 4000)])
    far = near[:200] + [0.0, 0.0, -1.5]  # beyond the grid's search: the AABB tree answers those
    points = np.vstack([near, far])
    hit = surface.closest(points)
    exact, _, closest = igl.point_mesh_squared_distance(points, surface.vertices, surface.faces)
    np.testing.assert_allclose(hit.distances, np.sqrt(exact), atol=1e-9)
    np.testing.assert_allclose(hit.points, closest, atol=1e-6)
    # The interpolated normal tilts with the bump: (h'(x), 0, -1) normalised, facing the cameras.
    slope = AMPLITUDE * 2 * np.pi / WAVELENGTH * np.cos(2 * np.pi * hit.points[:, 0] / WAVELENGTH)
    truth = np.column_stack([slope, np.zeros_like(slope), -np.ones_like(slope)])
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    inner = np.all(np.abs(hit.points[:, :2]) < 0.49, axis=1)
    assert np.degrees(np.arccos(np.clip(np.sum(hit.normals[inner] * truth[inner], 1), -1, 1))).max() < 3.0


# -- normal map ---------------------------------------------------------------------------------------------


def test_normal_map_of_a_bumpy_wall_on_a_flat_quad_decodes_to_the_bump_normals():
    surface = Surface(_grid_wall(100, _bump))
    v, f, normals, frame, uv = _flat_level()
    tex = texels(v, f, normals, frame, uv, 128)
    image = bake_normal_map(tex, surface.closest(tex.points))
    # Decode as a glTF shader does, with the flat quad's frame: T = +x (u), B = -y (image up), N = -z.
    rgb = image.reshape(-1, 3)[tex.index].astype(float) / 255.0 * 2.0 - 1.0
    decoded = rgb[:, :1] * [1, 0, 0] + rgb[:, 1:2] * [0, -1, 0] + rgb[:, 2:] * [0, 0, -1]
    decoded /= np.linalg.norm(decoded, axis=1, keepdims=True)
    x = tex.points[:, 0]
    slope = AMPLITUDE * 2 * np.pi / WAVELENGTH * np.cos(2 * np.pi * x / WAVELENGTH)
    truth = np.column_stack([slope, np.zeros_like(x), -np.ones_like(x)])
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip(np.sum(decoded * truth, axis=1), -1, 1)))
    assert np.degrees(np.arctan(slope.max())) > 25  # the bumps are steep enough to matter
    assert np.median(angle) < 1.5 and angle.max() < 4.0
    assert (image.reshape(-1, 3).min(axis=1) > 0).all()  # gutter filled: no black texels left


# -- albedo ------------------------------------------------------------------------------------------------


def _two_camera_walk(colours: list[int], observed: list[bool]) -> Walkthrough:
    """Two cameras 0.3 m either side of the origin, looking along +z at the flat wall; each frame one
    uniform sRGB grey level; depth exact."""
    width, height = 96, 96
    K = intrinsics_from_fov(90.0, width, height)
    c2w = np.repeat(np.eye(4)[None], 2, axis=0)
    c2w[0, 0, 3], c2w[1, 0, 3] = -0.3, 0.3
    path = CameraPath(c2w, K, width, height)
    frames = np.stack([np.full((height, width, 3), c, np.uint8) for c in colours])
    depth = np.full((2, height, width), WALL_Z, np.float32)
    seen = np.stack([np.full((height, width), o) for o in observed])
    return Walkthrough(frames, depth, seen, path, frames[0])


def test_albedo_averages_in_linear_light_and_discounts_synthesised_pixels():
    wall = _grid_wall(20)
    wall.visual.vertex_colors = np.full((len(wall.vertices), 4), 7, np.uint8)
    surface = Surface(wall)
    v, f, normals, frame, uv = _flat_level()
    tex = texels(v, f, normals, frame, uv, 32)
    hit = surface.closest(tex.points)
    inside = np.all(np.abs(tex.points[:, :2]) < 0.4, axis=1)  # well inside both views

    both = bake_albedo(tex, hit, _two_camera_walk([255, 0], [True, True]))
    # Weights cos^2 / z^2 per camera; white and black average to their weighted mean in linear light.
    centres = np.array([[-0.3, 0, 0], [0.3, 0, 0]])
    cos = np.stack([(WALL_Z - 0) / np.linalg.norm(c - hit.points, axis=1) for c in centres])
    w = cos ** 2 / WALL_Z ** 2
    expected = linear_to_srgb(w[0] / w.sum(0)) * 255
    got = both.image.reshape(-1, 3)[tex.index, 0].astype(float)
    np.testing.assert_allclose(got[inside], expected[inside], atol=1.0)
    assert got[inside].mean() > 170  # a mean of sRGB codes would be about 128
    assert both.observed.reshape(-1)[tex.index].all()

    synthesised = bake_albedo(tex, hit, _two_camera_walk([255, 0], [True, False]))
    w_syn = w * np.array([[1.0], [0.1]])
    expected = linear_to_srgb(w_syn[0] / w_syn.sum(0)) * 255
    got = synthesised.image.reshape(-1, 3)[tex.index, 0].astype(float)
    np.testing.assert_allclose(got[inside], expected[inside], atol=1.0)


def test_albedo_falls_back_to_vertex_colours_where_no_frame_sees():
    wall = _grid_wall(20)
    wall.visual.vertex_colors = np.tile([[200, 100, 50, 255]], (len(wall.vertices), 1)).astype(np.uint8)
    surface = Surface(wall)
    v, f, normals, frame, uv = _flat_level()
    tex = texels(v, f, normals, frame, uv, 32)
    walk = _two_camera_walk([255, 255], [True, True])
    walk.depth[:] = 0.0  # unknown depth everywhere: no frame vouches for any point
    bake = bake_albedo(tex, surface.closest(tex.points), walk)
    assert not bake.seen.any()
    assert np.abs(bake.image.reshape(-1, 3).astype(int) - [200, 100, 50]).max() <= 1


def test_albedo_of_the_box_room_matches_the_true_colours():
    scene = BoxScene()
    walk = scene.render(forward_path(9))
    v, f = trimesh.remesh.subdivide_to_size(scene.mesh().vertices, scene.mesh().faces, 0.1)
    dense = trimesh.Trimesh(v, f, process=True)
    rgb = np.clip(scene.colour(dense.vertices) * 255 + 0.5, 0, 255)
    dense.visual.vertex_colors = np.column_stack([rgb, np.full(len(rgb), 255)]).astype(np.uint8)
    surface = Surface(dense)
    coarse = scene.mesh()
    atlas = unwrap(coarse.vertices, coarse.faces, size=512, padding=2)
    normals = vertex_normals(atlas.vertices, atlas.faces)
    frame = tangents(atlas.vertices, atlas.faces, normals, atlas.uv)
    tex = texels(atlas.vertices, atlas.faces, normals, frame, atlas.uv, 512)
    hit = surface.closest(tex.points)
    bake = bake_albedo(tex, hit, walk)
    # The level bake goes chunk by chunk: small chunks, one whole-atlas chunk and the all-at-once bake agree.
    layout = TexelLayout(atlas.vertices, atlas.faces, normals, frame, atlas.uv, 512)
    reports = []
    tiled = bake_level(layout, surface, walk, lambda *r: reports.append(r), chunk_texels=3000)
    whole = bake_level(layout, surface, walk, chunk_texels=len(layout) + 512)
    assert len(reports) > 10 and reports[-1] == (len(layout), len(layout))
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)  # in order, though threads bake

    class Failing:  # the third chunk's closest-point query fails
        calls = 0

        def closest(self, points):
            Failing.calls += 1
            if Failing.calls == 3:
                raise RuntimeError("chunk 3")
            return surface.closest(points)

    with pytest.raises(RuntimeError, match="chunk 3"):
        bake_level(layout, Failing(), walk, chunk_texels=3000)
    assert Failing.calls < len(reports) // 2  # the error ended the bake: the chunks not started were dropped
    for baked in (tiled, whole):
        assert np.array_equal(baked.albedo.image, bake.image) and np.array_equal(baked.albedo.seen, bake.seen)
        assert np.array_equal(baked.normal_map, bake_normal_map(tex, hit))
    observed = bake.observed.reshape(-1)[tex.index]
    assert observed.mean() > 0.3  # the walk sees a good part of the room
    truth = scene.colour(hit.points)
    got = bake.image.reshape(-1, 3)[tex.index] / 255.0
    assert _psnr(got[observed], truth[observed]) >= 35.0
    # Where no frame looks (behind the start), the vertex colours stand in: coarser, still the room's.
    assert _psnr(got[~bake.seen.reshape(-1)[tex.index]], truth[~bake.seen.reshape(-1)[tex.index]]) >= 25.0
