"""The splat path: the 3DGS PLY format, fitting a reconstruction's cameras to ours, the CPU renderer, pruning,
the observed mask and the Y-up export.

The renderer is checked against a direct evaluation written here (every Gaussian at every pixel, no tiles,
no culling), so tiling, sorting and culling cannot change a result unnoticed. `box_splats` (Gaussians
covering the test room of scenes.BoxScene) is shared with test_lyra2.py and bench/bench_splats.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from scenes import BoxScene, forward_path
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lyra_assets.errors import LyraAssetsError
from lyra_assets.export.splats import export_splats
from lyra_assets.generators.lyra2_cameras import read_lyra_cameras
from lyra_assets.splats import (
    SH_C0,
    GaussianSplats,
    Similarity,
    fit_cameras,
    observed_from_first_view,
    prune,
    read_ply,
    render_path,
    umeyama,
    write_ply,
)
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, pixel_rays

try:
    import torch
except ImportError:  # the renderer's one dependency (the `splats` extra); the rest needs numpy alone
    torch = None
else:
    # The suite runs one pytest worker per core (-n 2); torch's own thread pool on top of that oversubscribes
    # the cores, and its spinning threads then make the renderer ten times slower, not faster.
    torch.set_num_threads(1)
needs_torch = pytest.mark.skipif(torch is None, reason="the splat renderer needs torch: pip install '.[splats]'")

LYRA_PLY_PROPERTIES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                       "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def box_splats(scene: BoxScene, spacing: float = 0.1, opacity: float = 0.95) -> GaussianSplats:
    """Flat Gaussian discs on a grid over every surface of the scene, coloured by scene.colour.

    Each disc is axis-aligned (identity rotation) with standard deviation 0.6 * spacing in the surface's
    plane and 1 mm across it: neighbours overlap enough to cover the surface without holes.
    """
    faces = []  # (axis, position, lo, hi) of each rectangle, in the other two axes
    lo, hi = scene.room_min, scene.room_max
    for axis in range(3):
        for at in (lo[axis], hi[axis]):
            faces.append((axis, at, np.delete(lo, axis), np.delete(hi, axis)))
    for b_lo, b_hi in scene.blocks:
        for axis in range(3):
            for at in (b_lo[axis], b_hi[axis]):
                if axis == 1 and at == hi[1]:
                    continue  # the block's underside lies on the floor, out of sight
                faces.append((axis, at, np.delete(b_lo, axis), np.delete(b_hi, axis)))
    means, log_scales = [], []
    for axis, at, f_lo, f_hi in faces:
        u = np.arange(f_lo[0] + spacing / 2, f_hi[0], spacing)
        v = np.arange(f_lo[1] + spacing / 2, f_hi[1], spacing)
        uu, vv = (g.ravel() for g in np.meshgrid(u, v))
        points = np.insert(np.stack([uu, vv], 1), axis, at, axis=1)
        sizes = np.insert(np.full((len(points), 2), 0.6 * spacing), axis, 0.001, axis=1)
        means.append(points)
        log_scales.append(np.log(sizes))
    means = np.concatenate(means)
    n = len(means)
    f_dc = (scene.colour(means) - 0.5) / SH_C0
    return GaussianSplats(means, np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)), np.concatenate(log_scales),
                          np.full(n, np.log(opacity / (1 - opacity))), f_dc)


def write_lyra_ply(path, splats: GaussianSplats, byte_order: str = "<") -> None:
    """The PLY as Lyra's reconstruction writes it (Depth Anything 3's exporter): written here, independently
    of lyra_assets.splats.write_ply, so the reader is checked against the format rather than our writer."""
    records = np.zeros(len(splats), dtype=[(name, byte_order + "f4") for name in LYRA_PLY_PROPERTIES])
    columns = np.concatenate([splats.means, np.zeros((len(splats), 3)), splats.f_dc, splats.opacity_logits[:, None],
                              splats.log_scales, splats.quats], axis=1)
    for i, name in enumerate(LYRA_PLY_PROPERTIES):
        records[name] = columns[:, i]
    endian = {"<": "binary_little_endian", ">": "binary_big_endian"}[byte_order]
    header = f"ply\nformat {endian} 1.0\nelement vertex {len(splats)}\n"
    header += "".join(f"property float {name}\n" for name in LYRA_PLY_PROPERTIES) + "end_header\n"
    path.write_bytes(header.encode() + records.tobytes())


def random_splats(n: int, seed: int = 0) -> GaussianSplats:
    rng = np.random.default_rng(seed)
    return GaussianSplats(rng.normal(size=(n, 3)), rng.normal(size=(n, 4)), rng.normal(-1.5, 0.3, (n, 3)),
                          rng.normal(1.0, 1.0, n), rng.normal(size=(n, 3)))


def assert_same_splats(a: GaussianSplats, b: GaussianSplats, atol: float = 1e-6) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "f_dc"):
        assert np.allclose(getattr(a, name), getattr(b, name), atol=atol), name


def covariances(splats: GaussianSplats) -> np.ndarray:
    R = Rotation.from_quat(splats.quats, scalar_first=True).as_matrix()
    axes = R * splats.scales[:, None, :]
    return axes @ np.transpose(axes, (0, 2, 1))


# -- PLY -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_reads_the_ply_lyra_writes(tmp_path, byte_order):
    splats = random_splats(50)
    write_lyra_ply(tmp_path / "scene.ply", splats, byte_order)
    assert_same_splats(read_ply(tmp_path / "scene.ply"), splats)


def test_reads_ascii_ply_and_ignores_extra_properties(tmp_path):
    splats = random_splats(4)
    names = LYRA_PLY_PROPERTIES + ["f_rest_0"]
    rows = np.concatenate([splats.means, np.zeros((4, 3)), splats.f_dc, splats.opacity_logits[:, None],
                           splats.log_scales, splats.quats, np.ones((4, 1))], axis=1)
    text = "ply\nformat ascii 1.0\ncomment made by a test\nelement vertex 4\n"
    text += "".join(f"property float {n}\n" for n in names) + "end_header\n"
    text += "".join(" ".join(f"{v:.9g}" for v in row) + "\n" for row in rows)
    (tmp_path / "scene.ply").write_text(text)
    assert_same_splats(read_ply(tmp_path / "scene.ply"), splats, atol=1e-6)


def test_write_then_read_is_exact(tmp_path):
    splats = random_splats(100, seed=3)
    write_ply(tmp_path / "out.ply", splats)
    again = read_ply(tmp_path / "out.ply")
    for name in ("means", "quats", "log_scales", "opacity_logits", "f_dc"):
        assert np.array_equal(getattr(again, name), getattr(splats, name)), name


def test_bad_plys_name_the_problem(tmp_path):
    (tmp_path / "mesh.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
                                        b"property float x\nproperty float y\nproperty float z\nend_header\n"
                                        + np.zeros(3, "<f4").tobytes())
    with pytest.raises(LyraAssetsError, match="missing properties f_dc_0"):
        read_ply(tmp_path / "mesh.ply")
    write_lyra_ply(tmp_path / "cut.ply", random_splats(10))
    (tmp_path / "cut.ply").write_bytes((tmp_path / "cut.ply").read_bytes()[:-40])
    with pytest.raises(LyraAssetsError, match="truncated"):
        read_ply(tmp_path / "cut.ply")
    (tmp_path / "not.ply").write_text("hello")
    with pytest.raises(LyraAssetsError, match="not a PLY"):
        read_ply(tmp_path / "not.ply")


# -- transforms and alignment -------------------------------------------------------------------------


def random_similarity(seed: int, scale: float = 0.7) -> Similarity:
    return Similarity(scale, Rotation.random(random_state=seed).as_matrix(), np.array([0.4, -1.2, 2.5]))


def test_transformed_moves_means_and_covariances():
    splats, sim = random_splats(30, seed=1), random_similarity(2)
    moved = splats.transformed(sim)
    assert np.allclose(moved.means, splats.means @ sim.rotation.T * sim.scale + sim.translation, atol=1e-5)
    expected = sim.scale ** 2 * sim.rotation @ covariances(splats) @ sim.rotation.T
    assert np.allclose(covariances(moved), expected, atol=1e-5)
    assert np.array_equal(moved.f_dc, splats.f_dc) and np.array_equal(moved.opacity_logits, splats.opacity_logits)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    points, sim = rng.normal(size=(20, 3)), random_similarity(5, scale=2.5)
    fitted = umeyama(points, sim.apply(points))
    assert fitted.scale == pytest.approx(2.5)
    assert np.allclose(fitted.rotation, sim.rotation) and np.allclose(fitted.translation, sim.translation)


def recon_of(path_c2w: np.ndarray, sim: Similarity) -> np.ndarray:
    """The cameras as a reconstruction in another frame reports them: sim^-1 applied to our poses."""
    inverse = Similarity(1 / sim.scale, sim.rotation.T, -sim.rotation.T @ sim.translation / sim.scale)
    return inverse.apply_to_poses(path_c2w)


@pytest.mark.parametrize("motion", ["curve", "dolly", "turn"])
def test_fit_cameras_for_curved_straight_and_turning_paths(motion):
    c2w = forward_path(frames=11).c2w.copy()
    if motion == "dolly":  # centres on a line: Umeyama alone would leave the roll about it open
        c2w[:, :3, :3] = np.eye(3)
        c2w[:, 0, 3] = 0.0
    if motion == "turn":  # centres at one point: nothing to measure scale by
        c2w[:, :3, 3] = 0.0
    sim = random_similarity(7, scale=0.25)
    alignment = fit_cameras(recon_of(c2w, sim), c2w)
    assert ("umeyama" in alignment.method) == (motion == "curve")
    assert np.allclose(alignment.transform.rotation, sim.rotation, atol=1e-6)
    if motion != "turn":
        assert alignment.transform.scale == pytest.approx(0.25)
    assert alignment.rms_centre_error < 1e-6 and alignment.max_rotation_error_deg < 1e-3


def test_fit_cameras_refuses_a_reconstruction_walking_backwards():
    c2w = forward_path(frames=11).c2w.copy()
    c2w[:, :3, :3], c2w[:, 0, 3] = np.eye(3), 0.0
    recon = c2w.copy()
    recon[:, 2, 3] *= -1
    with pytest.raises(LyraAssetsError, match="move against the requested path"):
        fit_cameras(recon, c2w)


# -- the reconstruction's cameras.npz -------------------------------------------------------------------


def lyra_cameras_file(path, w2c: np.ndarray) -> None:
    """cameras.npz as Lyra's vipe_da3_gs_recon writes it (with ViPE)."""
    n = len(w2c)
    K = np.tile(intrinsics_from_fov(60, 832, 480).astype(np.float32), (n, 1, 1))
    np.savez(path, w2c_render=w2c.astype(np.float32), indices_da3=np.arange(0, n, 3), fps=np.array([16.0]),
             no_vipe=np.array([0]), w2c_vipe=w2c.astype(np.float32), intrinsics_vipe=K, w2c_da3=w2c[::3],
             intrinsics_da3=K[::3], indices_vipe=np.arange(n), use_da3_render_pose=np.array([1]))


