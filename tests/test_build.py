"""The main job end to end: concept image -> walkthrough -> fused mesh -> LOD chain -> GLB, checked by the
real clients (Khronos glTF-Validator, Blender's importer, three.js), and the `mesh` command on a saved
walkthrough."""
import json

import igl
import numpy as np
import pygltflib as gl
import pytest
from click.testing import CliRunner
from clients import blender_import, three_render
from test_export import validator_report

from lyra_assets import build, mesh
from lyra_assets.cli import main

SMALL = {"camera": {"width": 208, "height": 120}, "path": {"frames": 13},
         "assets": {"lod0_triangles": 20_000, "texture_size": 1024}}


@pytest.fixture(scope="module")
def built(tmp_path_factory, example_image):
    out = tmp_path_factory.mktemp("build")
    events = []
    result = build(example_image, "walk_forward", out, options=SMALL, progress=lambda *event: events.append(event))
    return result, events


def test_outputs_and_manifest(built):
    result, events = built
    folder = result.glb.parent
    assert folder.name == "corridor" and result.glb.name == "corridor.glb"
    assert {p.name for p in folder.iterdir()} == {"corridor.glb", "manifest.json", "preview.png", "walkthrough"}
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest == json.loads(json.dumps(result.manifest))
    assert [lod["node"] for lod in manifest["lods"]] == [f"corridor_LOD{i}" for i in range(4)]
    triangles = [lod["triangles"] for lod in manifest["lods"]]
    assert triangles == sorted(triangles, reverse=True) and triangles[0] <= 20_000
    coverage = [lod["screen_coverage"] for lod in manifest["lods"]]
    assert coverage == sorted(coverage, reverse=True)
    assert set(manifest["timings_s"]) >= {"generate", "fuse", "assets", "export"}
    assert manifest["provenance"]["preset"] == "walk_forward"
    assert manifest["provenance"]["job"]["settings"]["assets"]["lod0_triangles"] == 20_000
    assert manifest["outputs"]["glb"]["bytes"] == result.glb.stat().st_size
    assert {stage for stage, *_ in events} >= {"generate", "fuse", "lod", "uv", "bake", "export"}
    assert not list(folder.rglob("*.tmp")) and not list(folder.parent.glob(".*"))


def test_validator_reports_no_errors_or_warnings(built):
    validator_report(built[0].glb)


def test_spawn_has_floor_and_collision_under_it_and_a_full_view(built):
    result = built[0]
    spawn = result.manifest["spawn"]
    assert spawn["position"] == [0.0, 0.0, 0.0]  # the first camera is the glTF origin
    # The floor under the spawn is the generator's, 1.6 m below the eye; the asset stage laid it there.
    assert spawn["ground"][1] == pytest.approx(-1.6, abs=0.05) and spawn["floor_patch_m2"] > 0
    gltf = gl.GLTF2().load_binary(str(result.glb))
    (shape,) = gltf.extensions["OMI_physics_shape"]["shapes"]
    primitive = gltf.meshes[shape["trimesh"]["mesh"]].primitives[0]
    vertices = _accessor(gltf, primitive.attributes.POSITION).reshape(-1, 3).astype(np.float64)
    faces = _accessor(gltf, primitive.indices).reshape(-1, 3).astype(np.int64)
    down = igl.ray_mesh_intersect(np.zeros(3), np.array([0.0, -1.0, 0.0]), vertices, faces, True)
    assert down and down[0][1] == pytest.approx(1.6, abs=0.05)  # the collider is there too
    # three.js from the spawn camera: LOD0 alone, filling the view. This small walkthrough (208 x 120
    # pixels, 13 frames) fuses with a few pinholes along creases (about 0.4 % of the view); the full-size
    # default build shows none (README, Engine profiles), nor does test_profiles' room.
    shown = three_render(result.glb, width=208, height=120)
    assert shown["meshes"] == ["corridor_LOD0"] and shown["triangles"] == result.manifest["lods"][0]["triangles"]
    assert np.all(shown["image"] == (255, 0, 255), axis=-1).mean() < 0.01


