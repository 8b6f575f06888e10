"""Export: the default .glb checked by the Khronos glTF-Validator and Blender's importer, plus the preview sheet.

The asset is a textured room (seen from inside, OpenCV axes: floor at y = +1.6, 1.6 m below the first
camera) with four LODs of a subdivided box and a box collider, made here so every expected value is known.
"""
from __future__ import annotations

import io
import os

import clients  # tests/ is on sys.path (pytest's rootdir-relative import of test modules)
import numpy as np
import pygltflib as gl
import pytest
import trimesh
from PIL import Image

import lyra_assets
from lyra_assets.assets import Collider, LevelAsset, LodLevel, Spawn
from lyra_assets.export import render_preview, write_glb
from lyra_assets.export.gltf import OPENCV_TO_GLTF
from lyra_assets.export.preview import BACKGROUND, render_mesh, three_quarter_view

ROOM_MIN = np.array([-2.0, -1.2, -1.5])  # OpenCV axes: the ceiling is 1.2 m above the camera
ROOM_MAX = np.array([2.0, 1.6, 6.0])  # the floor 1.6 m below it
EXTRAS = {"generator": "layout", "model_licence": "Apache-2.0", "preset": "walk_forward",
          "job_key": "3f2a9c", "tool_version": lyra_assets.__version__}


def _tangents(normals: np.ndarray) -> np.ndarray:
    """Any unit direction perpendicular to each normal, handedness +1: enough for the exporter's checks."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t = np.cross(normals, helper)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return np.hstack([t, np.ones((len(t), 1))]).astype(np.float32)


def _lod(mesh: trimesh.Trimesh, albedo, normal_map, coverage, error) -> LodLevel:
    v = mesh.vertices
    uv = (v[:, [0, 2]] - ROOM_MIN[[0, 2]]) / (ROOM_MAX - ROOM_MIN)[[0, 2]]  # a plan-view projection
    normals = mesh.vertex_normals.astype(np.float32)
    return LodLevel(v.astype(np.float32), mesh.faces.astype(np.uint32), normals, uv.astype(np.float32),
                    _tangents(normals), albedo, normal_map, coverage, error)


def make_asset() -> LevelAsset:
    room = trimesh.creation.box(bounds=np.stack([ROOM_MIN, ROOM_MAX]))
    room.invert()  # normals into the room, as a reconstructed room's are
    rows = np.arange(64)[:, None, None]
    albedo = np.broadcast_to(np.where(rows % 16 < 8, [200, 60, 40], [230, 200, 120]), (64, 64, 3)).astype(np.uint8)
    other_albedo = np.full((32, 32, 3), (40, 160, 60), np.uint8)
    normal_map = np.full((64, 64, 3), (128, 128, 255), np.uint8)

    # LOD0 has its vertices unshared so it needs more than 65535 of them: the uint32 index path.
    lod0 = room.subdivide().subdivide().subdivide().subdivide().subdivide().subdivide()
    lod0.unmerge_vertices()
    lods = [_lod(lod0, albedo, normal_map, 0.4, 0.0),
            _lod(room.subdivide().subdivide(), albedo, normal_map, 0.15, 0.01),
            _lod(room.subdivide(), albedo, normal_map, 0.05, 0.03),
            _lod(room, other_albedo, normal_map, 0.01, 0.08)]
    # LOD2 carries flaws earlier stages can leave, which the exporter must repair: a triangle that repeats
    # a vertex, and an unused vertex with a zero normal and a zero tangent.
    lod2 = lods[2]
    lod2.faces = np.vstack([lod2.faces, [[0, 0, 1]]]).astype(np.uint32)
    lod2.vertices = np.vstack([lod2.vertices, [[0.0, 0.0, 1.0]]]).astype(np.float32)
    lod2.normals = np.vstack([lod2.normals, [[0.0, 0.0, 0.0]]]).astype(np.float32)
    lod2.uv = np.vstack([lod2.uv, [[0.5, 0.5]]]).astype(np.float32)
    lod2.tangents = np.vstack([lod2.tangents, [[0.0, 0.0, 0.0, 1.0]]]).astype(np.float32)
    # One left-handed tangent frame, to see w survive the change of axes.
    lods[3].tangents[0, 3] = -1.0
    collider = Collider(room.vertices.astype(np.float32), room.faces.astype(np.uint32))
    # The spawn: the first camera at the origin, with the floor 1.6 m below it.
    spawn = Spawn(np.eye(4), np.array([0.0, 1.6, 0.0]), yfov_deg=40.0)
    return LevelAsset("atrium", lods, collider, dict(EXTRAS), spawn)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    asset = make_asset()
    path = tmp_path_factory.mktemp("export") / "atrium.glb"
    summary = write_glb(asset, path)
    return asset, path, summary


def _load(path) -> gl.GLTF2:
    return gl.GLTF2().load_binary(str(path))


def _accessor(gltf: gl.GLTF2, index: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    dtype = {gl.FLOAT: np.float32, gl.UNSIGNED_SHORT: np.uint16, gl.UNSIGNED_INT: np.uint32}[accessor.componentType]
    width = {gl.SCALAR: 1, gl.VEC2: 2, gl.VEC3: 3, gl.VEC4: 4}[accessor.type]
    start = view.byteOffset + (accessor.byteOffset or 0)
    data = np.frombuffer(gltf.binary_blob(), dtype, accessor.count * width, start)
    return data.reshape(accessor.count, width)


def _node(gltf: gl.GLTF2, name: str) -> gl.Node:
    return next(n for n in gltf.nodes if n.name == name)


def validator_report(path) -> dict:
    """The validator's report, checked: no errors or warnings, and infos only about what it cannot know (the
    extensions it doesn't implement, and the objects that only those extensions reference)."""
    report = clients.validate(path)
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    gltf = _load(path)
    referenced_by_extensions = {f"/meshes/{shape['trimesh']['mesh']}"
                                for shape in (gltf.extensions or {}).get("OMI_physics_shape", {"shapes": []})["shapes"]}
    for message in issues["messages"]:
        if message["code"] == "UNSUPPORTED_EXTENSION":
            assert gltf.extensionsUsed[int(message["pointer"].rsplit("/", 1)[1])] in {
                "MSFT_lod", "OMI_physics_body", "OMI_physics_shape", "EXT_meshopt_compression"}
        else:
            assert message["code"] == "UNUSED_OBJECT" and message["pointer"] in referenced_by_extensions, message
    return report