def test_reads_lyra_cameras(tmp_path):
    c2w = forward_path(frames=9).c2w
    lyra_cameras_file(tmp_path / "cameras.npz", np.linalg.inv(c2w))
    cams = read_lyra_cameras(tmp_path / "cameras.npz", 9)
    assert cams.source.startswith("w2c_render")
    assert np.allclose(cams.c2w, c2w, atol=1e-6) and np.array_equal(cams.frames, np.arange(9))
    assert cams.K.shape == (9, 3, 3)


def test_reads_sparse_and_differently_named_poses(tmp_path):
    c2w = forward_path(frames=9).c2w
    np.savez(tmp_path / "sparse.npz", w2c_da3=np.linalg.inv(c2w[::4]), indices_da3=np.array([0, 4, 8]))
    cams = read_lyra_cameras(tmp_path / "sparse.npz", 9)
    assert np.array_equal(cams.frames, [0, 4, 8]) and np.allclose(cams.c2w, c2w[::4])
    np.savez(tmp_path / "c2w.npz", cam_c2w=c2w[:, :3, :4])
    assert np.allclose(read_lyra_cameras(tmp_path / "c2w.npz", 9).c2w, c2w)


@pytest.mark.parametrize("stored", ["c2w", "w2c"])
@pytest.mark.parametrize("motion", ["curve", "turn", "slide"])
def test_ambiguous_pose_names_are_decided_by_the_path(tmp_path, stored, motion):
    requested = forward_path(frames=9).c2w.copy()
    if motion == "turn":
        requested[:, :3, 3] = 0.0
    if motion == "slide":
        requested[:, :3, :3] = np.eye(3)
    recon = recon_of(requested, random_similarity(3, scale=2.0))
    np.savez(tmp_path / "cameras.npz", poses=recon if stored == "c2w" else np.linalg.inv(recon))
    cams = read_lyra_cameras(tmp_path / "cameras.npz", 9, requested)
    assert np.allclose(cams.c2w, recon)
    assert ("world-to-camera" if stored == "w2c" else "camera-to-world") in cams.source
    with pytest.raises(LyraAssetsError, match="does not say whether"):
        read_lyra_cameras(tmp_path / "cameras.npz", 9)


