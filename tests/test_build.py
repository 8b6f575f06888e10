"""The main job end to end: concept image -> walkthrough -> fused mesh -> LOD chain -> GLB, checked by the
real clients (Khronos glTF-Validator, Blender's importer), and the `mesh` command on a saved walkthrough."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from clients import blender_import, validate
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
    report = validate(built[0].glb)
    issues = report["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    infos = {m["code"] for m in issues["messages"] if m["severity"] == 2}
    assert infos <= {"UNSUPPORTED_EXTENSION"}


def test_blender_imports_lods_collider_and_textures_at_metre_scale(built):
    result = built[0]
    scene = blender_import(result.glb)
    objects = {o["name"]: o for o in scene["objects"]}
    assert {f"corridor_LOD{i}" for i in range(4)} | {"corridor", "corridor_collider"} <= set(objects)
    assert objects["corridor_collider"]["custom_properties"].get("collider") in (True, 1)
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


def test_mesh_on_a_broken_walkthrough_names_the_file(tmp_path):
    (tmp_path / "walkthrough").mkdir()
    result = CliRunner().invoke(main, ["mesh", str(tmp_path / "walkthrough"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "manifest.json: missing" in result.output


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_small_textures_build_with_the_default_lods_and_validate(built, tmp_path, size):
    result = mesh(built[0].walkthrough_dir, tmp_path, options={"assets": {"texture_size": size}})
    assert [lod["texture_size"] for lod in result.manifest["lods"]][0] == size
    issues = validate(result.glb)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