def _accessor(gltf: gl.GLTF2, index: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    dtype = {gl.FLOAT: np.float32, gl.UNSIGNED_SHORT: np.uint16, gl.UNSIGNED_INT: np.uint32}[accessor.componentType]
    width = {gl.SCALAR: 1, gl.VEC3: 3}[accessor.type]
    start = view.byteOffset + (accessor.byteOffset or 0)
    return np.frombuffer(gltf.binary_blob(), dtype, accessor.count * width, start)


def test_blender_imports_one_lod_and_textures_at_metre_scale(built):
    result = built[0]
    scene = blender_import(result.glb)
    objects = {o["name"]: o for o in scene["objects"]}
    assert {f"corridor_LOD{i}" for i in range(4)} | {"corridor"} == set(objects)  # the collider is no node
    assert [name for name, o in objects.items() if o["parent"] == "corridor"] == ["corridor_LOD0"]
    assert scene["images"] and all(image["packed"] for image in scene["images"])
    # The corridor's floor is 1.6 m below the first camera, in Blender's Z-up, and it is metres long.
    lo, hi = np.array(objects["corridor_LOD0"]["bounds"][0]), np.array(objects["corridor_LOD0"]["bounds"][1])
    assert lo[2] == pytest.approx(-1.6, abs=0.1)
    size = hi - lo
    assert 2.0 < size[0] < 10.0 and 5.0 < size[1] < 30.0 and 2.0 < size[2] < 6.0
    # Metres all the way: the far end is the fitted back wall, OpenCV z forward = Blender +y.
    room = result.manifest["generator"]["layout"]
    assert hi[1] == pytest.approx(room["room_max_m"][2], abs=0.1)
    assert hi[2] - lo[2] == pytest.approx(room["room_max_m"][1] - room["room_min_m"][1], abs=0.1)


def test_extras_carry_provenance(built):
    scene = blender_import(built[0].glb)
    root = {o["name"]: o for o in scene["objects"]}["corridor"]["custom_properties"]
    assert root["generator"] == "layout" and root["preset"] == "walk_forward"
    assert root["job_key"] == built[0].manifest["job_key"] and root["tool"].startswith("lyra-assets ")
    assert root["model_licence"]


def test_mesh_command_on_the_saved_walkthrough(built, tmp_path):
    walkthrough = built[0].walkthrough_dir
    runner = CliRunner()
    args = ["--json-progress", "mesh", str(walkthrough), "-o", str(tmp_path), "--lod0-triangles", "4000",
            "--texture-size", "512"]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["event"] == "done" and done["outputs"]["glb"].endswith("corridor/corridor.glb")
    manifest = json.loads((tmp_path / "corridor" / "manifest.json").read_text())
    assert manifest["lods"][0]["triangles"] <= 4000 and manifest["lods"][0]["texture_size"] == 512
    again = runner.invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 2 and "already exists; pass --force" in again.output

    # Engine profiles: one file each, the default's name unchanged; an unknown one stops before any work.
    profiles = args + ["--force", "--profile", "godot", "--profile", "gltf", "--profile", "unreal"]
    assert runner.invoke(main, profiles, catch_exceptions=False).exit_code == 0
    files = {p.name for p in (tmp_path / "corridor").glob("*.glb")}
    assert files == {"corridor.glb", "corridor.godot.glb", "corridor.unreal.glb"}
    manifest = json.loads((tmp_path / "corridor" / "manifest.json").read_text())
    assert set(manifest["outputs"]) >= {"glb", "glb.godot", "glb.unreal"}
    unknown = runner.invoke(main, [*args, "--force", "--profile", "unity5"], catch_exceptions=False)
    assert unknown.exit_code == 2 and "[export] profiles" in unknown.output and "'unity'" in unknown.output


def test_mesh_on_a_broken_walkthrough_names_the_file(tmp_path):
    (tmp_path / "walkthrough").mkdir()
    result = CliRunner().invoke(main, ["mesh", str(tmp_path / "walkthrough"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "manifest.json: missing" in result.output


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_small_textures_build_with_the_default_lods_and_validate(built, tmp_path, size):
    result = mesh(built[0].walkthrough_dir, tmp_path, options={"assets": {"texture_size": size}})
    assert [lod["texture_size"] for lod in result.manifest["lods"]][0] == size
    validator_report(result.glb)  # no errors or warnings
