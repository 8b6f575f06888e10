"""The Blender add-on (blender_addon/): its JSON-lines reader and command lines against the real CLI, and the
extension itself validated, built and installed by Blender's own tools, then driven inside a real Blender
(PyPI bpy) by tests/blender_addon_check.py: camera-path export, images from the Image Editor, a failing job
and a whole build imported into the scene.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lyra_assets.trajectory import CameraPath
from lyra_assets.walkthrough import Walkthrough

import clients  # tests/ is on sys.path (conftest.py)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # blender_addon's plain-Python modules (they import no bpy)

from blender_addon import camera_path, protocol  # noqa: E402 (after the sys.path line)
from blender_addon.protocol import (  # noqa: E402
    BuildRequest, DoneEvent, ErrorEvent, ExtendRequest, JobProgress, ProgressEvent, parse_line)
from blender_addon.runner import PipelineError, PipelineRun, run_quick  # noqa: E402

ADDON = REPO / "blender_addon"
CHECK_SCRIPT = REPO / "tests" / "blender_addon_check.py"
PYTHON_RUNNER = protocol.pipeline_command(protocol.PYTHON, sys.executable)  # this venv's python -m lyra_assets
EXECUTABLE = Path(sys.executable).with_name("lyra-assets")


# -- the JSON-lines protocol ----------------------------------------------------------------------------


def test_parse_line_reads_the_three_events():
    assert parse_line('{"event": "progress", "stage": "fuse", "done": 3, "total": 9, "message": "tsdf"}\n') == \
        ProgressEvent("fuse", 3, 9, "tsdf")
    assert parse_line('{"event": "progress", "stage": "uv", "done": 0, "total": 1}') == ProgressEvent("uv", 0, 1, "")
    outputs = {"glb": "/o/c/c.glb", "manifest": "/o/c/manifest.json", "preview": "/o/c/preview.png",
               "walkthrough": "/o/c/walkthrough"}
    assert parse_line(json.dumps({"event": "done", "outputs": outputs})) == DoneEvent(outputs)
    assert parse_line('{"event": "done", "outputs": {"glb": "a.glb", "splats": null}}') == DoneEvent({"glb": "a.glb"})
    assert parse_line('{"event": "error", "message": "x.png: not an image; use a PNG or JPEG"}') == \
        ErrorEvent("x.png: not an image; use a PNG or JPEG")


@pytest.mark.parametrize("line", [
    "", "\n", "Loading weights...", "[1, 2]", '"done"', "{not json",
    '{"event": "started"}',  # an event this add-on does not know
    '{"stage": "fuse", "done": 1, "total": 2}',  # no event field
    '{"event": "progress", "stage": "fuse", "done": "1", "total": 2}',
    '{"event": "progress", "stage": "fuse", "done": true, "total": 2}',
    '{"event": "progress", "stage": 5, "done": 1, "total": 2}',
    '{"event": "done", "outputs": ["a.glb"]}',
    '{"event": "error"}',
])
def test_parse_line_skips_everything_else(line):
    assert parse_line(line) is None


def test_job_progress_moves_forward_through_the_stages():
    progress = JobProgress()
    assert progress.fraction == 0 and progress.text == "starting"
    seen = []
    for stage, done, total in [("survey", 0, 1), ("survey", 1, 1), ("generate", 4, 8), ("export", 1, 2)]:
        progress.update(ProgressEvent(stage, done, total, ""))
        seen.append(progress.fraction)
    assert seen == pytest.approx([0, 1 / 8, (1 + 0.5) / 8, (7 + 0.5) / 8])
    progress.update(ProgressEvent("fuse", 0, 4, "integrating depth"))  # an earlier stage never moves it back
    assert progress.fraction == pytest.approx(7.5 / 8) and progress.text == "fuse 0/4: integrating depth"
    progress.update(ProgressEvent("denoise", 2, 0, ""))  # unknown stage, no total: the bar stays
    assert progress.fraction == pytest.approx(7.5 / 8) and progress.text == "denoise"


# -- command lines ----------------------------------------------------------------------------------------


def test_command_lines():
    assert protocol.pipeline_command(protocol.EXECUTABLE, " /opt/la/bin/lyra-assets ") == ["/opt/la/bin/lyra-assets"]
    assert protocol.pipeline_command(protocol.PYTHON, "~/venv/bin/python") == \
        [os.path.expanduser("~/venv/bin/python"), "-m", "lyra_assets"]
    with pytest.raises(ValueError, match="preferences"):
        protocol.pipeline_command(protocol.EXECUTABLE, "  ")

    base = ["lyra-assets"]
    assert protocol.build_command(base, BuildRequest("/in/my concept.png", "/out")) == \
        ["lyra-assets", "--json-progress", "build", "/in/my concept.png", "-o", "/out"]
    full = BuildRequest("/in/c.png", "/out", preset="orbit", generator="layout", trajectory="/t/path.npz",
                        frames=9, lods=3, lod0_triangles=5000, texture_size=256, force=True)
    assert protocol.build_command(base, full) == [
        "lyra-assets", "--json-progress", "build", "/in/c.png", "-o", "/out", "--preset", "orbit",
        "--generator", "layout", "--trajectory", "/t/path.npz", "--frames", "9", "--lods", "3",
        "--lod0-triangles", "5000", "--texture-size", "256", "--force"]
    assert protocol.presets_command(base) == ["lyra-assets", "presets", "list", "--json"]
    assert protocol.extend_command(base, ExtendRequest("/out/c")) == ["lyra-assets", "--json-progress", "extend",
                                                                      "/out/c"]
    assert protocol.extend_command(base, ExtendRequest("/out/c", preset="look_around", frames=9)) == [
        "lyra-assets", "--json-progress", "extend", "/out/c", "--preset", "look_around", "--frames", "9"]
    assert protocol.extend_command(base, ExtendRequest("/out/c", preset="orbit", trajectory="/t/cam.npz")) == [
        "lyra-assets", "--json-progress", "extend", "/out/c", "--trajectory", "/t/cam.npz", "--in-world"]


def test_the_cli_takes_every_option_the_addon_passes():
    full = BuildRequest("c.png", "out", preset="orbit", generator="layout", trajectory="t.npz", frames=9, lods=3,
                        lod0_triangles=5000, texture_size=256, force=True)
    extending = ExtendRequest("out/c", preset="orbit", trajectory="t.npz", frames=9)
    for command, argv in (("build", protocol.build_command([], full)),
                          ("extend", protocol.extend_command([], extending))):
        passed = {arg for arg in argv if arg.startswith("-")}
        main_help = run_quick([*PYTHON_RUNNER, "--help"])
        command_help = run_quick([*PYTHON_RUNNER, command, "--help"])
        known = set(re.findall(r"(?<![\w-])-[-\w]+", main_help)) | set(re.findall(r"(?<![\w-])-[-\w]+", command_help))
        assert passed - known == set(), command


def test_presets_are_read_from_the_cli():
    presets = protocol.parse_presets(run_quick(protocol.presets_command(PYTHON_RUNNER)))
    names = {p.name for p in presets}
    assert names == {p.stem for p in (REPO / "presets").glob("*.toml")}
    walk = next(p for p in presets if p.name == "walk_forward")
    assert walk.description and walk.motion and walk.frames > 1
    with pytest.raises(ValueError, match="not a list of presets"):
        protocol.parse_presets('{"name": "walk_forward"}')


def test_generators_are_read_from_the_cli():
    found = protocol.parse_generators(run_quick(protocol.generators_command(PYTHON_RUNNER)))
    assert {g.name: g.needs_gpu for g in found} == {"depth": False, "layout": False, "lyra2": True}
    with pytest.raises(ValueError, match="not a list of generators"):
        protocol.parse_generators("[1]")


# -- running the real CLI -------------------------------------------------------------------------------


def cli_error(*args) -> str:
    """What the CLI itself says about a bad job, from its stderr line "error: ..."."""
    run = subprocess.run([*PYTHON_RUNNER, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, run.stderr
    return lines[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def not_an_image(tmp_path_factory) -> tuple[Path, str]:
    """A text file with an image's name, and what the CLI itself says when asked to build it."""
    path = tmp_path_factory.mktemp("bad") / "sketch.png"
    path.write_text("this is a text file with an image's name\n")
    return path, cli_error("build", path, "-o", path.parent / "direct")