def test_khronos_validator_reports_no_errors_or_warnings(exported):
    _, path, summary = exported
    report = validator_report(path)
    assert report["info"]["totalTriangleCount"] == sum(summary["triangles"]) + summary["collider_triangles"]


def test_blender_plain_import_shows_lod0_alone_under_the_root_and_no_collider(exported):
    asset, path, _ = exported
    summary = clients.blender_import(path)
    assert summary["result"] == ["FINISHED"]
    objects = {o["name"]: o for o in summary["objects"]}
    lods = [f"atrium_LOD{i}" for i in range(4)]
    # The collider is no node, so Blender makes no object of it; LOD0 is the root's only child. Blender
    # imports every node: the file's second scene (LOD1..n, reached through MSFT_lod) becomes a collection
    # of its own, which the importer excludes from the view layer as it does every scene but the default
    # one. So only LOD0 is shown (the add-on gathers all levels under the root).
    assert set(objects) == {"atrium", *lods}
    assert objects["atrium"]["type"] == "EMPTY"
    assert objects["atrium"]["custom_properties"]["job_key"] == EXTRAS["job_key"]
    assert [name for name, o in objects.items() if o["parent"] == "atrium"] == ["atrium_LOD0"]
    assert [name for name, o in objects.items() if o["visible"]] == ["atrium", "atrium_LOD0"]
    for name in lods[1:]:
        assert objects[name]["parent"] is None
        assert objects[name]["collections"] == ["atrium lower LODs (MSFT_lod)"]
    assert objects["atrium_LOD1"]["custom_properties"]["geometric_error"] == pytest.approx(0.01)
    assert objects["atrium_LOD0"]["custom_properties"]["MSFT_screencoverage"] == pytest.approx([0.4, 0.15, 0.05, 0.01])
    assert [objects[n]["triangles"] for n in lods] == [len(lod.faces) for lod in asset.lods[:2]] + [
        len(asset.lods[2].faces) - 1, len(asset.lods[3].faces)]

    # Every texture is packed in the .blend and decodes to its size (the normal map as non-colour data).
    images = {i["name"]: i for i in summary["images"]}
    assert len(images) == 3
    assert all(i["packed"] and i["width"] > 0 and i["height"] > 0 for i in images.values())
    materials = {m["name"]: m for m in summary["materials"]}
    for name in lods:
        (material,) = objects[name]["materials"]
        assert len(materials[material]["images"]) == 2
        colourspaces = sorted(images[i]["colorspace"] for i in materials[material]["images"])
        assert colourspaces == ["Non-Color", "sRGB"]

    # Metres survive, and the importer turns glTF's Y-up into Blender's Z-up: OpenCV (x, y, z) ends at
    # Blender (x, z, -y), so the floor 1.6 m below the camera is at Blender z = -1.6.
    expected_min = [ROOM_MIN[0], ROOM_MIN[2], -ROOM_MAX[1]]
    expected_max = [ROOM_MAX[0], ROOM_MAX[2], -ROOM_MIN[1]]
    for name in lods:
        lo, hi = objects[name]["bounds"]
        assert lo == pytest.approx(expected_min, abs=1e-5) and hi == pytest.approx(expected_max, abs=1e-5)


