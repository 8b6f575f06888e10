"""UV atlas (chunked xatlas, one packed atlas) and tangent frames, on a finely subdivided room of known size."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scenes import BoxScene

from lyra_assets.assets.surface import vertex_normals
from lyra_assets.assets.uv import AtlasFull, _chart_ids, tangents, unwrap, unwrap_fitting


@pytest.fixture(scope="module")
def room() -> trimesh.Trimesh:
    scene = BoxScene()
    v, f = trimesh.remesh.subdivide_to_size(scene.mesh().vertices, scene.mesh().faces, 0.25)
    return trimesh.Trimesh(v, f, process=True)


@pytest.fixture(scope="module")
def atlas(room):
    # Small chunks so that the room is charted in many pieces and packed into one atlas.
    return unwrap(room.vertices, room.faces, size=256, padding=3, chunk_faces=300)


def _uv_areas(atlas) -> np.ndarray:
    t = atlas.uv[atlas.faces].astype(np.float64) * atlas.size
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])  # in texels


@pytest.fixture(scope="module")
def coverage(atlas) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) how many triangles hold each texel's sample point, and the chart of the last one (-1: none).
    Rasterised here, independently of the baker; the sample sits off the texel centre by an odd fraction
    so that no sample lies exactly on an edge two triangles share."""
    size = atlas.size
    charts = _chart_ids(atlas.faces.astype(np.int64), len(atlas.vertices))
    count = np.zeros((size, size), np.int64)
    label = np.full((size, size), -1, np.int64)
    for face in atlas.faces:
        t = atlas.uv[face].astype(np.float64) * size
        lo = np.clip(np.floor(t.min(axis=0)).astype(int) - 1, 0, size - 1)
        hi = np.clip(np.ceil(t.max(axis=0)).astype(int) + 1, 0, size - 1)
        x, y = np.meshgrid(np.arange(lo[0], hi[0] + 1) + 0.5137, np.arange(lo[1], hi[1] + 1) + 0.4871)
        sides = [(t[(k + 1) % 3, 0] - t[k, 0]) * (y - t[k, 1]) - (t[(k + 1) % 3, 1] - t[k, 1]) * (x - t[k, 0])
                 for k in range(3)]
        inside = ((sides[0] > 0) & (sides[1] > 0) & (sides[2] > 0)) | ((sides[0] < 0) & (sides[1] < 0) & (sides[2] < 0))
        window = (slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1))
        count[window] += inside
        label[window][inside] = charts[face[0]]
    return count, label


def test_uvs_lie_in_the_unit_square_and_faces_keep_their_order(room, atlas):
    assert atlas.uv.min() >= 0.0 and atlas.uv.max() <= 1.0
    assert np.array_equal(atlas.source[atlas.faces], room.faces)
    np.testing.assert_allclose(atlas.vertices, room.vertices[atlas.source], atol=1e-6)
    assert len(atlas.vertices) > len(room.vertices)  # split along chart borders


def test_chunks_pack_into_one_atlas_with_padding_between_charts(atlas, coverage):
    _, labels = coverage
    assert len(np.unique(labels[labels >= 0])) > 6  # a room cannot be one chart
    size, reach = atlas.size, atlas.padding
    # Every chart has `padding` free texels around it, so two charts are 2 * padding + 1 apart.
    for dy in range(-2 * reach, 2 * reach + 1):
        for dx in range(-2 * reach, 2 * reach + 1):
            a = labels[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)]
            b = labels[max(-dy, 0):size + min(-dy, 0), max(-dx, 0):size + min(-dx, 0)]
            assert not ((a >= 0) & (b >= 0) & (a != b)).any(), f"charts touch at offset ({dx}, {dy})"


def test_charts_do_not_overlap(atlas, coverage):
    count, _ = coverage
    assert count.max() == 1
    assert _uv_areas(atlas).sum() == pytest.approx((count > 0).sum(), rel=0.1)


