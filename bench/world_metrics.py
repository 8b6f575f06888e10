"""World-quality metrics for bench_world.py: depth, novel views, geometry and revisits, against ground truth.

Plain numpy/scipy/scikit-image (plus a small numba z-buffer), independent of lyra_assets so the tests can pin
every number on hand-computable cases. Conventions are the project's: OpenCV camera axes (x right, y down,
z forward), camera-to-world 4x4 poses, intrinsics K in pixels, the centre of pixel (col, row) at
(col + 0.5, row + 0.5), depth in metres along the camera's z axis (inf or 0 where there is no surface).
"""
from __future__ import annotations

import math
from pathlib import Path

import numba
import numpy as np
import trimesh
from scipy.spatial import cKDTree
from skimage.metrics import structural_similarity

# glTF (x right, y up, z backward) and OpenCV (x right, y down, z forward) differ by a 180-degree turn about x:
# lyra_assets/export/gltf.py multiplies by this on export, and it is its own inverse.
GLTF_TO_OPENCV = np.array([1.0, -1.0, -1.0])
NEAR = 0.05  # metres: the rasteriser clips triangles at this camera depth
PATH_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


# -- depth ----------------------------------------------------------------------------------------------------


def depth_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AbsRel and delta<1.25, metric and after scaling by the ratio of medians, over pixels where both have
    depth (truth finite and > 0, prediction > 0); `coverage` is the share of true pixels the prediction has."""
    valid_truth = np.isfinite(truth) & (truth > 0)
    valid = valid_truth & np.isfinite(pred) & (pred > 0)
    out = {"coverage": float(valid.sum() / max(valid_truth.sum(), 1))}
    if not valid.any():
        return {**out, "abs_rel": math.nan, "delta1": math.nan, "abs_rel_median": math.nan,
                "delta1_median": math.nan, "median_scale": math.nan}
    p, g = pred[valid].astype(np.float64), truth[valid].astype(np.float64)
    scale = float(np.median(g) / np.median(p))

    def scores(x: np.ndarray) -> tuple[float, float]:
        return float(np.mean(np.abs(x - g) / g)), float(np.mean(np.maximum(x / g, g / x) < 1.25))

    out["abs_rel"], out["delta1"] = scores(p)
    out["abs_rel_median"], out["delta1_median"] = scores(p * scale)
    out["median_scale"] = scale
    return out


# -- images ---------------------------------------------------------------------------------------------------


def psnr(image: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of 8-bit RGB images over the masked pixels: inf when identical, nan when the mask is empty."""
    err = (image.astype(np.float64) - truth.astype(np.float64)) ** 2
    if mask is not None:
        if not mask.any():
            return math.nan
        err = err[mask]
    mse = float(err.mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(image: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (scikit-image, 7x7 windows, per channel) over the masked pixels; nan when the mask is empty."""
    _, full = structural_similarity(image, truth, channel_axis=2, data_range=255, full=True)
    full = full.mean(axis=2)
    if mask is None:
        return float(full.mean())
    return float(full[mask].mean()) if mask.any() else math.nan


def path_indices(n_frames: int, fractions=PATH_FRACTIONS) -> list[int]:
    """The frames at the given fractions of the path, rounded half up (0.25 of 9 frames is frame 2)."""
    return [math.floor(f * (n_frames - 1) + 0.5) for f in fractions]


# -- what frame 0 saw -------------------------------------------------------------------------------------------


def backproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points of a depth map (through pixel centres)."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    cam = rays * depth[..., None]
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def unseen_mask(depth_k: np.ndarray, c2w_k: np.ndarray, depth_0: np.ndarray, c2w_0: np.ndarray, K: np.ndarray,
                rel_tol: float = 0.03, abs_tol: float = 0.05) -> np.ndarray:
    """Pixels of frame k showing what frame 0 did not see: outside frame 0's image or hidden from it, by
    reprojecting frame k's true depth into camera 0 and comparing with frame 0's true depth there. Sky
    (inf or 0) counts as seen where its direction was in frame 0's view and was sky there too."""
    surface_k = np.isfinite(depth_k) & (depth_k > 0)
    surface_0 = np.isfinite(depth_0) & (depth_0 > 0)
    points = backproject(np.where(surface_k, depth_k, 1e6), K, c2w_k)  # sky: a point far along the ray
    w2c0 = np.linalg.inv(c2w_0)
    cam = points @ w2c0[:3, :3].T + w2c0[:3, 3]
    z = cam[..., 2]
    h, w = depth_0.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        col = np.floor(K[0, 0] * cam[..., 0] / z + K[0, 2])
        row = np.floor(K[1, 1] * cam[..., 1] / z + K[1, 2])
    inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    ci, ri = np.where(inside, col, 0).astype(int), np.where(inside, row, 0).astype(int)
    same_surface = surface_k & surface_0[ri, ci] & (np.abs(depth_0[ri, ci] - z) <= rel_tol * z + abs_tol)
    same_sky = ~surface_k & ~surface_0[ri, ci]
    return ~(inside & (same_surface | same_sky))


# -- meshes: a small perspective z-buffer -------------------------------------------------------------------------


@numba.njit(cache=True)
def _rasterise(cam, faces, fx, fy, cx, cy, width, height, near, zbuf, tri_buf, bary_buf):
    """Z-buffer at pixel centres with perspective-correct barycentrics; triangles clipped at z = near."""
    poly = np.empty((4, 3))
    pbary = np.empty((4, 3))
    for t in range(len(faces)):
        # Clip the triangle against the near plane (Sutherland-Hodgman, one plane): at most 4 corners.
        n = 0
        for i in range(3):
            j = (i + 1) % 3
            a, b = cam[faces[t, i]], cam[faces[t, j]]
            if a[2] >= near:
                poly[n] = a
                pbary[n] = 0.0
                pbary[n, i] = 1.0
                n += 1
            if (a[2] >= near) != (b[2] >= near):
                s = (near - a[2]) / (b[2] - a[2])
                poly[n] = a + s * (b - a)
                pbary[n] = 0.0
                pbary[n, i] = 1.0 - s
                pbary[n, j] = s
                n += 1
        for k in range(1, n - 1):  # fan
            idx = (0, k, k + 1)
            px = np.empty(3)
            py = np.empty(3)
            for m in range(3):
                p = poly[idx[m]]
                px[m] = fx * p[0] / p[2] + cx
                py[m] = fy * p[1] / p[2] + cy
            area = (px[1] - px[0]) * (py[2] - py[0]) - (px[2] - px[0]) * (py[1] - py[0])
            if abs(area) < 1e-12:
                continue
            x0 = max(math.ceil(min(px[0], px[1], px[2]) - 0.5), 0)
            x1 = min(math.floor(max(px[0], px[1], px[2]) - 0.5), width - 1)
            y0 = max(math.ceil(min(py[0], py[1], py[2]) - 0.5), 0)
            y1 = min(math.floor(max(py[0], py[1], py[2]) - 0.5), height - 1)
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    qx, qy = x + 0.5, y + 0.5
                    w0 = ((px[1] - qx) * (py[2] - qy) - (px[2] - qx) * (py[1] - qy)) / area
                    w1 = ((px[2] - qx) * (py[0] - qy) - (px[0] - qx) * (py[2] - qy)) / area
                    w2 = 1.0 - w0 - w1
                    if w0 < -1e-9 or w1 < -1e-9 or w2 < -1e-9:
                        continue
                    # 1/z is linear in screen space; attributes are weighted by w_i / z_i.
                    a0, a1, a2 = w0 / poly[idx[0], 2], w1 / poly[idx[1], 2], w2 / poly[idx[2], 2]
                    inv_z = a0 + a1 + a2
                    z = 1.0 / inv_z
                    if z < zbuf[y, x]:
                        zbuf[y, x] = z
                        tri_buf[y, x] = t
                        for c in range(3):
                            bary_buf[y, x, c] = (a0 * pbary[idx[0], c] + a1 * pbary[idx[1], c]
                                                 + a2 * pbary[idx[2], c]) / inv_z


def rasterise(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int,
              height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A triangle mesh (world metres) seen by one camera: depth (H, W) with inf where empty, the triangle
    index per pixel (-1 where empty) and the barycentric weights there (H, W, 3)."""
    w2c = np.linalg.inv(c2w)
    cam = np.ascontiguousarray(np.asarray(vertices, np.float64) @ w2c[:3, :3].T + w2c[:3, 3])
    zbuf = np.full((height, width), np.inf)
    tri = np.full((height, width), -1, np.int64)
    bary = np.zeros((height, width, 3))
    _rasterise(cam, np.ascontiguousarray(faces, np.int64), float(K[0, 0]), float(K[1, 1]), float(K[0, 2]),
               float(K[1, 2]), width, height, NEAR, zbuf, tri, bary)
    return zbuf, tri, bary


def visible_points(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, c2w: np.ndarray, width: int,
                   height: int, max_depth: float) -> np.ndarray:
    """(P, 3) world points of the surface one camera sees through its pixel centres, up to max_depth."""
    depth, _, _ = rasterise(vertices, faces, K, c2w, width, height)
    keep = depth <= max_depth
    return backproject(np.where(keep, depth, 0.0), K, c2w)[keep]


def chamfer_fscore(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.10) -> dict[str, float]:
    """Symmetric Chamfer distance (mean of the two mean nearest-neighbour distances, metres) and the F-score
    at `threshold` metres (precision: share of predicted points near the truth; recall: the converse)."""
    if len(pred) == 0 or len(truth) == 0:
        return {"chamfer_m": math.nan, "precision": 0.0, "recall": 0.0, "fscore": 0.0}
    to_truth, _ = cKDTree(truth).query(pred)
    to_pred, _ = cKDTree(pred).query(truth)
    precision, recall = float(np.mean(to_truth < threshold)), float(np.mean(to_pred < threshold))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"chamfer_m": float((to_truth.mean() + to_pred.mean()) / 2), "precision": precision, "recall": recall,
            "fscore": fscore}


def glb_lod0(path: str | Path) -> trimesh.Trimesh:
    """The `<asset>_LOD0` node's mesh of a lyra-assets GLB, with node transforms applied, in OpenCV axes."""
    scene = trimesh.load(str(path), force="scene")
    for node in scene.graph.nodes_geometry:
        if node.endswith("_LOD0"):
            transform, geometry = scene.graph.get(node)
            mesh = scene.geometry[geometry].copy()
            mesh.apply_transform(transform)
            return trimesh.Trimesh(mesh.vertices * GLTF_TO_OPENCV, mesh.faces, process=False)
    raise ValueError(f"{path}: no node named *_LOD0")


# -- baselines: frame 0 as a depth-map mesh -----------------------------------------------------------------------


def depth_map_mesh(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                   max_ratio: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    """A depth map as a triangle mesh: one vertex per pixel centre, two triangles per 2x2 block whose corners
    all have depth and lie within `max_ratio` of each other (so foreground and background do not join)."""
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    vertices = backproject(np.where(valid, depth, 0.0), K, c2w).reshape(-1, 3)
    idx = np.arange(h * w).reshape(h, w)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    d = np.where(valid, depth, np.inf).reshape(-1)[quads]
    ok = np.isfinite(d).all(axis=1)
    ok[ok] = d[ok].max(axis=1) <= max_ratio * d[ok].min(axis=1)
    quads = quads[ok]
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    return vertices, faces


def render_coloured(vertices: np.ndarray, faces: np.ndarray, colours: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                    width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A vertex-coloured mesh seen by one camera: RGB uint8 (black where empty) and depth (0 where empty)."""
    depth, tri, bary = rasterise(vertices, faces, K, c2w, width, height)
    hit = tri >= 0
    rgb = np.zeros((height, width, 3), np.uint8)
    corners = faces[tri[hit]]
    rgb[hit] = np.clip(np.einsum("pk,pkc->pc", bary[hit], colours[corners].astype(np.float64)) + 0.5, 0, 255)
    return rgb, np.where(hit, depth, 0.0).astype(np.float32)


def fill_holes(rgb: np.ndarray, hit: np.ndarray, image0: np.ndarray, depth0: np.ndarray, K: np.ndarray,
               c2w0: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Pixels no surface covers: sky frame 0 saw (depth inf) at infinity, i.e. moved by the camera's turn only;
    anything else frame 0's mean colour, the guess that knows nothing."""
    out = rgb.copy()
    out[~hit] = image0.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    h, w = hit.shape
    rays = backproject(np.ones((h, w)), K, np.eye(4))[~hit]
    cam0 = rays @ (c2w0[:3, :3].T @ c2w[:3, :3]).T
    with np.errstate(divide="ignore", invalid="ignore"):
        col = np.floor(K[0, 0] * cam0[:, 0] / cam0[:, 2] + K[0, 2])
        row = np.floor(K[1, 1] * cam0[:, 1] / cam0[:, 2] + K[1, 2])
    inside = (cam0[:, 2] > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    ci, ri = np.where(inside, col, 0).astype(int), np.where(inside, row, 0).astype(int)
    sky = inside & ~np.isfinite(depth0[ri, ci])
    holes = out[~hit]
    holes[sky] = image0[ri[sky], ci[sky]]
    out[~hit] = holes
    return out
