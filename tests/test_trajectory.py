import json
import math

import numpy as np
import pytest

from lyra_assets.errors import LyraAssetsError
from lyra_assets.trajectory import (CameraPath, interpolate_pose, intrinsics_from_fov, lyra_frame_count,
                                    pixel_rays, project, read_lyra_captions, write_lyra_captions, yaw_pose)


def test_known_point_projects_to_expected_pixel():
    K = intrinsics_from_fov(90.0, 800, 600)  # f = 400, principal point (400, 300)
    assert K[0, 0] == pytest.approx(400.0) and K[0, 2] == 400.0 and K[1, 2] == 300.0
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 0.0, 0.0]  # camera one metre to the right of the world origin
    uv, z = project(K, np.linalg.inv(pose), np.array([[2.0, -0.5, 4.0]]))
    # camera frame point (1, -0.5, 4): u = 400 * 1/4 + 400, v = 400 * -0.5/4 + 300
    assert z[0] == pytest.approx(4.0)
    assert uv[0] == pytest.approx([500.0, 250.0])


def test_pixel_rays_hit_pixel_centres():
    K = intrinsics_from_fov(60.0, 64, 48)
    rays = pixel_rays(K, 64, 48)
    uv, _ = project(K, np.eye(4), rays[10, 20][None] * 3.0)
    assert uv[0] == pytest.approx([20.5, 10.5])  # centre of column 20, row 10


def _random_path(n=17, seed=3):
    rng = np.random.default_rng(seed)
    poses = [np.eye(4)] + [yaw_pose(rng.uniform(-1, 1), rng.normal(size=3)) for _ in range(1, n)]
    K = np.stack([intrinsics_from_fov(55 + i, 832, 480) for i in range(n)])
    return CameraPath(np.stack(poses), K, 832, 480)


def test_lyra_npz_layout_and_round_trip_bit_for_bit(tmp_path):
    path = _random_path()
    path.to_lyra_npz(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as a:
        assert set(a.files) == {"w2c", "intrinsics", "image_height", "image_width"}
        assert a["w2c"].dtype == np.float32 and a["w2c"].shape == (17, 4, 4)
        assert a["intrinsics"].dtype == np.float32 and a["intrinsics"].shape == (17, 3, 3)
        assert a["image_height"].dtype == np.int64 and int(a["image_height"]) == 480
        assert a["image_width"].dtype == np.int64 and int(a["image_width"]) == 832
        assert np.array_equal(a["w2c"][0], np.eye(4, dtype=np.float32))
        first = {k: a[k] for k in a.files}
    CameraPath.from_lyra_npz(tmp_path / "a.npz").to_lyra_npz(tmp_path / "b.npz")
    with np.load(tmp_path / "b.npz") as b:
        for key, value in first.items():
            assert b[key].dtype == value.dtype
            assert b[key].tobytes() == value.tobytes(), key


def test_lyra_npz_written_by_another_tool_round_trips(tmp_path):
    w2c = np.linalg.inv(_random_path(9, seed=5).c2w).astype(np.float32)
    K = np.repeat(intrinsics_from_fov(60, 832, 480)[None], 9, 0).astype(np.float32)
    np.savez(tmp_path / "lyra.npz", w2c=w2c, intrinsics=K, image_height=np.array(480), image_width=np.array(832))
    CameraPath.from_lyra_npz(tmp_path / "lyra.npz").to_lyra_npz(tmp_path / "ours.npz")
    with np.load(tmp_path / "ours.npz") as ours:
        assert ours["w2c"].tobytes() == w2c.tobytes()
        assert ours["intrinsics"].tobytes() == K.tobytes()


@pytest.mark.parametrize("bad", [
    {"w2c": np.zeros((4, 3, 4)), "intrinsics": np.zeros((4, 3, 3))},
    {"w2c": np.zeros((4, 4, 4)), "intrinsics": np.zeros((3, 3, 3))},
    {"w2c": np.zeros((4, 4, 4))},
])
def test_lyra_npz_with_wrong_shapes_is_refused(tmp_path, bad):
    arrays = {"image_height": np.array(480), "image_width": np.array(832), **bad}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(LyraAssetsError, match="bad.npz"):
        CameraPath.from_lyra_npz(tmp_path / "bad.npz")


def test_not_an_npz_is_refused(tmp_path):
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(LyraAssetsError, match="not a readable"):
        CameraPath.from_lyra_npz(tmp_path / "t.npz")


def test_captions_keyed_by_chunk_start(tmp_path):
    write_lyra_captions(tmp_path / "captions.json", "a corridor", 241)
    raw = json.loads((tmp_path / "captions.json").read_text())
    assert list(raw) == ["0", "81", "161"]
    assert read_lyra_captions(tmp_path / "captions.json") == {0: "a corridor", 81: "a corridor", 161: "a corridor"}


def test_lyra_frame_rule():
    assert [lyra_frame_count(n) for n in (2, 81, 100, 121, 130, 241, 481)] == [81, 81, 81, 161, 161, 241, 481]
    path = _random_path(9).with_lyra_frame_count()
    assert len(path) == 81
    assert np.allclose(path.c2w[0], np.eye(4)) and np.allclose(path.c2w[-1], _random_path(9).c2w[-1])


def test_slerp_halfway_and_orthonormal():
    a, b = np.eye(4), yaw_pose(math.radians(90), np.array([2.0, 0, 0]))
    mid = interpolate_pose(a, b, 0.5)
    assert np.allclose(mid[:3, :3], yaw_pose(math.radians(45), np.zeros(3))[:3, :3])
    assert np.allclose(mid[:3, 3], [1.0, 0, 0])
    assert np.allclose(mid[:3, :3] @ mid[:3, :3].T, np.eye(3))
