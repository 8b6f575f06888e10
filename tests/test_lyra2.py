"""The Lyra 2.0 generator: the files and command lines we hand Lyra, the checks that fail early, and a contract
test of the whole backend against a known scene.

The contract test runs the generator against a TEST DOUBLE of the Lyra-2 folder, built in a temporary folder
by `fake_lyra` below and reachable from nowhere else. Its two inference "scripts" accept exactly the flags of
Lyra's (argparse, no abbreviations) and check our files as Lyra reads them; then, instead of a video model,
the first ray casts the test's box room (scenes.BoxScene) along the trajectory at a known metric scale, and
the second writes what Lyra's reconstruction writes: Gaussian splats of that room (Lyra's PLY layout) and
cameras.npz (Lyra's keys), in a frame of its own (rotated and shifted, slightly noisy poses). A fake `torch`
there reports an 80 GB GPU to the environment probe. The backend's reader, alignment, CPU splat renderer and
the mesh stages must then reproduce the room.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import trimesh
from scenes import BoxScene, forward_path
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from test_splats import box_splats, needs_torch, write_lyra_ply  # the room's splats, as test_splats makes them

from lyra_assets.errors import LyraAssetsError
from lyra_assets.generators import create
from lyra_assets.generators.lyra2 import (
    LYRA_HEIGHT,
    LYRA_WIDTH,
    MODEL_LICENCE,
    Lyra2Generator,
    Lyra2Settings,
    first_frame,
    first_frame_intrinsics,
    generation_command,
    lyra_camera_path,
    reconstruction_command,
)
from lyra_assets.images import load_concept_image
from lyra_assets.presets import load_preset
from lyra_assets.splats import GaussianSplats, Similarity, read_ply
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, pixel_rays

TESTS = Path(__file__).resolve().parent
HFOV = 70.0
POSE_SCALE = 1.1
METRES_PER_UNIT = 4.0  # the test double's "estimated first-frame depth": one trajectory unit in metres
VIDEO_SIZE = (208, 120)  # the test double renders small frames (832:480) to stay fast; Lyra renders 832x480
RECON_FRAME = Similarity(1.0, Rotation.from_euler("xyz", [20, -35, 10], degrees=True).as_matrix(),
                         np.array([0.7, -0.4, 2.0]))  # metric, like ViPE's, but a frame of its own

# -- the TEST DOUBLE of the Lyra-2 folder -----------------------------------------------------------------

FAKE_TORCH = '''"""TEST DOUBLE (tests/test_lyra2.py): not torch. Shadows torch inside the fake Lyra-2 folder only, so
the generator's environment probe sees a GPU: LYRA_FAKE_GPU_BYTES sets its memory, LYRA_FAKE_NO_CUDA=1
hides it, LYRA_FAKE_TORCH_BROKEN=1 makes importing fail."""
import os

if os.environ.get("LYRA_FAKE_TORCH_BROKEN") == "1":
    raise ImportError("libcudart.so.12: cannot open shared object file (test double)")
__version__ = "0.0+testdouble"


class _Properties:
    name = "Test-double GPU"
    total_memory = int(os.environ.get("LYRA_FAKE_GPU_BYTES", "85000000000"))


class cuda:
    @staticmethod
    def is_available():
        return os.environ.get("LYRA_FAKE_NO_CUDA") != "1"

    @staticmethod
    def get_device_properties(index):
        return _Properties()
'''

FAKE_GENERATE = '''"""TEST DOUBLE of Lyra 2.0's lyra2_custom_traj_inference (tests/test_lyra2.py): checks the inputs
as Lyra reads them, then ray casts the test's box room along the trajectory instead of generating a video."""
import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

CONFIG = json.loads(Path(__file__).with_name("fake_config.json").read_text())
sys.path.insert(0, CONFIG["tests"])
from scenes import BoxScene  # noqa: E402

from lyra_assets.trajectory import CameraPath  # noqa: E402
from lyra_assets.walkthrough import write_preview_mp4  # noqa: E402

parser = argparse.ArgumentParser(allow_abbrev=False)
for flag in ("--input_image_path", "--trajectory_path", "--captions_path", "--experiment", "--checkpoint_dir",
             "--output_path"):
    parser.add_argument(flag, required=True)