def test_cameras_without_poses_or_indices_are_refused(tmp_path):
    np.savez(tmp_path / "none.npz", fps=np.array([16.0]))
    with pytest.raises(LyraAssetsError, match="no camera poses found"):
        read_lyra_cameras(tmp_path / "none.npz", 9)
    np.savez(tmp_path / "short.npz", w2c=np.tile(np.eye(4), (5, 1, 1)))
    with pytest.raises(LyraAssetsError, match="5 poses for a 9-frame video"):
        read_lyra_cameras(tmp_path / "short.npz", 9)


# -- pruning -------------------------------------------------------------------------------------------


def test_prune_drops_faint_huge_and_broken_gaussians():
    splats = random_splats(200, seed=4)
    logits = splats.opacity_logits.copy()
    logits[:10] = -6.0  # opacity 0.0025
    log_scales = splats.log_scales.copy()
    log_scales[10:15] = np.log(50.0)
    means = splats.means.copy()
    means[15] = np.nan
    quats = splats.quats.copy()
    quats[16] = 0.0
    kept, stats = prune(GaussianSplats(means, quats, log_scales, logits, splats.f_dc), 0.05, 20.0)
    assert stats["below_min_opacity"] >= 10 and stats["too_large"] == 5 and stats["invalid"] == 2
    assert len(kept) == stats["kept"] == 200 - stats["below_min_opacity"] - 5 - 2
    assert kept.opacities.min() >= 0.05 and kept.scales.max() <= stats["max_scale"]