def test_axes_change_once_from_opencv_to_gltf(exported):
    asset, path, _ = exported
    gltf = _load(path)
    for level, lod in enumerate(asset.lods[:2]):
        node = _node(gltf, f"atrium_LOD{level}")
        primitive = gltf.meshes[node.mesh].primitives[0]
        # Each level's pivot is the bounding sphere's centre: its vertices are stored relative to it.
        centre = np.float32(node.translation)
        positions = _accessor(gltf, primitive.attributes.POSITION) + centre
        np.testing.assert_allclose(positions, lod.vertices * OPENCV_TO_GLTF, atol=1e-6)
        np.testing.assert_allclose(_accessor(gltf, primitive.attributes.NORMAL), lod.normals * OPENCV_TO_GLTF,
                                   atol=1e-6)
        stored_min = (positions - centre).min(axis=0).tolist()
        assert gltf.accessors[primitive.attributes.POSITION].min == pytest.approx(stored_min)
        # The floor, 1.6 m below the camera in OpenCV's y-down axes, is 1.6 m below it in glTF's y-up ones.
        floor = lod.vertices[:, 1] == np.float32(1.6)
        assert floor.any() and np.allclose(positions[floor, 1], -1.6, atol=1e-6)
        # A rotation keeps the winding: each triangle still turns counter-clockwise towards its normals.
        faces = _accessor(gltf, primitive.indices).reshape(-1, 3).astype(np.int64)
        a, b, c = positions[faces[:, 0]], positions[faces[:, 1]], positions[faces[:, 2]]
        normals = _accessor(gltf, primitive.attributes.NORMAL)
        assert np.all(np.einsum("ij,ij->i", np.cross(b - a, c - a), normals[faces].sum(axis=1)) > 0)

    primitive = gltf.meshes[_node(gltf, "atrium_LOD3").mesh].primitives[0]
    tangents = _accessor(gltf, primitive.attributes.TANGENT)
    np.testing.assert_allclose(tangents[:, :3], asset.lods[3].tangents[:, :3] * OPENCV_TO_GLTF, atol=1e-6)
    assert tangents[0, 3] == -1.0 and np.all(tangents[1:, 3] == 1.0)

    # LOD0 needs 32-bit indices; the small levels fit in 16 bits.
    index_types = [gltf.accessors[gltf.meshes[_node(gltf, f"atrium_LOD{i}").mesh].primitives[0].indices].componentType
                   for i in range(4)]
    assert index_types == [gl.UNSIGNED_INT] + [gl.UNSIGNED_SHORT] * 3


def test_repairs_unit_vectors_and_degenerate_triangles(exported):
    asset, path, summary = exported
    gltf = _load(path)
    primitive = gltf.meshes[_node(gltf, "atrium_LOD2").mesh].primitives[0]
    normals = _accessor(gltf, primitive.attributes.NORMAL)
    tangents = _accessor(gltf, primitive.attributes.TANGENT)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(tangents[:, :3], axis=1), 1.0, atol=1e-6)
    assert abs(float(normals[-1] @ tangents[-1, :3])) < 1e-6  # the invented tangent is perpendicular
    assert summary["triangles"][2] == len(asset.lods[2].faces) - 1