def test_a_failing_build_reports_the_cli_error(not_an_image, tmp_path):
    image, expected = not_an_image
    run = PipelineRun(protocol.build_command(PYTHON_RUNNER, BuildRequest(str(image), str(tmp_path / "out"))))
    events = []
    while not run.ended:  # as the modal timer does: take what is there, never wait for more
        events += run.poll()
        time.sleep(0.05)
    with pytest.raises(PipelineError) as failed:
        run.outputs()
    run.close()
    assert str(failed.value) == expected
    assert events[-1] == ErrorEvent(expected)
    assert run.process.returncode == 2


def test_a_crash_without_an_error_event_reports_the_last_stderr_line():
    # --frames takes a number: click refuses the command line before the CLI prints any event.
    run = PipelineRun([*PYTHON_RUNNER, "--json-progress", "build", "c.png", "--frames", "nine"])
    run.wait()
    with pytest.raises(PipelineError, match=r"exit status 2: Error: Invalid value for '--frames'"):
        run.outputs()
    run.close()


def test_a_missing_executable_says_where_to_set_it(tmp_path):
    with pytest.raises(PipelineError, match="cannot start .*preferences"):
        PipelineRun([str(tmp_path / "no-such-lyra-assets"), "--json-progress", "build", "c.png"])


def test_cancel_stops_the_pipeline_and_its_process_group(example_image, tmp_path):
    out = tmp_path / "out"
    run = PipelineRun(protocol.build_command(PYTHON_RUNNER, BuildRequest(str(example_image), str(out))))
    first = []
    while not first and not run.ended:
        first = [event for event in run.poll(timeout=None) if isinstance(event, ProgressEvent)]
    assert first, "the build printed no progress"
    run.cancel()
    assert run.ended and run.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(run.process.pid, 0)  # nothing of its process group is left
    with pytest.raises(PipelineError, match="cancelled"):
        run.outputs()
    run.close()
    left = [p.name for p in out.rglob("*")] if out.exists() else []
    assert not [name for name in left if name.endswith((".glb", ".tmp", ".partial"))], left


