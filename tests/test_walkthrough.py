"""The walkthrough folder: round trip, and clear errors naming the file for every broken folder."""
import dataclasses
import json
import shutil

import numpy as np
import pytest

from lyra_assets.errors import LyraAssetsError
from lyra_assets.pipeline import _with_walkthrough_saved
from lyra_assets.progress import silent
from lyra_assets.walkthrough import DEPTH_RELATIVE_PRECISION, Walkthrough
from scenes import BoxScene, forward_path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w") / "walkthrough"
    walk = BoxScene().render(forward_path(frames=5, width=64, height=48))
    walk.save(folder)
    return walk, folder


def _copy(saved, tmp_path):
    target = tmp_path / "walkthrough"
    shutil.copytree(saved[1], target)
    return target


def test_round_trip_is_exact_but_for_depth_precision(saved):
    walk, folder = saved
    again = Walkthrough.load(folder)
    assert np.array_equal(again.frames, walk.frames)
    assert np.allclose(again.depth, walk.depth, rtol=DEPTH_RELATIVE_PRECISION, atol=0)
    assert np.array_equal(again.observed, walk.observed)
    assert np.allclose(again.path.c2w, walk.path.c2w, atol=1e-6)
    assert again.info["generator"]["name"] == "test-boxscene"


def test_saving_over_an_existing_folder_needs_force(saved, tmp_path):
    target = _copy(saved, tmp_path)
    with pytest.raises(LyraAssetsError, match="already exists; pass --force"):
        saved[0].save(target)
    saved[0].save(target, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walkthrough"]  # no temporary folders left


@pytest.mark.parametrize("missing", ["manifest.json", "trajectory.npz", "depth.npz", "frames", "input.png"])
def test_missing_files_are_named(saved, tmp_path, missing):
    target = _copy(saved, tmp_path)
    victim = target / missing
    shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    with pytest.raises(LyraAssetsError, match=missing.replace(".", r"\.")):
        Walkthrough.load(target)


def test_mismatched_frame_count(saved, tmp_path):
    target = _copy(saved, tmp_path)
    (target / "frames" / "000004.png").unlink()
    with pytest.raises(LyraAssetsError, match="4 frames but trajectory.npz has 5 cameras"):
        Walkthrough.load(target)


@pytest.mark.parametrize("poison, message", [
    (np.nan, "NaN, infinite or negative"), (np.inf, "NaN, infinite or negative"),
    (-1.0, "NaN, infinite or negative"), ("zeros", "no valid depth at all"), ("shape", "expected"),
])
def test_bad_depth_is_named(saved, tmp_path, poison, message):
    target = _copy(saved, tmp_path)
    depth = saved[0].depth.copy()
    if poison == "zeros":
        depth[:] = 0
    elif poison == "shape":
        depth = depth[:, :10]
    else:
        depth[2, 5, 5] = poison
    np.savez(target / "depth.npz", depth=depth)
    with pytest.raises(LyraAssetsError, match="depth.npz.*" + message):
        Walkthrough.load(target)


def test_not_a_folder(tmp_path):
    with pytest.raises(LyraAssetsError, match="not a walkthrough folder"):
        Walkthrough.load(tmp_path / "nothing")


def test_depth_is_stored_as_float16_within_the_stated_precision(saved):
    walk, folder = saved
    with np.load(folder / "depth.npz") as data:
        assert data["depth"].dtype == np.float16
    again = Walkthrough.load(folder)
    assert again.depth.dtype == np.float32
    assert np.array_equal(again.depth == 0, walk.depth == 0)
    assert np.all(np.abs(again.depth - walk.depth) <= DEPTH_RELATIVE_PRECISION * walk.depth)


def test_depth_beyond_float16_range_stays_float32(saved, tmp_path):
    walk = saved[0]
    far = dataclasses.replace(walk, depth=walk.depth * 100_000)  # hundreds of kilometres
    far.save(tmp_path / "far")
    again = Walkthrough.load(tmp_path / "far")
    assert np.array_equal(again.depth, far.depth)


def test_version_1_folders_with_float32_depth_still_load(saved, tmp_path):
    walk = saved[0]
    target = _copy(saved, tmp_path)
    np.savez_compressed(target / "depth.npz", depth=walk.depth)  # what version 1 wrote
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert np.array_equal(Walkthrough.load(target).depth, walk.depth)


def test_a_newer_format_is_refused_with_what_to_do(saved, tmp_path):
    target = _copy(saved, tmp_path)
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(LyraAssetsError, match="format version 99.*update lyra-assets"):
        Walkthrough.load(target)


def test_background_save_writes_the_same_folder(saved, tmp_path):
    walk = saved[0]
    assert walk.save_in_background(tmp_path / "walkthrough").result() == tmp_path / "walkthrough"
    assert np.array_equal(Walkthrough.load(tmp_path / "walkthrough").frames, walk.frames)


def test_a_failing_background_writer_surfaces_in_build(saved, tmp_path):
    walk = saved[0]
    (tmp_path / "blocked").write_text("a file where the output folder should go")
    with pytest.raises(LyraAssetsError, match="could not write the walkthrough"):
        _with_walkthrough_saved(walk, tmp_path / "blocked" / "walkthrough", False, silent, lambda: "asset")


def test_a_stage_error_wins_and_the_walkthrough_is_still_saved(saved, tmp_path):
    def failing_stage():
        raise LyraAssetsError("fusion found no surface")

    with pytest.raises(LyraAssetsError, match="fusion found no surface"):
        _with_walkthrough_saved(saved[0], tmp_path / "walkthrough", False, silent, failing_stage)
    assert Walkthrough.load(tmp_path / "walkthrough").frames.shape == saved[0].frames.shape