def test_node_layout_lod_extension_and_materials(exported):
    asset, path, summary = exported
    gltf = _load(path)
    names = [n.name for n in gltf.nodes]
    assert summary["nodes"] == names
    root = gltf.nodes[gltf.scenes[gltf.scene].nodes[0]]
    assert root.name == "atrium" and gltf.scenes[gltf.scene].name != root.name  # or clients rename one
    # Only LOD0 is in the default scene; LOD1..n are reached through its MSFT_lod, from a second scene.
    assert [gltf.nodes[i].name for i in root.children] == ["atrium_LOD0"]
    assert [gltf.nodes[i].name for i in gltf.scenes[1].nodes] == ["atrium_LOD1", "atrium_LOD2", "atrium_LOD3"]
    lod0 = _node(gltf, "atrium_LOD0")
    assert [gltf.nodes[i].name for i in lod0.extensions["MSFT_lod"]["ids"]] == ["atrium_LOD1", "atrium_LOD2",
                                                                               "atrium_LOD3"]
    assert lod0.extras["MSFT_screencoverage"] == pytest.approx([0.4, 0.15, 0.05, 0.01])
    assert gltf.extensionsUsed == ["MSFT_lod", "OMI_physics_body", "OMI_physics_shape"]
    assert not gltf.extensionsRequired
    for i, lod in enumerate(asset.lods):
        extras = _node(gltf, f"atrium_LOD{i}").extras
        assert extras["screen_coverage"] == pytest.approx(lod.screen_coverage)
        assert extras["geometric_error"] == pytest.approx(lod.geometric_error)

    # The collider is a mesh no node uses: the root, a static body, collides with it through OMI_physics_*.
    assert root.extensions == {"OMI_physics_body": {"collider": {"shape": 0}}}
    (shape,) = gltf.extensions["OMI_physics_shape"]["shapes"]
    assert shape["type"] == "trimesh"
    collider = gltf.meshes[shape["trimesh"]["mesh"]]
    assert collider.name == "atrium_collider" and collider.primitives[0].material is None
    assert all(node.mesh != shape["trimesh"]["mesh"] for node in gltf.nodes)
    positions = _accessor(gltf, collider.primitives[0].attributes.POSITION)
    np.testing.assert_allclose(positions, asset.collider.vertices * OPENCV_TO_GLTF, atol=1e-6)

    assert gltf.asset.generator == f"lyra-assets {lyra_assets.__version__}"
    assert {k: v for k, v in gltf.asset.extras.items() if k != "level"} == EXTRAS
    for material in gltf.materials:
        assert material.pbrMetallicRoughness.metallicFactor == 0.0
        assert material.pbrMetallicRoughness.roughnessFactor == 1.0
        assert material.doubleSided is False
    (sampler,) = gltf.samplers
    assert (sampler.minFilter, sampler.magFilter) == (gl.LINEAR_MIPMAP_LINEAR, gl.LINEAR)
    assert all(image.mimeType == "image/png" for image in gltf.images)


def test_shared_texture_arrays_are_stored_once(exported):
    asset, path, summary = exported
    assert asset.lods[0].albedo is asset.lods[2].albedo and asset.lods[3].albedo is not asset.lods[0].albedo
    gltf = _load(path)
    # Two albedo arrays and one normal-map array among the four levels.
    assert len(gltf.images) == len(gltf.textures) == summary["images"] == 3
    materials = [gltf.meshes[_node(gltf, f"atrium_LOD{i}").mesh].primitives[0].material for i in range(4)]
    assert materials[0] == materials[1] == materials[2] != materials[3]
    first, last = gltf.materials[materials[0]], gltf.materials[materials[3]]
    assert first.normalTexture.index == last.normalTexture.index
    assert first.pbrMetallicRoughness.baseColorTexture.index != last.pbrMetallicRoughness.baseColorTexture.index


def test_non_power_of_two_textures_are_resampled(tmp_path):
    asset = make_asset()
    asset.lods = asset.lods[2:]
    for lod in asset.lods:
        lod.albedo = np.full((48, 80, 3), 90, np.uint8)
    gltf = _load(write_glb(asset, tmp_path / "npot.glb")["path"])
    sizes = set()
    for image in gltf.images:
        view = gltf.bufferViews[image.bufferView]
        png = gltf.binary_blob()[view.byteOffset:view.byteOffset + view.byteLength]
        sizes.add(Image.open(io.BytesIO(png)).size)
    assert sizes == {(128, 64), (64, 64)}


def test_failed_write_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    asset = make_asset()
    path = tmp_path / "atrium.glb"

    def disk_failure(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_failure)  # the bytes are written; the flush to disk fails
    with pytest.raises(OSError, match="No space left"):
        write_glb(asset, path)
    assert list(tmp_path.iterdir()) == []

    path.write_bytes(b"the previous export")
    with pytest.raises(OSError):
        write_glb(asset, path)
    assert path.read_bytes() == b"the previous export"
    assert list(tmp_path.iterdir()) == [path]

    monkeypatch.undo()
    summary = write_glb(asset, path)
    assert path.stat().st_size == summary["bytes"] and list(tmp_path.iterdir()) == [path]