# -- camera conventions ---------------------------------------------------------------------------------


def test_focal_length_follows_blenders_sensor_fit():
    # a 36 mm wide sensor behind a 36 mm lens: the fitted image side is one focal length across
    assert camera_path.focal_length_px(36, 36, 24, "AUTO", 800, 400) == pytest.approx(800)
    assert camera_path.focal_length_px(36, 36, 24, "AUTO", 400, 800) == pytest.approx(800)  # fits the long side
    assert camera_path.focal_length_px(36, 36, 24, "HORIZONTAL", 400, 800) == pytest.approx(400)
    assert camera_path.focal_length_px(24, 36, 24, "VERTICAL", 400, 800) == pytest.approx(800)
    K = camera_path.intrinsics(500.0, 832, 480)
    assert K.tolist() == [[500, 0, 416], [0, 500, 240], [0, 0, 1]]


def test_a_camera_looking_down_blenders_y_axis():
    """Blender's default upright camera looking along +Y: its OpenCV axes are x = +X, y = -Z, z = +Y."""
    look_y = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 1.6], [0, 0, 0, 1]], float)  # rotation_euler (90, 0, 0)
    ahead = look_y.copy()
    ahead[:3, 3] += [0.5, 2.0, 0.0]  # 2 m forward, 0.5 m to the right
    scaled = ahead.copy()
    scaled[:3, :3] *= 3.0  # object scale must not leak into the pose
    w2c = camera_path.world_to_first_camera(np.stack([look_y, ahead, scaled]))
    np.testing.assert_allclose(w2c[0], np.eye(4), atol=1e-12)
    expected = np.eye(4)
    expected[:3, 3] = [-0.5, 0.0, -2.0]  # world-to-camera: the first camera's origin seen from the second
    np.testing.assert_allclose(w2c[1], expected, atol=1e-12)
    np.testing.assert_allclose(w2c[2], expected, atol=1e-12)


# -- inside Blender -------------------------------------------------------------------------------------

