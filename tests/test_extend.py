"""Extending a built world: one more segment from a pose of the walkthrough, generated with the world so far
as memory, appended without touching earlier frames; the asset rebuilt from the whole walkthrough and checked
by the Khronos validator and by re-rendering it from the new cameras. Failed extensions change nothing."""
from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from click.testing import CliRunner

from clients import validate
from lyra_assets import build, extend
from lyra_assets.cli import main
from lyra_assets.errors import LyraAssetsError
from lyra_assets.pipeline import _recorded_provenance
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, yaw_pose
from lyra_assets.walkthrough import Walkthrough

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import world_metrics as wm  # noqa: E402  the world benchmark's metrics

SMALL = {"camera": {"width": 208, "height": 120}, "path": {"frames": 9},
         "assets": {"lod0_triangles": 4000, "texture_size": 1024, "lods": 2}}
FRAMES = 9


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under folder (relative path -> sha256)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


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
    # `mesh` of the extended walkthrough keeps its segments, so the same settings give the same key
    recorded = _recorded_provenance(Walkthrough.load(folder / "walkthrough"), folder / "walkthrough", None)
    assert recorded.job_key == manifest["job_key"] and len(recorded.segments) == 2
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
        assert wm.psnr(walk.frames[revisit], walk.frames[original]) >= 45
        # depth is stored as float16: a pose read back from float32 may round a pixel to the next step
        np.testing.assert_allclose(walk.depth[revisit], walk.depth[original], rtol=1e-3)


def test_the_rebuilt_glb_validates_and_covers_the_new_views(world):
    glb = world["folder"] / "corridor.glb"
    issues = validate(glb)["issues"]
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, issues["messages"]
    walk = Walkthrough.load(world["folder"] / "walkthrough")
    new = range(FRAMES + 1, 2 * FRAMES - 1)  # the look_around views other than its start and end
    covered, colour = view_scores(glb, walk, new)
    before, _ = view_scores(world["old_glb"], walk, new)
    print(f"look_around views, pixels frame 0 did not see: depth within 5 % on {covered:.3f} (the asset before "
          f"extending: {before:.3f}), PSNR of the GLB there {colour:.2f} dB")
    assert covered > 0.8 and covered - before > 0.5 and colour > 25


def view_scores(glb: Path, walk: Walkthrough, frames) -> tuple[float, float]:
    """The world benchmark's novel-view scoring applied to the GLB: its LOD0 rasterised from the walkthrough's
    cameras (bench/world_metrics.py), over the pixels frame 0 did not see. Returns the share of those pixels
    whose depth is within 5 % of the walkthrough's, and the PSNR there of LOD0's baked albedo."""
    lod0 = wm.glb_lod0(glb)
    scene = trimesh.load(glb, force="scene")
    textured = next(g for name, g in scene.geometry.items() if "LOD0" in name)  # the same vertices and faces
    albedo = np.asarray(textured.visual.material.baseColorTexture.convert("RGB"))
    rows, cols = albedo.shape[:2]
    unseen_pixels, rendered, truth = 0, [], []
    for i in frames:
        K, c2w, w, h = walk.path.K[i], walk.path.c2w[i], walk.path.width, walk.path.height
        unseen = wm.unseen_mask(walk.depth[i], c2w, walk.depth[0], walk.path.c2w[0], K)
        depth, tri, bary = wm.rasterise(lod0.vertices, lod0.faces, K, c2w, w, h)
        good = unseen & (tri >= 0) & (np.abs(depth - walk.depth[i]) < 0.05 * walk.depth[i])
        unseen_pixels += int(unseen.sum())
        uv = np.einsum("pk,pkc->pc", bary[good], textured.visual.uv[lod0.faces[tri[good]]])
        rendered.append(albedo[np.clip(((1 - uv[:, 1]) * rows).astype(int), 0, rows - 1),
                               np.clip((uv[:, 0] * cols).astype(int), 0, cols - 1)])
        truth.append(walk.frames[i][good])
    rendered, truth = np.concatenate(rendered), np.concatenate(truth)
    return len(truth) / max(unseen_pixels, 1), wm.psnr(rendered, truth) if len(truth) else math.nan


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

    monkeypatch.setattr("lyra_assets.pipeline.write_profile", export_fails)
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


def test_cancelling_an_extension_as_the_add_on_does_changes_nothing(world):
    """The add-on's runner interrupts the pipeline's process group (SIGINT) once the asset stages are under
    way, with the new walkthrough written to its temporary folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from blender_addon import protocol
    from blender_addon.runner import PipelineError, PipelineRun

    folder = world["folder"]
    before = snapshot(folder)
    run = PipelineRun(protocol.extend_command(protocol.pipeline_command(protocol.PYTHON, sys.executable),
                                              protocol.ExtendRequest(str(folder), preset="look_around", frames=3)))
    stages = []
    while "fuse" not in stages and not run.ended:
        stages += [e.stage for e in run.poll(timeout=None) if isinstance(e, protocol.ProgressEvent)]
    run.cancel()
    with pytest.raises(PipelineError, match="cancelled"):
        run.outputs()
    run.close()
    assert "fuse" in stages and "save" in stages
    assert snapshot(folder) == before
    assert not [p for p in folder.rglob(".*")]
