"""The walkthrough folder: round trip, and clear errors naming the file for every broken folder."""
import shutil

import numpy as np
import pytest

from lyra_assets.errors import LyraAssetsError
from lyra_assets.walkthrough import Walkthrough
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


def test_round_trip_is_exact(saved):
    walk, folder = saved
    again = Walkthrough.load(folder)
    assert np.array_equal(again.frames, walk.frames)
    assert np.array_equal(again.depth, walk.depth)
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
