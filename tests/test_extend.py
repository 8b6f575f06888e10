"""Extending a built world: one more segment from a pose of the walkthrough, generated with the world so far
as memory, appended without touching earlier frames; the asset rebuilt from the whole walkthrough and checked
by the Khronos validator and by re-rendering it from the new cameras. Failed extensions change nothing."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from clients import validate
from lyra_assets import build
from lyra_assets.cli import main
from lyra_assets.errors import LyraAssetsError
from lyra_assets.export.preview import _rasterise
from lyra_assets.pipeline import extend
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, yaw_pose
from lyra_assets.walkthrough import Walkthrough

SMALL = {"camera": {"width": 208, "height": 120}, "path": {"frames": 9},
         "assets": {"lod0_triangles": 4000, "texture_size": 1024, "lods": 2}}
FRAMES = 9


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under folder (relative path -> sha256)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    err = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float(err[mask].mean() if mask is not None else err.mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def world(tmp_path_factory, example_image):
    """walk_forward built, extended by look_around from its last pose, then by a strafe file from frame 4
    through the command line."""
    out = tmp_path_factory.mktemp("extend")
    built = build(example_image, "walk_forward", out, options=SMALL)
    folder = built.glb.parent
    states = [snapshot(folder)]
    old_glb = out / "first.glb"  # kept aside: how much of the new views the asset covered before
    old_glb.write_bytes(built.glb.read_bytes())
    events = []
    first = extend(folder, "look_around", progress=lambda *event: events.append(event))
    states.append(snapshot(folder))

    strafe = np.repeat(np.eye(4)[None], 5, axis=0)
    strafe[:, 0, 3] = np.linspace(0, 0.6, 5)  # 0.6 m to the right of frame 4's camera
    K = intrinsics_from_fov(60.0, 208, 120)  # the world's lens: the file's first view is frame 4 again
    CameraPath(strafe, K, 208, 120).to_lyra_npz(out / "strafe.npz")
    run = CliRunner().invoke(main, ["--json-progress", "extend", str(folder), "--trajectory", str(out / "strafe.npz"),
                                    "--from-frame", "4"], catch_exceptions=False)
    assert run.exit_code == 0, run.output
    states.append(snapshot(folder))
    return {"folder": folder, "built": built, "first": first, "states": states, "events": events,
            "cli": [json.loads(line) for line in run.output.splitlines()], "old_glb": old_glb}


def test_earlier_frames_stay_byte_identical_and_the_count_grows(world):
    states = world["states"]
    frames = [sorted(k for k in s if k.startswith("walkthrough/frames/")) for s in states]
    assert [len(f) for f in frames] == [FRAMES, 2 * FRAMES, 2 * FRAMES + 5]
    for earlier, later in zip(states, states[1:]):
        kept = [k for k in earlier if k.startswith("walkthrough/frames/")]
        assert all(later[k] == earlier[k] for k in kept)
        assert later["walkthrough/input.png"] == earlier["walkthrough/input.png"]
        assert later["corridor.glb"] != earlier["corridor.glb"]  # the asset was rebuilt
    walk = Walkthrough.load(world["folder"] / "walkthrough")
    assert len(walk) == 2 * FRAMES + 5
    assert not [p for p in world["folder"].parent.rglob(".*")], "temporary files left behind"


def test_segments_and_keys_are_recorded(world):
    folder = world["folder"]
    walk = json.loads((folder / "walkthrough" / "manifest.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    segments = walk["segments"]
    assert [(s["start"], s["frames"], s["from_frame"], s["preset"]) for s in segments] == [
        (0, FRAMES, None, "walk_forward"), (FRAMES, FRAMES, FRAMES - 1, "look_around"), (2 * FRAMES, 5, 4, None)]
    assert segments[1]["settings"]["path"]["motion"] == "yaw"
    assert segments[1]["settings"]["camera"] == world["built"].manifest["provenance"]["job"]["settings"]["camera"]
    assert segments[2]["trajectory"]["poses_in_file"] == 5 and not segments[2]["trajectory"]["in_world"]
    assert len({s["key"] for s in segments}) == 3
    keys = [world["built"].manifest["job_key"], world["first"].manifest["job_key"], manifest["job_key"]]
    assert len(set(keys)) == 3  # each extension changes the world's key
    assert manifest["provenance"]["segments"] == segments[1:] and walk["job_key"] == manifest["job_key"]
    assert world["events"][0][0] == "survey" and {e[0] for e in world["events"]} >= {"generate", "fuse", "export"}
    assert world["cli"][-1]["event"] == "done" and world["cli"][-1]["outputs"]["glb"] == str(folder / "corridor.glb")


def test_the_new_segment_starts_at_its_pose_and_keeps_clear(world):
    walk = Walkthrough.load(world["folder"] / "walkthrough")
    np.testing.assert_allclose(walk.path.c2w[FRAMES], walk.path.c2w[FRAMES - 1], atol=1e-6)
    for i in range(FRAMES):  # look_around turns on the spot: the yaw is relative to the last camera
        turn = yaw_pose(2 * math.pi * i / (FRAMES - 1), np.zeros(3))
        np.testing.assert_allclose(walk.path.c2w[FRAMES + i], walk.path.c2w[FRAMES - 1] @ turn, atol=1e-5)
    strafe = walk.path.c2w[2 * FRAMES:]
    np.testing.assert_allclose(strafe[0], walk.path.c2w[4], atol=1e-6)
    np.testing.assert_allclose(strafe[-1][:3, 3] - strafe[0][:3, 3], 0.6 * walk.path.c2w[4][:3, 0], atol=1e-5)
    margin = json.loads((world["folder"] / "walkthrough" / "manifest.json").read_text())["segments"][1]
    assert margin["camera_path"]["min_clearance_m"] >= 0.3


def test_revisits_render_the_original_frames(world):
    """The embedded generator's memory is its fixed scene: the pose a segment starts at and the end of a full
    turn give back the original frame (PSNR is infinite: the same pixels)."""
    walk = Walkthrough.load(world["folder"] / "walkthrough")
    for original, revisit in [(FRAMES - 1, FRAMES), (FRAMES - 1, 2 * FRAMES - 1), (4, 2 * FRAMES)]:
        assert psnr(walk.frames[revisit], walk.frames[original]) >= 45
        np.testing.assert_allclose(walk.depth[revisit], walk.depth[original], rtol=1e-5)


def test_the_rebuilt_glb_validates_and_covers_the_new_views(world):
    glb = world["folder"] / "corridor.glb"
    issues = validate(glb)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    walk = Walkthrough.load(world["folder"] / "walkthrough")
    new = range(FRAMES + 1, 2 * FRAMES - 1)  # the look_around views other than its start and end
    depth_ok, colour = view_scores(glb, walk, new)
    back = FRAMES + (FRAMES - 1) // 2  # half a turn: looking back down the corridor, at the wall behind the start
    covered_back, before_back = view_scores(glb, walk, [back])[0], view_scores(world["old_glb"], walk, [back])[0]
    print(f"look_around views: depth within 5 % on {depth_ok:.3f} of pixels, PSNR {colour:.2f} dB there; "
          f"looking back {covered_back:.3f} (the asset before extending: {before_back:.3f})")
    assert depth_ok > 0.95 and colour > 25
    assert covered_back > 0.9 and before_back < covered_back - 0.2


def view_scores(glb: Path, walk: Walkthrough, frames) -> tuple[float, float]:
    """The GLB's LOD0 rasterised from the walkthrough's cameras (perspective-correct depth and texture):
    the share of pixels whose depth is within 5 % of the walkthrough's, and PSNR of the colour over them."""
    scene = trimesh.load(glb, force="scene")
    lod0 = next(g for name, g in scene.geometry.items() if "LOD0" in name)
    vertices = lod0.vertices * np.array([1.0, -1.0, -1.0])  # glTF axes back to OpenCV
    faces, uv = lod0.faces, lod0.visual.uv
    albedo = np.asarray(lod0.visual.material.baseColorTexture.convert("RGB"))
    hits, errors = [], []
    for i in frames:
        w2c = np.linalg.inv(walk.path.c2w[i])
        cam = vertices @ w2c[:3, :3].T + w2c[:3, 3]
        K = walk.path.K[i]
        ahead = faces[(cam[faces, 2] > 0.05).all(axis=1)]
        z = np.maximum(cam[:, 2], 1e-6)
        xy = np.stack([K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]], axis=1)
        tri, bary = _rasterise(xy, cam[:, 2], ahead, walk.path.width, walk.path.height)
        covered = tri >= 0
        corners = ahead[tri[covered]]
        weights = bary[covered] / z[corners]
        inverse = weights.sum(axis=1)
        depth = 1.0 / inverse
        texel = np.einsum("nk,nkc->nc", weights, uv[corners]) / inverse[:, None]
        rows, cols = albedo.shape[:2]
        rgb = albedo[np.clip(((1 - texel[:, 1]) * rows).astype(int), 0, rows - 1),
                     np.clip((texel[:, 0] * cols).astype(int), 0, cols - 1)]
        truth_depth = walk.depth[i].reshape(-1)[covered]
        good = np.abs(depth - truth_depth) < 0.05 * truth_depth
        hits.append(good.sum() / covered.size)
        errors.append(((rgb[good].astype(float) - walk.frames[i].reshape(-1, 3)[covered][good]) ** 2).mean())
    return float(np.mean(hits)), 10 * math.log10(255.0 ** 2 / float(np.mean(errors)))