def test_requested_texel_density_is_met(room):
    atlas = unwrap(room.vertices, room.faces, size=512, padding=2, texels_per_metre=20.0, chunk_faces=300)
    assert atlas.texels_per_metre == pytest.approx(20.0)
    p = atlas.vertices[atlas.faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    density = np.sqrt(_uv_areas(atlas).sum() / area.sum())
    assert density == pytest.approx(20.0, rel=0.05)


def test_a_requested_density_too_high_to_fit_is_lowered_until_it_fits(room):
    # The room fits 256² at about 17.5 texels a metre (the atlas fixture). From 26 the lowering used to give
    # up: three lower densities in a row overflowed into as many pages (2), as if the gutters filled the atlas.
    for requested in (26.0, 1000.0):
        atlas = unwrap(room.vertices, room.faces, size=256, padding=3, texels_per_metre=requested, chunk_faces=300)
        assert 14.0 < atlas.texels_per_metre < 20.0
        assert atlas.uv.min() >= 0.0 and atlas.uv.max() <= 1.0


def test_fill_density_spreads_the_charts_over_the_atlas(atlas):
    # About 150 charts with 3 texels of padding each in a 256 atlas: padding takes much of it, but the
    # packed charts still reach across the whole texture.
    assert atlas.uv.max(axis=0).min() > 0.75
    assert _uv_areas(atlas).sum() / atlas.size ** 2 > 0.15


def test_tangents_follow_u_and_image_up_on_a_known_quad():
    # A wall in the x-y plane facing -z (towards a camera at the origin), textured upright:
    # u grows with x, and the image's top (v = 0) is at the top of the wall (y = -1; y points down).
    vertices = np.array([[0, -1, 2], [1, -1, 2], [1, 0, 2], [0, 0, 2]], float)
    faces = np.array([[0, 2, 1], [0, 3, 2]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    normals = vertex_normals(vertices, faces)
    np.testing.assert_allclose(normals, [[0, 0, -1]] * 4, atol=1e-6)
    frame = tangents(vertices, faces, normals, uv)
    np.testing.assert_allclose(frame[:, :3], [[1, 0, 0]] * 4, atol=1e-6)
    bitangent = frame[:, 3:] * np.cross(normals, frame[:, :3])
    np.testing.assert_allclose(bitangent, [[0, -1, 0]] * 4, atol=1e-6)  # up the wall = image up = glTF +Y
    mirrored = tangents(vertices, faces, normals, uv * [-1, 1] + [1, 0])
    assert (mirrored[:, 3] == -1).all()  # a mirrored chart flips the handedness


def test_tangents_are_unit_and_orthogonal_to_normals(room, atlas):
    normals = vertex_normals(atlas.vertices, atlas.faces)
    frame = tangents(atlas.vertices, atlas.faces, normals, atlas.uv)
    np.testing.assert_allclose(np.linalg.norm(frame[:, :3], axis=1), 1.0, atol=1e-5)
    assert np.abs(np.sum(frame[:, :3] * normals, axis=1)).max() < 1e-5
    assert set(np.unique(frame[:, 3])) <= {-1.0, 1.0}


@pytest.fixture(scope="module")
def coarse_room() -> trimesh.Trimesh:
    scene = BoxScene()
    v, f = trimesh.remesh.subdivide_to_size(scene.mesh().vertices, scene.mesh().faces, 0.6)
    return trimesh.Trimesh(v, f, process=True)


def test_a_small_atlas_takes_fewer_charts_and_narrower_gutters(coarse_room):
    room = coarse_room
    # 100-face chunks give the room's walls many charts; 8-texel gutters around them cannot fit 32x32.
    with pytest.raises(AtlasFull):
        unwrap(room.vertices, room.faces, size=32, padding=8, chunk_faces=100)
    atlas = unwrap_fitting(room.vertices, room.faces, size=32, padding=8)
    assert atlas.padding < 8 and atlas.size == 32
    assert atlas.uv.min() >= 0.0 and atlas.uv.max() <= 1.0


def test_an_atlas_too_small_for_any_gutter_names_the_level_and_the_option(coarse_room):
    with pytest.raises(AtlasFull, match=r"LOD3 \(.* triangles\) does not fit one 4x4 atlas.*--texture-size"):
        unwrap_fitting(coarse_room.vertices, coarse_room.faces, size=4, padding=4, what="LOD3")


def test_each_flat_wall_is_one_chart(room):
    # Chunks of 300 faces would cut the room's walls (1024 to 3584 faces each) into ragged pieces; a flat
    # region larger than a chunk is one chart instead.
    scene = BoxScene()
    atlas = unwrap(room.vertices, room.faces, size=512, padding=2, chunk_faces=300)
    charts = _chart_ids(atlas.faces.astype(np.int64), len(atlas.vertices))
    centres = room.triangles_center
    on_wall = np.isclose(centres, scene.room_min).any(axis=1) | np.isclose(centres, scene.room_max).any(axis=1)
    (lo, hi), = scene.blocks
    on_wall &= ~np.all((centres >= lo - 1e-6) & (centres <= hi + 1e-6), axis=1)  # not the block's underside
    assert len(np.unique(charts[atlas.faces[on_wall, 0]])) == 6
    # a flat chart is the wall projected: every triangle keeps its shape, so one texel density throughout
    p = atlas.vertices[atlas.faces[on_wall]].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    density = np.sqrt(_uv_areas(atlas)[on_wall] / area)
    assert np.ptp(density) <= 0.01 * density.mean()
    assert density.mean() == pytest.approx(atlas.texels_per_metre, rel=0.02)


def test_faces_without_area_are_charted_too(room):
    faces = np.vstack([room.faces, [[0, 0, 1], [2, 2, 2]]])  # a decimator may leave such slivers
    atlas = unwrap(room.vertices, faces, size=256, padding=2, chunk_faces=300)
    assert np.array_equal(atlas.source[atlas.faces], faces)
    assert atlas.uv.min() >= 0.0 and atlas.uv.max() <= 1.0


def test_packing_in_forked_processes_gives_the_layout_packing_in_turn_gives(room, monkeypatch):
    from lyra_assets import forked

    if not forked.AVAILABLE:
        pytest.skip("forked packing is Linux only")
    # 21 texels a metre overflows 256² (the atlas fixture fits at about 17.5): lower densities are tried next.
    kwargs = dict(size=256, padding=3, chunk_faces=300, texels_per_metre=21.0)
    parallel = unwrap(room.vertices, room.faces, **kwargs)
    assert parallel.texels_per_metre < 0.9 * 0.9 * 21.0 + 1e-9  # the third try or later
    monkeypatch.setattr(forked, "AVAILABLE", False)
    in_turn = unwrap(room.vertices, room.faces, **kwargs)
    assert parallel.texels_per_metre == in_turn.texels_per_metre
    np.testing.assert_array_equal(parallel.uv, in_turn.uv)
    np.testing.assert_array_equal(parallel.faces, in_turn.faces)


def test_charting_in_a_child_process_gives_the_charts_of_charting_here(room):
    from lyra_assets.assets import uv

    vertices, faces = np.asarray(room.vertices, np.float64), np.asarray(room.faces, np.int64)
    labels = uv._chunk_labels(vertices, faces, uv.CHUNK_FACES)
    there, here = uv._charts(vertices, faces, labels), uv._chart_chunks(vertices, faces, labels)
    for a, b in zip(there, here, strict=True):
        np.testing.assert_array_equal(a, b)
