"""The LOD chain: simplification, measured error, screen coverage, and the whole asset stage on BoxScene.

The "dense" mesh stands in for fusion's output: BoxScene's true surfaces finely subdivided, coloured with
the scene's true colours; the walkthrough is the scene rendered exactly (tests/scenes.py).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError
import trimesh
from scenes import BoxScene, forward_path, sample_bilinear

from lyra_assets.assets.level import make_level_asset
from lyra_assets.assets.surface import Surface
from lyra_assets.settings import AssetSettings
from lyra_assets.assets.lod import compact, geometric_error, screen_coverages, simplify, surface_samples, welded
from lyra_assets.assets.uv import _chart_ids, unwrap

SETTINGS = AssetSettings(lod0_triangles=6000, texture_size=512, padding=4, collider_triangles=300)


def dense_room(scene: BoxScene, edge: float = 0.08) -> trimesh.Trimesh:
    """The scene's surfaces as fusion would see them: finely subdivided, without the blocks' bottoms
    (which lie on the floor, facing into it, where no camera can see)."""
    truth = scene.mesh()
    hidden = (truth.face_normals[:, 1] > 0.5) & np.isclose(truth.triangles_center[:, 1], scene.room_max[1])
    v, f = trimesh.remesh.subdivide_to_size(truth.vertices, truth.faces[~hidden], edge)
    mesh = trimesh.Trimesh(v, f, process=True)
    rgb = np.clip(scene.colour(mesh.vertices) * 255 + 0.5, 0, 255)
    mesh.visual.vertex_colors = np.column_stack([rgb, np.full(len(rgb), 255)]).astype(np.uint8)
    return mesh


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def _texel_centres(lod, size: int, samples: int = 20_000):
    """Texel centres inside the level's triangles, found from random surface points: (face, barycentrics
    of the texel centre in that face, texel (col, row)). Independent of the baker's own rasteriser."""
    rng = np.random.default_rng(7)
    face = rng.integers(0, len(lod.faces), samples)
    t = lod.uv[lod.faces[face]].astype(float) * size
    w = rng.dirichlet(np.ones(3), samples)
    texel = np.clip(np.floor(np.einsum("pk,pkd->pd", w, t)).astype(int), 0, size - 1)
    centre = texel + 0.5
    e1, e2, d = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0], centre - t[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    face, t, d, e1, e2, det, texel = (x[det != 0] for x in (face, t, d, e1, e2, det, texel))  # no slivers
    b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det
    b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
    bary = np.column_stack([1 - b1 - b2, b1, b2])
    inside = (bary >= 0).all(axis=1)
    return face[inside], bary[inside], texel[inside]


def _uv_at(vertices, faces, uv, points):
    """UV of the closest surface point of a level to each point."""
    import igl

    _, face, closest = igl.point_mesh_squared_distance(points, vertices.astype(np.float64), faces.astype(np.int64))
    tri = vertices[faces[face]].astype(np.float64)
    bary = igl.barycentric_coordinates(closest, tri[:, 0].copy(), tri[:, 1].copy(), tri[:, 2].copy())
    return np.einsum("pk,pkd->pd", bary, uv[faces[face]].astype(np.float64))


@pytest.fixture(scope="module")
def scene() -> BoxScene:
    return BoxScene()


@pytest.fixture(scope="module")
def dense(scene):
    return dense_room(scene)


@pytest.fixture(scope="module")
def asset_and_progress(scene, dense):
    walk = scene.render(forward_path(9))
    calls = []
    asset = make_level_asset("room", dense, walk, SETTINGS, progress=lambda *a: calls.append(a))
    return asset, calls


# -- simplification ----------------------------------------------------------------------------------------


def test_simplify_meets_the_budget_with_a_subset_of_the_vertices(dense):
    vertices, faces = welded(dense.vertices, dense.faces)
    kept = simplify(vertices, faces, 2000)
    assert 1800 <= len(kept) <= 2000
    used, local = compact(kept)
    assert np.array_equal(used[local], kept)
    assert np.isin(kept, np.arange(len(vertices))).all()


def test_simplify_keeps_uv_charts_intact(dense):
    vertices, faces = welded(dense.vertices, dense.faces)
    kept, local = compact(simplify(vertices, faces, 4000))
    atlas = unwrap(vertices[kept], local, size=512, padding=2)
    coarse = simplify(atlas.vertices, atlas.faces, 1000)
    assert len(coarse) <= 1100
    charts = _chart_ids(atlas.faces.astype(np.int64), len(atlas.vertices))
    # Every triangle still lies in one chart: its UVs come from one piece of the layout.
    assert (charts[coarse] == charts[coarse[:, :1]]).all()


# -- error -------------------------------------------------------------------------------------------------


def test_error_measures_a_moved_wall(scene, dense):
    surface = Surface(dense)
    samples = surface_samples(surface.vertices, surface.faces)
    moved = scene.mesh().copy()
    assert geometric_error(moved.vertices, moved.faces, surface, samples) < 1e-9
    shifted = moved.vertices.copy()
    shifted[np.isclose(shifted[:, 2], scene.room_max[2]), 2] -= 0.05  # the far wall 5 cm nearer
    assert geometric_error(shifted, moved.faces, surface, samples) == pytest.approx(0.05, abs=1e-6)


def test_error_sees_a_feature_the_level_lost():
    # Dense: a 1 m floor with a 0.3 m spike; level: the floor alone. The level lies on the dense surface
    # everywhere (one-sided distance 0), but the spike's tip is 0.3 m from the level.
    floor = trimesh.creation.box(bounds=[[-0.5, 0.0, -0.5], [0.5, 0.01, 0.5]])
    spike = trimesh.creation.cone(0.05, 0.3)  # along +z; turn it up (-y is up)
    spike.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    dense = trimesh.util.concatenate([floor, spike])
    v, f = trimesh.remesh.subdivide_to_size(dense.vertices, dense.faces, 0.02)
    surface = Surface(trimesh.Trimesh(v, f))
    samples = surface_samples(surface.vertices, surface.faces, 100_000)
    error = geometric_error(floor.vertices, floor.faces, surface, samples)
    assert error == pytest.approx(0.3, abs=0.02)


def test_screen_coverages_decrease_and_follow_the_error():
    diameter = 10.0
    coverage = screen_coverages([0.001, 0.004, 0.02, 0.1], [100_000, 25_000, 6_000, 1_500], diameter)
    assert coverage[-1] == 0.0
    assert all(a > b for a, b in itertools.pairwise(coverage))
    # LOD1 (4 mm) may take over once 4 mm is a pixel: at 10 / (0.004 * 1080) = 2.3 screens: no limit there;
    # the triangle density caps it at sqrt(1/4) of the full screen.
    assert coverage[0] == pytest.approx(0.5)
    # LOD3 (10 cm) only below 10 / (0.1 * 1080) = 9.3 % of the screen's height.
    assert coverage[2] == pytest.approx(10 / (0.1 * 1080))
    flat = screen_coverages([0.0, 0.0, 0.0], [1000, 1000, 1000], diameter)  # no error, no reduction
    assert flat[0] > flat[1] > flat[2] == 0.0


def test_settings_are_checked():
    with pytest.raises(ValidationError, match="power of two"):
        AssetSettings(texture_size=1000)
    with pytest.raises(ValidationError, match="must decrease"):
        AssetSettings(lod_ratios=(0.06, 0.25))
    assert AssetSettings.model_validate({"lods": 3}).lod_ratios == (0.25, 0.0625)


# -- the asset stage ---------------------------------------------------------------------------------------


def test_chain_has_the_budgeted_levels(asset_and_progress, dense):
    asset, _ = asset_and_progress
    triangles = [len(lod.faces) for lod in asset.lods]
    assert len(triangles) == 4
    assert SETTINGS.lod0_triangles * 0.9 <= triangles[0] <= SETTINGS.lod0_triangles
    for ratio, count in zip(SETTINGS.lod_ratios, triangles[1:]):
        assert count <= 1.1 * ratio * SETTINGS.lod0_triangles
    coverage = [lod.screen_coverage for lod in asset.lods]
    assert all(a > b for a, b in itertools.pairwise(coverage)) and coverage[-1] == 0.0
    assert [lod.normal_map.shape[0] for lod in asset.lods] == [512, 256, 128, 64]
    # LOD1 keeps 4 * 256 / 512 = 2 texels of LOD0's padding and shares its atlas (and albedo image);
    # LOD2 and LOD3 would keep 1 or less: they are unwrapped and baked on their own, at their own size.
    assert [lod.albedo.shape[0] for lod in asset.lods] == [512, 512, 128, 64]
    assert asset.lods[1].albedo is asset.lods[0].albedo
    assert asset.lods[2].albedo is not asset.lods[0].albedo


def test_every_level_stays_close_to_the_dense_mesh(asset_and_progress, dense):
    asset, _ = asset_and_progress
    errors = [lod.geometric_error for lod in asset.lods]
    # A box is exactly representable with few triangles: the simplifier should lose (almost) nothing.
    assert all(0.0 <= e < 0.01 for e in errors), errors


def test_lod1_shares_lod0_atlas_and_shows_the_same_colours(asset_and_progress):
    asset, _ = asset_and_progress
    lod0, lod1 = asset.lods[:2]
    assert lod1.albedo is lod0.albedo
    points = surface_samples(lod1.vertices, lod1.faces, 20_000, seed=3)
    seen_by_lod1 = sample_bilinear(lod1.albedo, _uv_at(lod1.vertices, lod1.faces, lod1.uv, points))
    seen_by_lod0 = sample_bilinear(lod0.albedo, _uv_at(lod0.vertices, lod0.faces, lod0.uv, points))
    assert _psnr(seen_by_lod1, seen_by_lod0) >= 45.0


def test_every_level_shows_the_true_colours(asset_and_progress, scene):
    asset, _ = asset_and_progress
    for lod in asset.lods:
        face, bary, texel = _texel_centres(lod, lod.albedo.shape[0])
        points = np.einsum("pk,pkd->pd", bary, lod.vertices[lod.faces[face]].astype(float))
        shown = lod.albedo[texel[:, 1], texel[:, 0]] / 255.0
        # The walk sees about half the room; the rest comes from the dense mesh's vertex colours.
        assert _psnr(shown, scene.colour(points)) >= 35.0, len(lod.faces)


def test_levels_are_valid_for_export(asset_and_progress):
    asset, _ = asset_and_progress
    for lod in asset.lods:
        assert lod.uv.min() >= 0.0 and lod.uv.max() <= 1.0
        np.testing.assert_allclose(np.linalg.norm(lod.normals, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(lod.tangents[:, :3], axis=1), 1.0, atol=1e-5)
        assert np.abs(np.sum(lod.tangents[:, :3] * lod.normals, axis=1)).max() < 1e-4
        assert set(np.unique(lod.tangents[:, 3])) <= {-1.0, 1.0}
        assert lod.faces.dtype == np.uint32 and lod.faces.max() < len(lod.vertices)
        assert lod.albedo.dtype == np.uint8 and lod.normal_map.dtype == np.uint8
        # Gutter filled: no texel keeps the background (black albedo, zero normal).
        assert (lod.normal_map.reshape(-1, 3).max(axis=1) > 0).all()
        assert (lod.albedo.reshape(-1, 3).max(axis=1) > 0).all()


def test_normal_maps_decode_to_the_dense_normals(asset_and_progress, dense):
    asset, _ = asset_and_progress
    surface = Surface(dense)
    for lod in asset.lods:
        face, bary, texel = _texel_centres(lod, lod.normal_map.shape[0])
        corners = lod.faces[face]

        def at(values: np.ndarray, bary=bary, corners=corners) -> np.ndarray:
            return np.einsum("pk,pkd->pd", bary, values[corners].astype(float))

        # Decode as a glTF shader does: interpolated normal and tangent, bitangent = w * cross(n, t).
        n = at(lod.normals)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        t = at(lod.tangents[:, :3])
        t -= n * np.sum(t * n, axis=1, keepdims=True)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        b = lod.tangents[corners[:, 0], 3:] * np.cross(n, t)
        rgb = lod.normal_map[texel[:, 1], texel[:, 0]].astype(float) / 255.0 * 2.0 - 1.0
        decoded = rgb[:, :1] * t + rgb[:, 1:2] * b + rgb[:, 2:] * n
        decoded /= np.linalg.norm(decoded, axis=1, keepdims=True)
        truth = surface.closest(at(lod.vertices)).normals
        angle = np.degrees(np.arccos(np.clip(np.sum(decoded * truth, axis=1), -1, 1)))
        # 8-bit quantisation costs about half a degree. A texel centre exactly on an edge next to a sliver
        # triangle may sit in either triangle, with different interpolated frames: allow a rare few.
        assert np.mean(angle < 1.0) > 0.995, (len(lod.faces), np.percentile(angle, 99.5))


def test_progress_is_reported_per_sub_stage(asset_and_progress):
    _, calls = asset_and_progress
    for stage in ("lod", "uv", "bake"):
        mine = [c for c in calls if c[0] == stage]
        assert mine and mine[-1][1] == mine[-1][2], stage  # ends at done == total
    assert [c[1] for c in calls if c[0] == "lod"] == [0, 1, 2, 3, 4]