# -- rendering -----------------------------------------------------------------------------------------


def reference_render(splats: GaussianSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int):
    """Every Gaussian at every pixel centre, front to back, in float64: the 3DGS image formation model."""
    cam = splats.means @ w2c[:3, :3].T + w2c[:3, 3]
    order = np.argsort(cam[:, 2], kind="stable")
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rgb, acc_z, acc_z2 = np.zeros((height, width, 3)), np.zeros((height, width)), np.zeros((height, width))
    T = np.ones((height, width))
    done = np.zeros((height, width), bool)
    cov_world = covariances(splats)
    for i in order:
        x, y, z = cam[i]
        if z <= 0.01:
            continue
        tx = z * np.clip(x / z, -(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
        ty = z * np.clip(y / z, -(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy)
        J = np.array([[fx / z, 0, -fx * tx / z ** 2], [0, fy / z, -fy * ty / z ** 2]])
        cov = J @ w2c[:3, :3] @ cov_world[i] @ w2c[:3, :3].T @ J.T + 0.3 * np.eye(2)
        conic = np.linalg.inv(cov)
        dx, dy = u - (fx * x / z + cx), v - (fy * y / z + cy)
        sigma = 0.5 * (conic[0, 0] * dx ** 2 + conic[1, 1] * dy ** 2) + conic[0, 1] * dx * dy
        alpha = np.minimum(0.999, splats.opacities[i] * np.exp(-sigma))
        alpha[(sigma < 0) | (alpha < 1 / 255) | done] = 0.0
        after = T * (1 - alpha)
        stop = after <= 1e-4
        done |= stop & (alpha > 0)
        alpha[stop] = 0.0
        rgb += (alpha * T)[..., None] * splats.colours[i]
        acc_z += alpha * T * z
        acc_z2 += alpha * T * z * z
        T = np.where(stop, T, after)
    return rgb, 1 - T, acc_z, acc_z2


@needs_torch
def test_cpu_renderer_matches_a_direct_evaluation():
    rng = np.random.default_rng(11)
    n = 150
    means = np.c_[rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n), rng.uniform(1.0, 4.0, n)]
    means[:5, 2] = -1.0  # behind the camera
    splats = GaussianSplats(means, rng.normal(size=(n, 4)), rng.normal(-2.0, 0.5, (n, 3)),
                            rng.normal(1.5, 1.5, n), rng.normal(size=(n, 3)))
    width, height = 53, 37  # not whole tiles
    path = CameraPath(np.eye(4)[None], intrinsics_from_fov(70, width, height), width, height)
    out = render_path(splats, path, "cpu", min_alpha=0.5, max_depth_spread=0.25)  # random depths spread wide
    rgb, alpha, acc_z, acc_z2 = reference_render(splats, path.K[0], path.w2c[0], width, height)
    assert out.renderer == "cpu"
    assert np.abs(out.alpha[0] - alpha).max() < 1e-4
    assert np.abs(out.frames[0].astype(float) - np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)).max() <= 1
    mean_z = acc_z / np.maximum(alpha, 1e-12)
    spread = np.sqrt(np.maximum(acc_z2 / np.maximum(alpha, 1e-12) - mean_z ** 2, 0))
    expected_depth = np.where((alpha >= 0.5) & (spread <= 0.25 * mean_z), mean_z, 0)
    decided = np.abs(spread - 0.25 * mean_z) > 1e-3  # float32 and float64 may fall either side of the line
    assert np.abs(out.depth[0] - expected_depth)[decided].max() < 1e-4
    assert (out.depth[0] == 0).any() and (out.depth[0] > 0).any()  # both cases are exercised


@needs_torch
def test_renders_the_depth_and_colour_of_a_surface():
    scene = BoxScene(blocks=[])
    splats = box_splats(scene, spacing=0.1)
    path = forward_path(frames=3, width=96, height=64)
    truth = scene.render(path)
    out = render_path(splats, path, "cpu")
    assert out.alpha.min() > 0.9  # a closed room: every pixel covered
    # Facing the camera, the discs' centres lie at the surface's depth: exact, away from the wall's edges.
    back_wall = ndimage.binary_erosion(np.abs(truth.depth[0] - scene.room_max[2]) < 1e-6, iterations=3)
    assert np.abs(out.depth[0][back_wall] - truth.depth[0][back_wall]).max() < 1e-3
    # Seen at an angle, expected depth (of the Gaussians' centres, as gsplat renders it) leans towards the
    # camera by about a pixel's footprint along the surface: 2 % at this size. Colour is the discs' blend.
    relative = (out.depth - truth.depth) / truth.depth
    assert np.median(np.abs(relative)) < 0.03 and np.percentile(np.abs(relative), 95) < 0.06
    assert np.corrcoef(out.frames.ravel(), truth.frames.ravel())[0, 1] > 0.85
    assert np.abs((out.frames.astype(float) - truth.frames).mean(axis=(0, 1, 2))).max() < 4


@needs_torch
def test_silhouettes_get_no_depth_rather_than_a_blend():
    """A block in front of the back wall: no pixel may get a depth between the two, where nothing is."""
    scene = BoxScene()
    path = CameraPath(np.eye(4)[None], intrinsics_from_fov(60, 96, 64), 96, 64)
    out = render_path(box_splats(scene, spacing=0.1), path, "cpu")
    truth = scene.render(path).depth[0]
    error = np.abs(out.depth[0] - truth) / truth
    kept = out.depth[0] > 0
    assert kept.mean() > 0.9 and np.percentile(error[kept], 99) < 0.08
    unblended = render_path(box_splats(scene, spacing=0.1), path, "cpu", max_depth_spread=np.inf).depth[0]
    assert (np.abs(unblended - truth) / truth).max() > 0.15  # without the check, silhouettes do blend


@needs_torch
def test_nothing_in_view_renders_black_with_unknown_depth():
    path = CameraPath(np.eye(4)[None], intrinsics_from_fov(60, 32, 32), 32, 32)
    behind = GaussianSplats(np.array([[0.0, 0.0, -2.0]]), [[1, 0, 0, 0]], np.log([[0.5, 0.5, 0.5]]), [3.0],
                            [[1.0, 1.0, 1.0]])
    out = render_path(behind, path, "cpu")
    assert not out.frames.any() and not out.depth.any() and not out.alpha.any()


@needs_torch
def test_asking_for_gsplat_without_cuda_says_what_to_install():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: gsplat may well work here")
    path = CameraPath(np.eye(4)[None], intrinsics_from_fov(60, 32, 32), 32, 32)
    with pytest.raises(LyraAssetsError, match=r"lyra-assets\[gpu\]"):
        render_path(random_splats(3), path, "gsplat")


# -- observed mask and export ---------------------------------------------------------------------------


def test_observed_marks_what_the_first_frame_saw():
    scene = BoxScene()
    c2w = np.repeat(np.eye(4)[None], 2, axis=0)
    c2w[1, :3, :3] = Rotation.from_euler("y", 30, degrees=True).as_matrix()  # turned right by 30 degrees
    path = CameraPath(c2w, intrinsics_from_fov(60, 64, 48), 64, 48)
    walk = scene.render(path)
    observed = observed_from_first_view(walk.depth, path)
    assert observed[0].all()
    # Turning on the spot hides nothing, so frame 1 saw what frame 0 saw exactly where its pixels' rays fall
    # inside frame 0's image: about its left half.
    rays = pixel_rays(path.K[1], 64, 48) @ c2w[1, :3, :3].T
    u = path.K[0, 0, 0] * rays[..., 0] / rays[..., 2] + path.K[0, 0, 2]
    v = path.K[0, 1, 1] * rays[..., 1] / rays[..., 2] + path.K[0, 1, 2]
    in_first = (rays[..., 2] > 0) & (u >= 0) & (u < 64) & (v >= 0) & (v < 48)
    assert 0.3 < in_first.mean() < 0.5
    assert (observed[1] == in_first).mean() > 0.99


def test_export_writes_gltf_axes(tmp_path):
    splats = random_splats(20, seed=9)
    export_splats(splats, tmp_path / "asset.splats.ply")
    again = read_ply(tmp_path / "asset.splats.ply")
    flip = np.diag([1.0, -1.0, -1.0])
    assert np.allclose(again.means, splats.means * [1, -1, -1], atol=1e-6)
    assert np.allclose(covariances(again), flip @ covariances(splats) @ flip, atol=1e-5)