parser.add_argument("--num_frames", type=int, required=True)
parser.add_argument("--pose_scale", type=float, default=1.1)
parser.add_argument("--use_dmd", action="store_true")
parser.add_argument("--num_retrieval_views", type=int, default=1)
args = parser.parse_args()
if CONFIG.get("fail_generate"):
    print("torch.OutOfMemoryError: CUDA out of memory (test double)", flush=True)
    sys.exit(1)

assert args.experiment == "lyra2", args.experiment
assert Path(args.checkpoint_dir).is_dir(), args.checkpoint_dir
n = args.num_frames
assert (n - 1) % 80 == 0 and n > 1, n
data = np.load(args.trajectory_path)
assert sorted(data.files) == ["image_height", "image_width", "intrinsics", "w2c"], data.files
w2c, K = data["w2c"], data["intrinsics"]
assert w2c.dtype == np.float32 and K.dtype == np.float32 and w2c.shape == (n, 4, 4) and K.shape == (n, 3, 3)
assert data["image_height"].dtype == np.int64 and data["image_width"].dtype == np.int64
assert np.allclose(w2c[0], np.eye(4), atol=1e-6), w2c[0]
first = cv2.imread(args.input_image_path)
assert first.shape == (int(data["image_height"]), int(data["image_width"]), 3) == (480, 832, 3), first.shape
captions = json.loads(Path(args.captions_path).read_text())
assert "0" in captions and all(int(k) == 0 or (int(k) - 1) % 80 == 0 for k in captions), captions

# Lyra moves the camera by the trajectory's translations times pose_scale, in units of its depth estimate.
c2w = np.linalg.inv(w2c.astype(np.float64))
c2w[:, :3, 3] *= args.pose_scale * CONFIG["metres_per_unit"]
width, height = CONFIG["video_size"]
K = K.astype(np.float64)
K[:, 0] *= width / 832
K[:, 1] *= height / 480
frames = BoxScene().render(CameraPath(c2w, K, width, height)).frames
out = Path(args.output_path)
out.mkdir(parents=True, exist_ok=True)
stem = Path(args.input_image_path).stem
np.save(out / f"{stem}.test_double_metric_c2w.npy", c2w)  # the test double's note to its reconstruction
for chunk in range(1, (n - 1) // 80 + 1):
    print(f"Generating chunk: 100%|##########| {chunk}/{(n - 1) // 80} [00:01<00:00]", flush=True)
write_preview_mp4(out / f"{stem}.mp4", frames, 16.0)
print(f"Saved video: {out / stem}.mp4", flush=True)
'''

FAKE_RECONSTRUCT = '''"""TEST DOUBLE of Lyra 2.0's vipe_da3_gs_recon (tests/test_lyra2.py): writes the test's splats and
its cameras, in a frame of its own, as Lyra's reconstruction writes them."""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np

CONFIG = json.loads(Path(__file__).with_name("fake_config.json").read_text())


def main(chunked: bool) -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--input_video_path", required=True)
    if chunked:
        for flag in ("--num_chunks", "--chunk_size", "--chunk_overlap"):
            parser.add_argument(flag, type=int, required=True)
    args = parser.parse_args()
    video = Path(args.input_video_path)
    assert video.is_file(), video
    c2w = np.load(video.with_name(f"{video.stem}.test_double_metric_c2w.npy"))
    rotation, translation = np.array(CONFIG["recon_rotation"]), np.array(CONFIG["recon_translation"])
    rng = np.random.default_rng(0)
    recon = c2w.copy()
    recon[:, :3, :3] = rotation @ c2w[:, :3, :3]
    recon[:, :3, 3] = c2w[:, :3, 3] @ rotation.T + translation + rng.normal(0, CONFIG["pose_noise_m"], (len(c2w), 3))
    out = video.with_name(f"{video.stem}_gs_ours")
    out.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).with_name("fake_scene.ply"), out / "reconstructed_scene.ply")
    n = len(c2w)
    K = np.tile(np.eye(3, dtype=np.float32), (n, 1, 1))
    w2c = np.linalg.inv(recon).astype(np.float32)
    np.savez(out / "cameras.npz", w2c_render=w2c, indices_da3=np.arange(0, n, 4), fps=np.array([16.0], np.float32),
             no_vipe=np.array([0], np.int32), w2c_vipe=w2c, intrinsics_vipe=K, w2c_da3=w2c[::4],
             intrinsics_da3=K[::4], indices_vipe=np.arange(n), use_da3_render_pose=np.array([1], np.int32))
    for step in range(1, 4):
        print(f"[vipe_da3_gs] step {step}/3", flush=True)
    (out / ".done").write_text("done\\n")