# A camera walk for the round trip: keyed on every frame, so Blender's interpolation plays no part.
# rotation_euler (90 + pitch, 0, yaw): upright along +Y, turned left by yaw, looking up by pitch.
CAMERA_KEYS = [
    {"frame": 1, "location": [1.0, -2.0, 1.6], "yaw": 0.0, "pitch": 0.0, "lens_mm": 24.0},
    {"frame": 2, "location": [1.0, -1.0, 1.6], "yaw": 0.0, "pitch": 0.0, "lens_mm": 24.0},
    {"frame": 3, "location": [0.5, 0.0, 1.7], "yaw": 30.0, "pitch": 0.0, "lens_mm": 30.0},
    {"frame": 4, "location": [0.0, 0.5, 1.5], "yaw": -45.0, "pitch": 20.0, "lens_mm": 35.0},
]
CAMERA = {"sensor_fit": "AUTO", "sensor_mm": [36.0, 24.0], "resolution": [832, 480], "percentage": 50,
          "keys": [{"frame": k["frame"], "location": k["location"], "rotation_deg": [90 + k["pitch"], 0, k["yaw"]],
                    "lens_mm": k["lens_mm"]} for k in CAMERA_KEYS]}
SMALL_BUILD = {"lod0_triangles": 4000, "texture_size": 1024}
# A camera walked inside the imported corridor (Blender: Z up; the level's first camera at the origin looking
# along +Y), at the walkthrough's size and lens (60 degrees across 36 mm: 31.18 mm), turning left as it goes.
EXPLORE = {"resolution": [208, 120], "lens_mm": 18.0 / math.tan(math.radians(30.0)), "max_points": 20_000,
           "keys": [{"frame": 1, "location": [0.0, 1.0, 0.0], "yaw": 0.0},
                    {"frame": 2, "location": [0.0, 1.3, 0.0], "yaw": 15.0},
                    {"frame": 3, "location": [0.1, 1.6, 0.0], "yaw": 30.0}]}


def expected_camera(key) -> np.ndarray:
    """Camera-to-world in OpenCV axes in the first camera's world, built from the key's angles alone.

    The first camera stands upright looking along Blender's +Y, so a Blender vector (X, Y, Z) is
    (X, -Z, Y) in its OpenCV frame (x right, y down, z forward)."""
    yaw, pitch = math.radians(key["yaw"]), math.radians(key["pitch"])
    forward = np.array([-math.sin(yaw) * math.cos(pitch), math.cos(yaw) * math.cos(pitch), math.sin(pitch)])
    right = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    down = np.cross(forward, right)

    def opencv(v):
        return np.array([v[0], -v[2], v[1]])

    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = opencv(right), opencv(down), opencv(forward)
    pose[:3, 3] = opencv(np.subtract(key["location"], CAMERA_KEYS[0]["location"]))
    return pose