def test_a_bad_preset_or_frame_changes_nothing(world):
    folder = world["folder"]
    before = snapshot(folder)
    with pytest.raises(LyraAssetsError, match="unknown preset 'no_such_motion'"):
        extend(folder, "no_such_motion")
    with pytest.raises(LyraAssetsError, match="--from-frame 99"):
        extend(folder, "look_around", from_frame=99)
    run = CliRunner().invoke(main, ["extend", str(folder), "--preset", "look_around", "--voxel-size", "-1"])
    assert run.exit_code == 2 and run.output.count("error:") == 1
    assert snapshot(folder) == before


def test_a_failure_mid_way_changes_nothing(world, monkeypatch):
    folder = world["folder"]
    before = snapshot(folder)

    def generator_fails(stage, done, total, message=""):
        if stage == "generate" and done == 3:
            raise RuntimeError("the generator failed mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        extend(folder, "look_around", progress=generator_fails)
    assert snapshot(folder) == before

    def export_fails(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("lyra_assets.pipeline.write_glb", export_fails)
    with pytest.raises(OSError, match="disk full"):  # after the new walkthrough was written, before the swap
        extend(folder, "look_around", options={"path": {"frames": 3}})
    assert snapshot(folder) == before
    assert not [p for p in folder.rglob(".*")]


def test_lyra2_refuses_memory():
    from lyra_assets.generators.lyra2 import Lyra2Generator

    with pytest.raises(LyraAssetsError, match="extending a walkthrough"):
        Lyra2Generator.generate(object.__new__(Lyra2Generator), None, None, None, memory=object())


def test_an_extension_that_finds_the_world_changed_writes_nothing(world):
    folder = world["folder"]
    manifest = folder / "walkthrough" / "manifest.json"
    before = snapshot(folder)
    original = manifest.read_text()

    def another_run_finishes_first(stage, done, total, message=""):
        if stage == "export" and done == total:  # as if another extension had renamed its world into place
            manifest.write_text(original.replace(json.loads(original)["job_key"], "0" * 32))

    try:
        with pytest.raises(LyraAssetsError, match="changed while this extension ran"):
            extend(folder, "look_around", options={"path": {"frames": 3}}, progress=another_run_finishes_first)
    finally:
        manifest.write_text(original)
    assert snapshot(folder) == before


def test_build_from_the_manifest_of_an_extended_world_says_it_makes_the_first_segment(world):
    folder = world["folder"]
    run = CliRunner().invoke(main, ["--json-progress", "build", "--from-manifest", str(folder / "manifest.json"),
                                    "-o", str(folder.parent)])
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    notice = next(e for e in events if e.get("stage") == "notice")
    assert "extended 2 time(s)" in notice["message"] and "first segment only" in notice["message"]
    assert run.exit_code == 2 and "already exists" in events[-1]["message"]  # and nothing was replaced