if __name__ == "__main__":
    main(chunked=False)
'''

FAKE_CHUNKED = '''"""TEST DOUBLE of Lyra 2.0's vipe_da3_chunked_gs_recon (tests/test_lyra2.py)."""
from lyra_2._src.inference.vipe_da3_gs_recon import main

main(chunked=True)
'''


def fake_lyra(folder: Path, scene_splats_ply: Path | None = None, packages: bool = True, **config) -> Path:
    """Build the TEST DOUBLE of a Lyra-2 folder (see the module docstring) and return it."""
    inference = folder / "lyra_2" / "_src" / "inference"
    inference.mkdir(parents=True)
    for package in (folder / "lyra_2", folder / "lyra_2" / "_src", inference):
        (package / "__init__.py").write_text('"""TEST DOUBLE package (tests/test_lyra2.py)."""\n')
    (inference / "lyra2_custom_traj_inference.py").write_text(FAKE_GENERATE)
    (inference / "vipe_da3_gs_recon.py").write_text(FAKE_RECONSTRUCT)
    (inference / "vipe_da3_chunked_gs_recon.py").write_text(FAKE_CHUNKED)
    settings = {"tests": str(TESTS), "metres_per_unit": METRES_PER_UNIT, "video_size": list(VIDEO_SIZE),
                "recon_rotation": RECON_FRAME.rotation.tolist(), "recon_translation": RECON_FRAME.translation.tolist(),
                "pose_noise_m": 0.003, **config}
    (inference / "fake_config.json").write_text(json.dumps(settings))
    if scene_splats_ply is not None:
        (inference / "fake_scene.ply").write_bytes(scene_splats_ply.read_bytes())
    (folder / "torch").mkdir()
    (folder / "torch" / "__init__.py").write_text(FAKE_TORCH)
    if packages:
        for name in ("flash_attn", "transformer_engine", "vipe_ext", "depth_anything_3", "moge"):
            (folder / name).mkdir()
            (folder / name / "__init__.py").write_text('"""TEST DOUBLE (tests/test_lyra2.py)."""\n')
    for checkpoint in ("model/model.pt", "text_encoder/negative_prompt.pt", "recon/model.pt"):
        (folder / "checkpoints" / checkpoint).parent.mkdir(parents=True, exist_ok=True)
        (folder / "checkpoints" / checkpoint).write_bytes(b"test double")
    return folder


def recon_scene_ply(path: Path) -> Path:
    """The room's splats in the reconstruction's frame, plus floaters pruning must remove, as Lyra writes them."""
    room = box_splats(BoxScene(), spacing=0.1)
    rng = np.random.default_rng(1)
    faint_means = rng.uniform(BoxScene().room_min, BoxScene().room_max, (300, 3))
    means = np.concatenate([room.means, faint_means, [[0.0, 0.0, 3.0]] * 3])
    n_extra = len(means) - len(room)
    extra_scales = np.concatenate([np.full((300, 3), np.log(0.05)), np.full((3, 3), np.log(2.0))])
    extra_logits = np.concatenate([np.full(300, -5.0), np.full(3, 3.0)])  # opacity 0.007; then huge and opaque
    world = GaussianSplats(means, np.concatenate([room.quats, np.tile([1.0, 0, 0, 0], (n_extra, 1))]),
                           np.concatenate([room.log_scales, extra_scales]),
                           np.concatenate([room.opacity_logits, extra_logits]),
                           np.concatenate([room.f_dc, np.zeros((n_extra, 3))]))
    write_lyra_ply(path, world.transformed(RECON_FRAME))
    return path


def metric_path(frames: int = 81) -> CameraPath:
    """The camera path in metres: a walk forward, swaying left and right."""
    return forward_path(frames=frames, distance=1.5, width=LYRA_WIDTH, height=LYRA_HEIGHT, hfov_deg=HFOV)


def concept_image(folder: Path) -> Path:
    """The room seen from the first camera, at 4:3 (so the crop to 832:480 matters)."""
    path = CameraPath(np.eye(4)[None], intrinsics_from_fov(HFOV, 400, 300), 400, 300)
    image = folder / "room.png"
    cv2.imwrite(str(image), BoxScene().render(path).frames[0][:, :, ::-1])
    return image


def clear_lyra_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings of the machine running the tests must not reach the generator or the test double."""
    for var in ("LYRA2_ROOT", "LYRA2_CHECKPOINTS", "LYRA2_PYTHON", "LYRA2_WORK_DIR", "LYRA_FAKE_GPU_BYTES",
                "LYRA_FAKE_NO_CUDA", "LYRA_FAKE_TORCH_BROKEN"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def no_lyra_environment(monkeypatch):
    clear_lyra_environment(monkeypatch)


def preset():
    return load_preset("walk_forward", overrides={"camera": {"hfov_deg": HFOV}})


# -- what we hand Lyra -----------------------------------------------------------------------------------


def test_trajectory_npz_follows_lyra_conventions(tmp_path):
    requested = forward_path(frames=470, distance=0.4)  # not 1 + 80k: rounded to the nearest, 481
    lyra, notes = lyra_camera_path(requested, HFOV, 1600, 900)
    lyra.to_lyra_npz(tmp_path / "trajectory.npz")
    with np.load(tmp_path / "trajectory.npz") as data:
        assert sorted(data.files) == ["image_height", "image_width", "intrinsics", "w2c"]
        w2c, K = data["w2c"], data["intrinsics"]
        assert w2c.dtype == np.float32 and w2c.shape == (481, 4, 4)
        assert K.dtype == np.float32 and K.shape == (481, 3, 3)
        assert data["image_height"].dtype == np.int64 and int(data["image_height"]) == 480
        assert data["image_width"].dtype == np.int64 and int(data["image_width"]) == 832
    assert np.array_equal(w2c[0], np.eye(4, dtype=np.float32))
    assert notes["resampled_to"] == 481 and notes["requested_frames"] == 470
    assert np.allclose(K, first_frame_intrinsics(HFOV, 1600, 900).astype(np.float32))
    # The last pose is still the requested end of the walk (w2c translations are in Lyra's units, as given).
    assert np.allclose(np.linalg.inv(w2c[-1].astype(np.float64)), requested.c2w[-1], atol=1e-5)


def test_captions_are_keyed_by_chunk_start(tmp_path):
    generator = Lyra2Generator(preset(), {})
    generator.set_text("a stone corridor at dusk", tmp_path / "concept.png")
    captions, source = generator.captions(481)
    assert sorted(captions) == [0, 81, 161, 241, 321, 401] and set(captions.values()) == {"a stone corridor at dusk"}
    assert source == "prompt"


def test_captions_from_a_file_next_to_the_image(tmp_path):
    generator = Lyra2Generator(preset(), {})
    generator.set_text(None, tmp_path / "concept.png")
    with pytest.raises(LyraAssetsError, match="needs a text prompt.*concept.txt"):
        generator.captions(161)
    (tmp_path / "concept.txt").write_text("a flooded crypt\n")
    assert generator.captions(161) == ({0: "a flooded crypt", 81: "a flooded crypt"}, str(tmp_path / "concept.txt"))
    generator.set_text("a sidecar prompt", tmp_path / "concept.png")
    with pytest.raises(LyraAssetsError, match="keep one"):
        generator.captions(161)
    (tmp_path / "concept.txt").unlink()
    (tmp_path / "concept.captions.json").write_text(json.dumps({"0": "a crypt", "81": "stairs going down"}))
    generator.set_text(None, tmp_path / "concept.png")
    assert generator.captions(161)[0] == {0: "a crypt", 81: "stairs going down"}
    (tmp_path / "concept.captions.json").write_text(json.dumps({"81": "stairs"}))
    with pytest.raises(LyraAssetsError, match="one for frame 0"):
        generator.captions(161)


@pytest.mark.parametrize("size", [(1000, 400), (300, 600), (832, 480)])
def test_first_frame_is_a_centre_crop_with_matching_intrinsics(size):
    width, height = size
    K = intrinsics_from_fov(HFOV, width, height)
    direction = np.array([0.12, -0.08, 1.0])  # a point of the scene, seen in the concept image
    u, v = (K @ direction)[:2] / direction[2]
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (int(u), int(v)), max(3, width // 100), (255, 255, 255), -1)
    frame = first_frame(image)
    assert frame.shape == (LYRA_HEIGHT, LYRA_WIDTH, 3)
    u1, v1 = (first_frame_intrinsics(HFOV, width, height) @ direction)[:2] / direction[2]
    rows, cols = np.nonzero(frame[..., 0] > 128)
    assert abs(cols.mean() + 0.5 - u1) < 2.5 and abs(rows.mean() + 0.5 - v1) < 2.5
    crop_width = min(width, height * LYRA_WIDTH / LYRA_HEIGHT)  # the widest 832:480 window
    assert first_frame_intrinsics(HFOV, width, height)[0, 0] == pytest.approx(K[0, 0] * LYRA_WIDTH / crop_width,
                                                                              rel=2e-3)


def test_command_lines_use_lyras_flags(tmp_path):
    work, checkpoints = tmp_path / "work", tmp_path / "Lyra-2" / "checkpoints" / "model"
    s = Lyra2Settings()
    assert generation_command(s, "/env/bin/python", checkpoints, work, 481) == [
        "/env/bin/python", "-m", "lyra_2._src.inference.lyra2_custom_traj_inference",
        "--input_image_path", str(work / "first_frame.png"), "--trajectory_path", str(work / "trajectory.npz"),
        "--captions_path", str(work / "captions.json"), "--experiment", "lyra2", "--checkpoint_dir", str(checkpoints),
        "--num_frames", "481", "--output_path", str(work / "out"), "--pose_scale", "1.1"]
    fast = Lyra2Settings(use_dmd=True, num_retrieval_views=3, pose_scale=0.8)
    assert generation_command(fast, "python", checkpoints, work, 161)[-5:] == [
        "--pose_scale", "0.8", "--use_dmd", "--num_retrieval_views", "3"]
    video = work / "out" / "first_frame.mp4"
    assert reconstruction_command(s, "python", video) == [
        "python", "-m", "lyra_2._src.inference.vipe_da3_gs_recon", "--input_video_path", str(video)]
    assert reconstruction_command(Lyra2Settings(chunked_reconstruction=True), "python", video) == [
        "python", "-m", "lyra_2._src.inference.vipe_da3_chunked_gs_recon", "--input_video_path", str(video),
        "--num_chunks", "2", "--chunk_size", "128", "--chunk_overlap", "10"]


def test_settings_come_from_the_sidecar_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LYRA2_ROOT", str(tmp_path / "env-lyra"))
    monkeypatch.setenv("LYRA2_PYTHON", "/opt/lyra/bin/python")
    generator = create("lyra2", preset(), {"root": str(tmp_path / "sidecar-lyra"), "use_dmd": True})
    assert generator.root == tmp_path / "sidecar-lyra" and generator.python == "/opt/lyra/bin/python"
    assert generator.checkpoints == tmp_path / "sidecar-lyra" / "checkpoints" / "model"
    assert generator.settings.use_dmd and generator.settings.pose_scale == 1.1
    assert generator.licence == MODEL_LICENCE and "research" in generator.licence and "Apache-2.0" in generator.licence
    assert "research use only" in generator.notice
    with pytest.raises(LyraAssetsError, match=r"concept.toml: \[lyra2\] unknown key 'pose_scal'"):
        create("lyra2", preset(), {"pose_scal": 1.0}, source="concept.toml")


# -- failing early ---------------------------------------------------------------------------------------


def test_fails_early_without_lyra(tmp_path):
    image = load_concept_image(concept_image(tmp_path))
    with pytest.raises(LyraAssetsError, match="Set LYRA2_ROOT"):
        Lyra2Generator(preset(), {}).survey(image)
    with pytest.raises(LyraAssetsError, match="lyra2_custom_traj_inference.py is missing"):
        Lyra2Generator(preset(), {"root": str(tmp_path)}).survey(image)


@pytest.mark.parametrize("missing, message", [
    ("checkpoints/model/model.pt", "no model checkpoints in .*huggingface-cli download nvidia/Lyra-2.0"),
    ("checkpoints/recon/model.pt", "recon/model.pt is missing; download"),
])
def test_fails_early_without_checkpoints(tmp_path, missing, message):
    root = fake_lyra(tmp_path / "Lyra-2")
    (root / missing).unlink()
    with pytest.raises(LyraAssetsError, match=message):
        Lyra2Generator(preset(), {"root": str(root)}).check_environment()


@pytest.mark.parametrize("variable, value, message", [
    ("LYRA_FAKE_NO_CUDA", "1", "sees no CUDA GPU; Lyra 2.0 needs an NVIDIA GPU with 80 GB"),
    ("LYRA_FAKE_GPU_BYTES", str(48 * 10**9), "has 48 GB; Lyra 2.0 needs 80 GB of GPU memory"),
    ("LYRA_FAKE_TORCH_BROKEN", "1", "cannot import torch .*libcudart.*set LYRA2_PYTHON"),
])
def test_fails_early_without_a_big_enough_gpu(tmp_path, monkeypatch, variable, value, message):
    root = fake_lyra(tmp_path / "Lyra-2")
    monkeypatch.setenv(variable, value)
    with pytest.raises(LyraAssetsError, match=message):
        Lyra2Generator(preset(), {"root": str(root)}).check_environment()


def test_fails_early_without_lyras_environment(tmp_path):
    root = fake_lyra(tmp_path / "Lyra-2", packages=False)
    with pytest.raises(LyraAssetsError, match="lacks Lyra's packages flash_attn, transformer_engine, vipe_ext"):
        Lyra2Generator(preset(), {"root": str(root)}).check_environment()
    with pytest.raises(LyraAssetsError, match="no Python at '/nonexistent/python'"):
        Lyra2Generator(preset(), {"root": str(root), "python": "/nonexistent/python"}).check_environment()


def test_a_failing_lyra_step_reports_its_last_lines(tmp_path):
    root = fake_lyra(tmp_path / "Lyra-2", fail_generate=True)
    generator = Lyra2Generator(preset(), {"root": str(root), "work_dir": str(tmp_path / "cache")})
    generator.set_text("a room", None)
    image = load_concept_image(concept_image(tmp_path))
    path = metric_path().scaled(1 / (POSE_SCALE * METRES_PER_UNIT))
    with pytest.raises(LyraAssetsError, match=r"(?s)`lyra2 generate` failed \(exit status 1\).*CUDA out of memory"
                                              r".*Full log: .*lyra2.log"):
        generator.generate(image, path, lambda *a: None)


# -- the contract test -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lyra_run(tmp_path_factory):
    """One generate() against the test double: (walkthrough, progress events, [lyra2] settings, image, path)."""
    folder = tmp_path_factory.mktemp("lyra2")
    root = fake_lyra(folder / "Lyra-2", recon_scene_ply(folder / "scene.ply"))
    image_path = concept_image(folder)
    image = load_concept_image(image_path)
    settings = {"root": str(root), "work_dir": str(folder / "cache"), "frame_stride": 10, "renderer": "cpu"}
    path = metric_path().scaled(1 / (POSE_SCALE * METRES_PER_UNIT))  # the preset's motion in Lyra's units
    events = []
    with pytest.MonkeyPatch.context() as monkeypatch:  # module-scoped: runs before the autouse fixture
        clear_lyra_environment(monkeypatch)
        generator = create("lyra2", preset(), settings)
        generator.set_text("an empty test room with a block on the floor", image_path)
        space = generator.survey(image)
        assert space.depth == 1.0 and space.clearance is None
        walk = generator.generate(image, path, lambda *event: events.append(event))
    return walk, events, settings, image, path


@needs_torch
def test_lyra_run_places_the_walkthrough_in_metres(lyra_run):
    walk, _, _, _, _ = lyra_run
    truth = metric_path()
    keep = np.arange(0, 81, 10)
    assert len(walk) == len(keep) and (walk.path.width, walk.path.height) == VIDEO_SIZE
    # Our path's frame (world = first camera), the reconstruction's metric scale: the true camera path.
    assert np.abs(walk.path.centres - truth.centres[keep]).max() < 0.02
    assert np.allclose(walk.path.c2w[:, :3, :3], truth.c2w[keep, :3, :3], atol=1e-6)
    alignment = walk.info["generator"]["lyra2"]["alignment"]
    assert alignment["metres_per_trajectory_unit"] == pytest.approx(POSE_SCALE * METRES_PER_UNIT, rel=0.01)
    assert alignment["method"] == "umeyama on camera centres" and alignment["max_rotation_error_deg"] < 1.0
    # The splats, carried into that frame and pruned of the test's floaters, are the room's again.
    room = box_splats(BoxScene(), spacing=0.1)
    assert len(walk.splats) == len(room)
    assert np.abs(np.sort(walk.splats.means, axis=0) - np.sort(room.means, axis=0)).max() < 0.03
    pruning = walk.info["generator"]["lyra2"]["pruning"]
    assert pruning["below_min_opacity"] == 300 and pruning["too_large"] == 3


@needs_torch
def test_lyra_run_depth_frames_and_observed(lyra_run):
    walk, _, _, _, _ = lyra_run
    truth = BoxScene().render(walk.path)
    relative = np.abs(walk.depth - truth.depth) / truth.depth
    covered = walk.depth > 0
    assert covered.mean() > 0.95
    assert np.median(relative[covered]) < 0.02 and np.percentile(relative[covered], 90) < 0.05
    assert np.abs(walk.frames.astype(int) - truth.frames).mean() < 12  # Lyra's video, through H.264
    assert walk.observed[0].all() and 0.2 < walk.observed[1:].mean() < 0.95
    assert walk.input_image.shape == (300, 400, 3)


@needs_torch
def test_lyra_run_records_licence_commands_and_progress(lyra_run):
    walk, events, _, _, _ = lyra_run
    info = walk.info["generator"]
    assert info["name"] == "lyra2" and info["licence"] == MODEL_LICENCE and info["notice"] == Lyra2Generator.notice
    lyra = info["lyra2"]
    assert lyra["renderer"] == "cpu" and lyra["frames_from"] == "video" and lyra["video_frames"] == 81
    assert lyra["cameras"] == "w2c_render (world-to-camera)" and lyra["environment"]["gpu"] == "Test-double GPU"
    assert lyra["commands"][0][2] == "lyra_2._src.inference.lyra2_custom_traj_inference"
    work = Path(lyra["work_dir"])
    # Lyra's inputs, as Lyra reads them (the test double checked them too).
    assert cv2.imread(str(work / "first_frame.png")).shape == (480, 832, 3)
    assert json.loads((work / "captions.json").read_text()) == {"0": "an empty test room with a block on the floor"}
    # Lyra's output lines reached progress as they came (tqdm's n/total drives the bar) and the log.
    assert ("lyra2 generate", 1, 1, "Generating chunk: 100%|##########| 1/1 [00:01<00:00]") in events
    assert any(e[0] == "lyra2 reconstruct" and "step 2/3" in e[3] for e in events)
    assert any(e[0] == "render splats" for e in events)
    assert "[vipe_da3_gs] step 3/3" in (work / "lyra2.log").read_text()


@needs_torch
def test_lyra_run_again_reuses_lyras_outputs(lyra_run):
    """Settings of our side only (which frames, whose colour) find Lyra's finished outputs: no GPU time."""
    walk, _, settings, image, path = lyra_run
    generator = create("lyra2", preset(), {**settings, "frame_stride": 40, "frames": "splats"})
    generator.set_text("an empty test room with a block on the floor", None)
    events = []
    again = generator.generate(image, path, lambda *event: events.append(event))
    work = walk.info["generator"]["lyra2"]["work_dir"]
    assert [e for e in events if e[0].startswith("lyra2")] == [
        ("lyra2 generate", 1, 1, f"reusing {work}/out/first_frame.mp4"),
        ("lyra2 reconstruct", 1, 1, f"reusing {work}/out/first_frame_gs_ours/.done")]
    assert again.info["generator"]["lyra2"]["walkthrough_frames"] == [0, 40, 80]
    assert np.array_equal(again.depth, walk.depth[[0, 4, 8]])
    truth = BoxScene().render(again.path)
    assert not np.array_equal(again.frames, walk.frames[[0, 4, 8]])  # the splats' colour, not the video's
    assert np.abs(again.frames.astype(int) - truth.frames).mean() < 25


def backproject(depth: np.ndarray, path: CameraPath, i: int) -> np.ndarray:
    """World points of frame i's depth map."""
    cam = pixel_rays(path.K[i], path.width, path.height) * depth[..., None]
    return cam.reshape(-1, 3) @ path.c2w[i, :3, :3].T + path.c2w[i, :3, 3]


def distances_to_room(points: np.ndarray) -> np.ndarray:
    """Metres from each point to the nearest surface of the test room (a dense sample of its true mesh)."""
    samples, _ = trimesh.sample.sample_surface_even(BoxScene().mesh(), 400_000, seed=0)
    return cKDTree(samples).query(points)[0]


@needs_torch
def test_lyra_run_becomes_a_glb_of_the_room(lyra_run, tmp_path):
    """Reader, alignment, CPU renderer and the unchanged mesh stages: the GLB's geometry is the room's.

    Tolerance: LOD0's vertices lie within 3 cm of a true surface at the median, 6 cm at the 95th percentile
    and 15 cm at most (measured: 2.3, 4.2 and 9.7 cm), and 95 % of what the first and last cameras see has
    LOD0's surface within 5 cm (measured: 96.8 %). The error is the splats' expected depth, which leans
    about 1 % of the distance towards the camera where a surface is seen at a grazing angle; fusing exact
    depth instead gives 0.8 cm at the median.
    """
    from lyra_assets.pipeline import mesh

    walk = lyra_run[0]
    walk.save(tmp_path / "room" / "walkthrough")
    result = mesh(tmp_path / "room" / "walkthrough", tmp_path / "out",
                  options={"assets": {"lod0_triangles": 20_000, "texture_size": 512}, "fusion": {"voxel_size_m": 0.03}})
    scene = trimesh.load(result.glb, force="scene")
    transform, geometry = scene.graph.get("room_LOD0")
    lod0 = scene.geometry[geometry].copy().apply_transform(transform)
    lod0.vertices *= [1, -1, -1]  # glTF (Y up) back to the walkthrough's OpenCV axes
    error = distances_to_room(lod0.vertices)
    assert np.median(error) < 0.03 and np.percentile(error, 95) < 0.06 and error.max() < 0.15
    # ... and complete: what the first and last cameras truly see has LOD0's surface within 5 cm.
    truth = BoxScene().render(walk.path)
    seen = np.concatenate([backproject(truth.depth[i], walk.path, i) for i in (0, len(walk) - 1)])
    surface, _ = trimesh.sample.sample_surface_even(lod0, 300_000, seed=0)
    assert np.mean(cKDTree(surface).query(seen)[0] < 0.05) > 0.95
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["generator"]["licence"] == MODEL_LICENCE
    # The splats next to the GLB, in its frame: Y up, metres.
    exported = read_ply(result.glb.with_name("room.splats.ply"))
    assert manifest["outputs"]["splats"]["file"] == "room.splats.ply"
    assert np.allclose(exported.means, walk.splats.means * [1, -1, -1], atol=1e-5)


@needs_torch
def test_lyra_run_walkthrough_folder_keeps_the_splats(lyra_run, tmp_path):
    from lyra_assets.walkthrough import Walkthrough

    walk = lyra_run[0]
    walk.save(tmp_path / "walkthrough")
    again = Walkthrough.load(tmp_path / "walkthrough")
    assert np.array_equal(again.splats.means, walk.splats.means)
    assert again.info["generator"]["licence"] == MODEL_LICENCE