@pytest.fixture(scope="module")
def addon_zip(tmp_path_factory) -> tuple[Path, str]:
    """The extension validated and built by Blender's own blender_ext.py; returns the zip and its report."""
    blender = clients.blender_python()
    found = sorted(Path(blender).parent.parent.glob("lib/python3*/site-packages/bpy/*/scripts/addons_core/"
                                                    "bl_pkg/cli/blender_ext.py"))
    assert found, f"no blender_ext.py in the bpy wheel next to {blender}"
    tool = found[-1]
    validate = subprocess.run([str(blender), str(tool), "validate", str(ADDON)], capture_output=True, text=True,
                              timeout=120)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    out = tmp_path_factory.mktemp("addon_zip")
    build = subprocess.run([str(blender), str(tool), "build", "--source-dir", str(ADDON), "--output-dir", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    zips = list(out.glob("*.zip"))
    assert len(zips) == 1, build.stdout
    return zips[0], validate.stdout


@pytest.fixture(scope="module")
def blender_run(addon_zip, not_an_image, tmp_path_factory) -> dict:
    """One Blender session that installs the zip and runs every in-Blender check (see blender_addon_check.py)."""
    root = tmp_path_factory.mktemp("blender_addon")
    small = root / "images" / "corridor.png"
    small.parent.mkdir()
    small.write_bytes((REPO / "examples" / "corridor.png").read_bytes())
    (root / "images" / "corridor.toml").write_text("[camera]\nwidth = 208\nheight = 120\n[path]\nframes = 9\n")
    (root / "work").mkdir()
    spec = {"zip": str(addon_zip[0]), "python": sys.executable, "executable": str(EXECUTABLE),
            "image": str(small), "bad_image": str(not_an_image[0]), "out_dir": str(root / "out"),
            "work_dir": str(root / "work"), "camera": CAMERA, "explore": EXPLORE, **SMALL_BUILD}
    (root / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(root / "user_resources"),
           "BLENDER_USER_CONFIG": str(root / "user_config")}
    run = subprocess.run([str(clients.blender_python()), str(CHECK_SCRIPT), str(root / "spec.json"),
                          str(root / "result.json")], capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads((root / "result.json").read_text())
    return {"spec": spec, "root": root, **result}


def part(blender_run, name) -> dict:
    outcome = blender_run.get(name)
    assert outcome is not None, f"{name} did not run (the add-on was not installed?): {blender_run.get('install')}"
    assert "exception" not in outcome, outcome["exception"]
    return outcome


def test_manifest_validates_and_builds(addon_zip):
    zip_path, report = addon_zip
    assert zip_path.name == "lyra_assets-0.1.0.zip" and "Success" in report


def test_zip_installs_and_enables(blender_run):
    install = part(blender_run, "install")
    assert install["result"] == ["FINISHED"] and install["enabled"]
    assert install["operators"] == [True, True, True] and install["panel_registered"]


def test_camera_path_round_trip(blender_run):
    path = CameraPath.from_lyra_npz(part(blender_run, "camera_path")["npz"])
    with np.load(part(blender_run, "camera_path")["npz"]) as raw:
        assert raw["w2c"].dtype == np.float32 and raw["intrinsics"].dtype == np.float32
        assert raw["image_width"].dtype == np.int64 and raw["image_width"].shape == ()
    assert (path.width, path.height) == (416, 240)  # 50 % of 832 x 480
    assert len(path) == len(CAMERA_KEYS)
    for i, key in enumerate(CAMERA_KEYS):
        np.testing.assert_allclose(path.c2w[i], expected_camera(key), atol=1e-5)
        focal = key["lens_mm"] / 36.0 * 416  # AUTO fit: the sensor's 36 mm span the longer (horizontal) side
        np.testing.assert_allclose(path.K[i], [[focal, 0, 208], [0, focal, 120], [0, 0, 1]], atol=1e-5 * focal)


def test_images_from_the_image_editor(blender_run):
    copies = part(blender_run, "image_copies")
    made = Path(copies["made"])
    assert made.name == "Painted_concept.png"  # named after the image: the asset is named after the file
    with Image.open(made) as image:
        assert image.format == "PNG" and image.size == (64, 32)
        assert image.convert("RGB").getpixel((10, 10))[0] > 150  # the generated colour, not blank
    assert copies["made_filepath_after"] == ""  # the user's image was left as it was
    assert copies["loaded"] == blender_run["spec"]["image"]  # a file on disk is used where it is


def test_a_failing_job_shows_the_cli_error(blender_run, not_an_image):
    failing = part(blender_run, "failing_job")
    expected = not_an_image[1]
    assert failing["panel_error"] == expected
    assert failing["raised"] is not None and expected in failing["raised"]
    assert not failing["running"]


def test_build_imports_an_lod_grouped_asset(blender_run):
    built = part(blender_run, "build_job")
    assert built["result"] == ["FINISHED"], built["panel_error"]
    assert built["preset"] == "walk_forward" and built["presets"][0] == "DEFAULT"
    assert set(built["presets"][1:]) == {p.stem for p in (REPO / "presets").glob("*.toml")}
    from lyra_assets.generators import REGISTRY

    assert sorted(built["generators"]) == sorted(REGISTRY)  # the add-on offers what the CLI lists, no more
    root = built["root"]
    assert root["type"] == "EMPTY" and root["name"] == "corridor" and root["collections"] == ["corridor"]
    objects = {obj["name"]: obj for obj in built["objects"]}
    lods = sorted((obj for obj in objects.values() if "lod" in obj["properties"]), key=lambda o: o["properties"]["lod"])
    assert len(lods) >= 4
    assert [obj["name"] for obj in lods] == [f"corridor_LOD{i}" for i in range(len(lods))]
    assert all(obj["parent"] == "corridor" and obj["collections"] == ["corridor"] for obj in lods)
    hidden = [(obj["hide_viewport"], obj["hide_render"]) for obj in lods]
    assert hidden == [(False, False)] + [(True, True)] * (len(lods) - 1)  # only LOD0 shown, in viewport and render
    coverage = [obj["properties"]["screen_coverage"] for obj in lods]
    assert root["properties"]["lod_screen_coverage"] == pytest.approx(coverage)
    assert coverage == sorted(coverage, reverse=True) and root["properties"]["lod_shown"] == 0

    collider = objects["corridor_collider"]
    assert collider["properties"]["collider"] is True and collider["parent"] == "corridor"
    assert collider["display_type"] == "WIRE" and collider["hide_render"] and not collider["hide_viewport"]

    low, high = np.array(lods[0]["bounds"])
    extent = high - low
    assert np.all(extent > 0.5) and np.all(extent < 50), extent  # a walkable corridor in metres
    assert lods[0]["textures"], "LOD0 has no texture"
    textures = {image["name"]: image for image in built["images"]}
    for name in lods[0]["textures"]:
        assert textures[name]["packed"] or textures[name]["file_found"], textures[name]
        assert min(textures[name]["size"]) > 0, textures[name]

    switched = built["after_show_lod1"]
    assert switched["result"] == ["FINISHED"] and switched["root_lod_shown"] == 1
    shown = [obj["name"] for obj in switched["objects"] if "lod" in obj["properties"] and not obj["hide_viewport"]]
    assert shown == ["corridor_LOD1"]


def test_extend_from_camera_replaces_the_level_and_shows_its_points(blender_run):
    extended = part(blender_run, "extend_job")
    assert extended["result"] == ["FINISHED"], extended["panel_error"]
    assert not extended["old_root_left"] and extended["new_uid"] != extended["old"]["uid"]
    assert extended["level_collections"] == ["corridor"]  # the rebuilt level took the old one's place
    assert extended["root"]["name"] == "corridor"
    # without the camera path: the chosen preset from the walkthrough's last pose, on the level's output folder
    assert extended["by_preset"] == [str(Path(blender_run["spec"]["out_dir"]) / "corridor"), "look_around", "", 5]

    walkthrough = Path(blender_run["spec"]["out_dir"]) / "corridor" / "walkthrough"
    walk = Walkthrough.load(walkthrough)
    assert len(walk) == 9 + len(EXPLORE["keys"])  # the camera's three frames became the next segment
    for i, key in enumerate(EXPLORE["keys"]):  # in the level's frame: Blender (X, Y, Z) is OpenCV (X, -Z, Y)
        x, y, z = key["location"]
        np.testing.assert_allclose(walk.path.c2w[9 + i][:3, 3], [x, -z, y], atol=1e-4)
        yaw = math.radians(key["yaw"])  # turning left about Blender's Z is about OpenCV's -y
        np.testing.assert_allclose(walk.path.c2w[9 + i][:3, 2], [-math.sin(yaw), 0.0, math.cos(yaw)], atol=1e-4)
    np.testing.assert_allclose(walk.path.K[9], walk.path.K[0], rtol=1e-4)  # the same lens as the world's

    points = extended["points"]
    total = int((walk.depth > 0).sum())
    assert total > EXPLORE["max_points"] and points["properties"]["points_total"] == total
    assert points["vertices"] == points["properties"]["points_shown"] == EXPLORE["max_points"]
    assert points["collections"] == ["corridor"]
    assert points["modifiers"] == ["NODES"] and max(points["colour"][:3]) > 0.05
    shown, level = np.array(points["bounds"]), np.array(extended["lod0_bounds"])
    assert np.all(shown[0] >= level[0] - 0.1) and np.all(shown[1] <= level[1] + 0.1)  # the points lie in the level
    assert extended["cameras"] == {"vertices": 5 * len(walk), "edges": 8 * len(walk)}
    assert "corridor_points" in extended["collection_objects"]
