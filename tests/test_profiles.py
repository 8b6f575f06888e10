"""Engine profiles, each checked by the client it is for: the Khronos validator (all), three.js in headless
Chromium (gltf, web), Godot 3's importer (godot), gltf-transform (web); structure for unity and unreal,
whose engines don't run here.

The asset is test_export's textured room (the first camera inside it, LOD0 49k triangles).
"""
from __future__ import annotations

import subprocess

import clients
import numpy as np
import pygltflib as gl
import pytest
import scipy.spatial
from test_export import make_asset, validator_report

from lyra_assets.errors import LyraAssetsError
from lyra_assets.export.gltf import OPENCV_TO_GLTF
from lyra_assets.export.profiles import PROFILES, UCX_THICKNESS_M, profile_file, write_profile

MAGENTA = (255, 0, 255)  # the three.js page's background


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every profile but web (which needs gltf-transform) of one asset: {profile: (path, summary)}."""
    asset = make_asset()
    folder = tmp_path_factory.mktemp("profiles")
    files = {p: profile_file(folder, asset.name, p) for p in PROFILES if p != "web"}
    return asset, {p: (path, write_profile(asset, p, path)) for p, path in files.items()}


@pytest.fixture(scope="module")
def web(written):
    clients.gltf_transform()  # skips (or fails under CI) with the set-up command when it is missing
    asset, files = written
    path = files["gltf"][0].with_name("atrium.web.glb")
    return path, write_profile(asset, "web", path)


def _load(path) -> gl.GLTF2:
    return gl.GLTF2().load_binary(str(path))


def _names(gltf: gl.GLTF2, indices) -> list[str]:
    return [gltf.nodes[i].name for i in indices]


def test_profile_names_and_files(tmp_path):
    assert PROFILES == ("gltf", "unity", "unreal", "godot", "web")
    with pytest.raises(LyraAssetsError, match="unknown export profile 'unity5'; choose from gltf, unity"):
        write_profile(make_asset(), "unity5", tmp_path / "x.glb")
    assert list(tmp_path.iterdir()) == []
    assert profile_file(tmp_path, "hall", "gltf").name == "hall.glb"
    assert profile_file(tmp_path, "hall", "godot").name == "hall.godot.glb"


@pytest.mark.parametrize("profile", [p for p in PROFILES if p != "web"])
def test_validator_passes_every_profile(written, profile):
    validator_report(written[1][profile][0])


def test_validator_passes_the_web_profile(web):
    report = validator_report(web[0])
    assert set(report["info"]["extensionsUsed"]) >= {"EXT_meshopt_compression", "EXT_texture_webp", "MSFT_lod"}


def test_unity_lods_are_siblings_under_the_lod_group_root(written):
    gltf = _load(written[1]["unity"][0])
    root = gltf.nodes[gltf.scenes[0].nodes[0]]
    assert _names(gltf, root.children) == [f"atrium_LOD{i}" for i in range(4)]
    assert _names(gltf, gltf.nodes[root.children[0]].extensions["MSFT_lod"]["ids"]) == [
        f"atrium_LOD{i}" for i in range(1, 4)]
    assert root.extensions["OMI_physics_body"] == {"collider": {"shape": 0}}
    assert len(gltf.scenes) == 1


def test_unreal_collider_is_convex_ucx_pieces_behind_the_surface(written):
    asset, files = written
    gltf = _load(files["unreal"][0])
    root = gltf.nodes[gltf.scenes[0].nodes[0]]
    names = _names(gltf, root.children)
    assert names[:4] == [f"atrium_LOD{i}" for i in range(4)] and "MSFT_lod" not in gltf.extensionsUsed
    pieces = [gltf.nodes[i] for i in root.children[4:]]
    assert [p.name for p in pieces] == [f"UCX_atrium_LOD0_{k:02d}" for k in range(len(pieces))]
    hulls = []
    for piece in pieces:
        primitive = gltf.meshes[piece.mesh].primitives[0]
        assert primitive.material is None
        points = _positions(gltf, primitive)
        hull = scipy.spatial.ConvexHull(points)
        assert len(hull.vertices) == len(points)  # every vertex is on its hull: the piece is convex
        hulls.append(scipy.spatial.Delaunay(points))
    # The room's every wall, floor and ceiling is inside some piece, just behind its surface...
    vertices = asset.collider.vertices.astype(np.float64)
    corners = vertices[asset.collider.faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    behind = (corners.mean(axis=1) - 0.5 * UCX_THICKNESS_M * normals) * OPENCV_TO_GLTF
    assert all(any(h.find_simplex(p[None])[0] >= 0 for h in hulls) for p in behind)
    # ... and no piece reaches into the room the player walks in.
    inside = np.array([[0.0, 0.0, 0.0], [1.0, -1.0, -3.0], [-1.5, 1.0, -5.5]])  # glTF frame
    assert not any((h.find_simplex(inside) >= 0).any() for h in hulls)


def test_threejs_draws_lod0_alone_and_fills_the_spawn_view(written):
    asset, files = written
    path, summary = files["gltf"]
    result = clients.three_render(path, width=160, height=90)
    assert result["meshes"] == ["atrium_LOD0"]  # neither LOD1..n nor the collider is in the scene three.js draws
    assert result["triangles"] == summary["triangles"][0] == len(asset.lods[0].faces)
    assert result["rootName"] == ["atrium"]  # not renamed: the scene has a name of its own
    assert not np.all(result["image"] == MAGENTA, axis=-1).any()  # from the spawn, the room fills the view


def test_msft_lod_helper_switches_levels_with_distance(written):
    path, summary = written[1]["gltf"]
    distances = summary["level"]["lod_switch"]["distance_m"]
    probes = [1.0] + [(a + b) / 2 for a, b in zip(distances[1:], distances[2:])] + [2 * distances[-1]]
    result = clients.three_render(path, lod=1, distances=",".join(f"{d:.3f}" for d in probes))
    assert [r["level"] for r in result["levels"]] == [0, 1, 2, 3]
    assert [r["visible"] for r in result["levels"]] == [[f"atrium_LOD{k}"] for k in range(4)]
    assert [r["triangles"] for r in result["levels"]] == summary["triangles"]


def test_web_profile_is_small_readable_and_looks_the_same(written, web):
    default_path, default_summary = written[1]["gltf"]
    path, summary = web
    assert summary["bytes"] <= 0.25 * default_summary["bytes"]
    inspect = subprocess.run([str(clients.gltf_transform()), "inspect", str(path)], capture_output=True, text=True,
                             timeout=300, check=False)
    assert inspect.returncode == 0, inspect.stderr
    assert "atrium_LOD0" in inspect.stdout and "image/webp" in inspect.stdout
    gltf = _load(path)
    assert _names(gltf, gltf.nodes[1].extensions["MSFT_lod"]["ids"]) == [f"atrium_LOD{i}" for i in range(1, 4)]
    normal_maps = {gltf.materials[m].normalTexture.index for m in range(len(gltf.materials))}
    assert {gltf.images[gltf.textures[t].extensions["EXT_texture_webp"]["source"]].mimeType
            for t in normal_maps} == {"image/webp"}  # lossless (--lossless), checked by the PSNR below
    reference = clients.three_render(default_path, width=160, height=90)
    compressed = clients.three_render(path, width=160, height=90)
    assert compressed["triangles"] == reference["triangles"]
    error = np.mean((compressed["image"].astype(float) - reference["image"].astype(float)) ** 2)
    assert 10 * np.log10(255**2 / max(error, 1e-9)) >= 35.0


def test_godot3_imports_the_collider_as_a_static_body_and_skips_lower_lods(written):
    asset, files = written
    tree = clients.godot_import(files["godot"][0])
    (root,) = tree["children"]
    assert root["name"] == "atrium" and root["type"] == "Spatial"
    children = {c["name"]: c for c in root["children"]}
    assert set(children) == {"atrium_LOD0", "atrium_collider"}  # -noimp: LOD1..n are not imported
    assert children["atrium_LOD0"]["type"] == "MeshInstance"
    assert children["atrium_LOD0"]["triangles"] == len(asset.lods[0].faces)
    body = children["atrium_collider"]  # -colonly: a StaticBody with the mesh as its shape, drawn nowhere
    assert body["type"] == "StaticBody"
    (shape,) = body["children"]
    assert shape["type"] == "CollisionShape" and shape["shape"] == "ConcavePolygonShape"
    assert shape["faces"] == len(asset.collider.faces)


def _positions(gltf: gl.GLTF2, primitive) -> np.ndarray:
    accessor = gltf.accessors[primitive.attributes.POSITION]
    view = gltf.bufferViews[accessor.bufferView]
    start = view.byteOffset + (accessor.byteOffset or 0)
    return np.frombuffer(gltf.binary_blob(), np.float32, accessor.count * 3, start).reshape(-1, 3).astype(float)


def test_godot3_never_draws_the_default_files_collider(written):
    # Evidence for the collider's form: Godot 3 knows no physics extension and imports every node (it shows
    # LOD1..n of the default file, hence the godot profile), but the collider, a mesh without a node, is
    # nowhere in what it made.
    tree = clients.godot_import(written[1]["gltf"][0])
    found = []

    def walk(node):
        found.append((node["name"], node.get("triangles")))
        for child in node["children"]:
            walk(child)

    walk(tree)
    meshes = sorted(name for name, triangles in found if triangles is not None)
    assert meshes == [f"atrium_LOD{i}" for i in range(4)]