def test_refuses_non_finite_geometry(tmp_path):
    asset = make_asset()
    asset.lods[1].vertices[5, 2] = np.nan
    with pytest.raises(ValueError, match="atrium_LOD1: vertices contain NaN"):
        write_glb(asset, tmp_path / "bad.glb")
    assert list(tmp_path.iterdir()) == []


def test_rasteriser_culls_back_faces_and_keeps_the_nearest_surface():
    # Two unit squares facing the camera (normals towards -z in OpenCV axes), the red one nearer.
    quad = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float64)
    vertices = np.vstack([quad + [0, 0, 2.0], quad + [0.5, 0.5, 1.0]])  # blue far, red near
    faces = np.array([[0, 2, 1], [0, 3, 2], [4, 6, 5], [4, 7, 6]])
    uv = np.array([[0.25, 0.5]] * 4 + [[0.75, 0.5]] * 4)
    albedo = np.zeros((2, 2, 3), np.uint8)
    albedo[:, 0] = (0, 0, 255)
    albedo[:, 1] = (255, 0, 0)
    view = three_quarter_view(vertices, 64, 64)
    for order in (faces, faces[::-1]):  # the drawing order must not matter
        image = render_mesh(vertices, order, view, uv, albedo)
        red = (image[..., 0] > 60) & (image[..., 2] == 0)
        blue = (image[..., 2] > 60) & (image[..., 0] == 0)
        assert red.sum() > 200 and blue.sum() > 100
        xy, _ = view.project(np.array([[0.75, 0.75, 1.0], [0.25, 0.25, 2.0]]))
        (x_red, y_red), (x_blue, y_blue) = xy.astype(int)
        assert red[y_red, x_red] and blue[y_blue, x_blue]
    # Turned around (clockwise from the camera) the squares show their backs and are culled.
    assert np.all(render_mesh(vertices, faces[:, ::-1], view, uv, albedo) == BACKGROUND)


def test_preview_sheet(tmp_path):
    asset = make_asset()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 80, 3), np.uint8) for _ in range(9)]
    path = tmp_path / "preview.png"
    render_preview(asset, frames[0], frames, path, tile_height=120, max_frames=3)
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]
    sheet = np.asarray(Image.open(path).convert("RGB"))
    # Two rows of 120-pixel tiles; the bottom row holds 4 LODs and the collider at 160 pixels each.
    assert sheet.shape[0] == 2 * 120 + 3 * 4
    assert sheet.shape[1] >= 5 * 160 + 6 * 4
    lod3_tile = sheet[128:248, 4 + 3 * 164:4 + 3 * 164 + 160]
    green = (lod3_tile[..., 1] > lod3_tile[..., 0] + 40) & (lod3_tile[..., 1] > lod3_tile[..., 2] + 40)
    assert green.mean() > 0.1  # LOD3 is drawn with its own green albedo


def test_level_info_gives_spawn_bounding_sphere_and_switch_distances(exported):
    _, path, summary = exported
    gltf = _load(path)
    info = gltf.asset.extras["level"]
    assert gltf.nodes[gltf.scenes[0].nodes[0]].extras["level"] == info == summary["level"]
    # The spawn is the first camera: the glTF origin, looking down -z (glTF's camera convention).
    assert info["spawn"]["position"] == [0.0, 0.0, 0.0] and info["spawn"]["rotation"] == [0.0, 0.0, 0.0, 1.0]
    assert info["spawn"]["yfov_deg"] == pytest.approx(40.0)
    centre, radius = np.array(info["bounding_sphere"]["center"]), info["bounding_sphere"]["radius"]
    room = np.stack([ROOM_MIN, ROOM_MAX]) * OPENCV_TO_GLTF
    np.testing.assert_allclose(centre, room.mean(axis=0), atol=1e-4)
    assert radius == pytest.approx(np.linalg.norm(ROOM_MAX - ROOM_MIN) / 2, abs=1e-3)
    np.testing.assert_allclose(_node(gltf, "atrium_LOD2").translation, centre, atol=1e-4)
    # Level k takes over where the sphere covers level k-1's share of a 60-degree screen's height.
    expected = [0.0] + [radius / (c * np.tan(np.radians(30))) for c in (0.4, 0.15, 0.05)]
    assert info["lod_switch"]["vertical_fov_deg"] == 60.0
    assert info["lod_switch"]["distance_m"] == pytest.approx(expected, rel=1e-3)
