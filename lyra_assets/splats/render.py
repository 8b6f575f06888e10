"""Rendering Gaussian splats to RGB-D at every camera of a path (gsplat on CUDA, or a torch CPU fallback),
and which pixels of a walkthrough show what its first frame saw."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import LyraAssetsError
from ..progress import Progress, silent
from ..rotations import quaternion_matrices
from ..trajectory import CameraPath, pixel_rays, project
from .gaussians import GaussianSplats

Renderer = Literal["auto", "gsplat", "cpu"]

# The rasterizer's constants, as in gsplat's classic mode (see the module docstring).
NEAR_PLANE = 0.01
BLUR_PX2 = 0.3
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4
SIGMA_MAX = 20.0  # exp(-20) * opacity is far below ALPHA_MIN: anything beyond is skipped all the same
EXTENT_SIGMAS = 3.33  # a Gaussian's screen footprint reaches this many standard deviations at most
TILE = 16
CHUNK = 64  # Gaussians per tile blended per step of the CPU renderer's front-to-back loop
TILE_BATCH = 64  # tiles blended together on the CPU: steps of 64 x 256 pixels x 64 Gaussians, ~1M pairs
MAX_DEPTH_SPREAD = 0.1  # render_path keeps depth where the blend's depths spread by at most 10 %
GSPLAT_CAMERAS = 8  # cameras per gsplat call: bounded GPU memory at 832x480


@dataclass(frozen=True)
class Rendered:
    frames: np.ndarray  # (N, H, W, 3) uint8
    depth: np.ndarray  # (N, H, W) float32 expected camera z; 0 where unreliable (see render_path)
    alpha: np.ndarray  # (N, H, W) float32 accumulated opacity
    renderer: str  # "gsplat" or "cpu"


def render_path(splats: GaussianSplats, path: CameraPath, renderer: Renderer = "auto", min_alpha: float = 0.5,
                max_depth_spread: float = MAX_DEPTH_SPREAD, progress: Progress = silent) -> Rendered:
    """RGB, depth and alpha of the splats at every camera of the path.

    Depth is kept only where it describes one surface, because fusion takes every depth it is given at face
    value (0 means unknown): where the splats cover at least `min_alpha` of the pixel (less is mostly
    background, i.e. nothing), and where the blended Gaussians' depths spread by at most `max_depth_spread`
    of their mean (standard deviation over mean): a pixel on a silhouette averages the object and what lies
    behind it into a depth where there is no surface at all. The spread comes from blending z^2 alongside
    z, as one more colour channel, so gsplat and the CPU renderer compute it alike.
    """
    torch = _import_torch()
    backend = _choose_renderer(renderer, torch)
    n, h, w = len(path), path.height, path.width
    frames = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    alpha = np.empty((n, h, w), np.float32)
    scene = _TorchSplats.build(splats, torch, "cuda" if backend == "gsplat" else "cpu")
    w2c = path.w2c
    batch = GSPLAT_CAMERAS if backend == "gsplat" else 1
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        if backend == "gsplat":
            blended, acc = _render_gsplat(scene, path.K[start:stop], w2c[start:stop], w, h, torch)
        else:
            blended, acc = (x[None] for x in _render_cpu(scene, path.K[start], w2c[start], w, h, torch))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_z = blended[..., 3] / acc
            spread = np.sqrt(np.maximum(blended[..., 4] / acc - mean_z ** 2, 0.0))
            reliable = (acc >= min_alpha) & (spread <= max_depth_spread * mean_z)
        frames[start:stop] = np.clip(blended[..., :3] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        alpha[start:stop] = acc
        depth[start:stop] = np.where(reliable, mean_z, 0.0)
        progress("render splats", stop, n, backend)
    return Rendered(frames, depth, alpha, backend)


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise LyraAssetsError("rendering Gaussian splats needs torch: pip install 'lyra-assets[splats]' "
                              "(CPU), or 'lyra-assets[gpu]' for gsplat on CUDA") from exc
    return torch


def _choose_renderer(renderer: Renderer, torch) -> str:
    if renderer == "cpu":
        return "cpu"
    cuda = torch.cuda.is_available()
    try:
        import gsplat  # noqa: F401  (compiles its CUDA kernels on first use, so only import it here)
        have_gsplat = True
    except ImportError:
        have_gsplat = False
    if renderer == "gsplat" and not (cuda and have_gsplat):
        raise LyraAssetsError("renderer = 'gsplat' needs a CUDA GPU and gsplat: pip install 'lyra-assets[gpu]'"
                              f" (CUDA available: {cuda}, gsplat installed: {have_gsplat}); or use 'cpu'")
    return "gsplat" if cuda and have_gsplat else "cpu"


@dataclass(frozen=True)
class _TorchSplats:
    means: Any  # (N, 3) torch float32
    quats: Any  # (N, 4)
    scales: Any  # (N, 3)
    opacities: Any  # (N,)
    colours: Any  # (N, 3)
    covariances: Any  # (N, 3, 3) world-frame covariance

    @classmethod
    def build(cls, splats: GaussianSplats, torch, device: str) -> _TorchSplats:
        def tensor(a: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        quats = splats.unit_quats
        rotation = tensor(quaternion_matrices(quats))
        scales = tensor(splats.scales)
        axes = rotation * scales[:, None, :]  # columns: the Gaussian's axes times their standard deviations
        return cls(tensor(splats.means), tensor(quats), scales, tensor(splats.opacities),
                   tensor(splats.colours), axes @ axes.transpose(1, 2))


def _render_gsplat(scene: _TorchSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int, torch):
    """C cameras with gsplat on CUDA: (C, H, W, 5) blended r, g, b, z, z^2 and (C, H, W) alpha."""
    import gsplat

    viewmats = torch.from_numpy(w2c.astype(np.float32)).cuda()
    z = torch.einsum("cj,nj->cn", viewmats[:, 2, :3], scene.means) + viewmats[:, 2, 3:]
    features = torch.cat([scene.colours.expand(len(z), -1, -1), z[..., None], z[..., None] ** 2], -1)
    blended, alphas, _ = gsplat.rasterization(
        scene.means, scene.quats, scene.scales, scene.opacities, features, viewmats,
        torch.from_numpy(K.astype(np.float32)).cuda(), width, height, near_plane=NEAR_PLANE, eps2d=BLUR_PX2,
        render_mode="RGB", rasterize_mode="classic")
    return blended.cpu().numpy(), alphas[..., 0].cpu().numpy()


def _render_cpu(scene: _TorchSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int, torch):
    """One camera, in torch on the CPU: (H, W, 5) blended r, g, b, z, z^2 and (H, W) alpha.

    Tiles are blended TILE_BATCH at a time, CHUNK Gaussians of each tile's depth-sorted list per step (a
    tile with a shorter list is padded with weightless entries), so each step is a few large tensor
    operations rather than many small ones.
    """
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    blended = torch.zeros((tiles_y * tiles_x, TILE * TILE, 5))
    acc = torch.zeros((tiles_y * tiles_x, TILE * TILE))
    projected = _project(scene, K, w2c, width, height, torch)
    if projected is not None:
        mean2d, conic, opacity, features, tile_ids, order = projected
        per_tile = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)
        starts = torch.cumsum(per_tile, 0) - per_tile
        ys, xs = torch.meshgrid(torch.arange(TILE), torch.arange(TILE), indexing="ij")
        offsets = torch.stack([xs.flatten(), ys.flatten()], 1) + 0.5  # pixel centres within a tile
        for group in torch.nonzero(per_tile).flatten().split(TILE_BATCH):
            corner = torch.stack([group % tiles_x, group // tiles_x], 1) * TILE
            blended[group], acc[group] = _blend_tiles(corner[:, None, :] + offsets[None], order, starts[group],
                                                      per_tile[group], mean2d, conic, opacity, features, torch)

    def image(tiles):  # (tiles, TILE * TILE, ...) -> (H, W, ...)
        grid = tiles.view(tiles_y, tiles_x, TILE, TILE, *tiles.shape[2:]).transpose(1, 2)
        return grid.reshape(tiles_y * TILE, tiles_x * TILE, *tiles.shape[2:])[:height, :width].numpy()

    return image(blended), image(acc)


def _project(scene: _TorchSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int, torch):
    """EWA projection of every Gaussian, culled to the screen, and its (tile, depth)-sorted tile list."""
    R = torch.from_numpy(w2c[:3, :3].astype(np.float32))
    t = torch.from_numpy(w2c[:3, 3].astype(np.float32))
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    cam = scene.means @ R.T + t
    keep = (cam[:, 2] > NEAR_PLANE) & (scene.opacities >= ALPHA_MIN)
    idx = torch.nonzero(keep).flatten()
    if len(idx) == 0:
        return None
    cam, opacity = cam[idx], scene.opacities[idx]
    x, y, z = cam.unbind(1)
    # The Jacobian of the perspective map is taken at the Gaussian's view direction clamped to 1.3x the
    # field of view, as the 3DGS reference does: off-screen Gaussians near the camera plane would otherwise
    # get enormous footprints.
    lim_x = (width / fx) * 0.15
    lim_y = (height / fy) * 0.15
    tx = z * torch.clamp(x / z, -(cx / fx + lim_x), (width - cx) / fx + lim_x)
    ty = z * torch.clamp(y / z, -(cy / fy + lim_y), (height - cy) / fy + lim_y)
    J = torch.zeros((len(idx), 2, 3))
    J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * tx / z ** 2
    J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * ty / z ** 2
    cov = J @ (R @ scene.covariances[idx] @ R.T) @ J.transpose(1, 2)
    a, b, c = cov[:, 0, 0] + BLUR_PX2, cov[:, 0, 1], cov[:, 1, 1] + BLUR_PX2
    det = a * c - b * b
    mean2d = torch.stack([fx * x / z + cx, fy * y / z + cy], 1)
    # Where a Gaussian's alpha would stay under ALPHA_MIN it is skipped anyway: its footprint ends there.
    extent = torch.clamp(torch.sqrt(2.0 * torch.log(opacity / ALPHA_MIN)), max=EXTENT_SIGMAS)
    rx, ry = torch.ceil(extent * torch.sqrt(a)), torch.ceil(extent * torch.sqrt(c))
    visible = ((det > 0) & (mean2d[:, 0] + rx > 0) & (mean2d[:, 0] - rx < width)
               & (mean2d[:, 1] + ry > 0) & (mean2d[:, 1] - ry < height))
    if not visible.any():
        return None
    v = torch.nonzero(visible).flatten()
    mean2d, a, b, c, det, z, opacity, rx, ry = (q[v] for q in (mean2d, a, b, c, det, z, opacity, rx, ry))
    conic = torch.stack([c / det, -b / det, a / det], 1)
    features = torch.cat([scene.colours[idx[v]], z[:, None], z[:, None] ** 2], 1)  # what is blended

    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    tx0 = torch.clamp(torch.floor((mean2d[:, 0] - rx) / TILE), 0, tiles_x).long()
    tx1 = torch.clamp(torch.floor((mean2d[:, 0] + rx) / TILE) + 1, 0, tiles_x).long()
    ty0 = torch.clamp(torch.floor((mean2d[:, 1] - ry) / TILE), 0, tiles_y).long()
    ty1 = torch.clamp(torch.floor((mean2d[:, 1] + ry) / TILE) + 1, 0, tiles_y).long()
    span_x = tx1 - tx0
    counts = span_x * (ty1 - ty0)
    gaussian = torch.repeat_interleave(torch.arange(len(v)), counts)
    local = torch.arange(len(gaussian)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    tile_ids = (ty0[gaussian] + local // span_x[gaussian]) * tiles_x + tx0[gaussian] + local % span_x[gaussian]
    depth_rank = torch.empty(len(v), dtype=torch.long)
    depth_rank[torch.argsort(z, stable=True)] = torch.arange(len(v))
    order = torch.argsort(tile_ids * len(v) + depth_rank[gaussian])
    return mean2d, conic, opacity, features, tile_ids, gaussian[order]


def _blend_tiles(pixels, order, starts, counts, mean2d, conic, opacity, features, torch):
    """Front-to-back alpha compositing of B tiles' depth-sorted Gaussians over their pixels (B, P, 2)."""
    b, n = pixels.shape[:2]
    transmittance = torch.ones((b, n))
    done = torch.zeros((b, n), dtype=torch.bool)
    blended = torch.zeros((b, n, features.shape[1]))
    for start in range(0, int(counts.max()), CHUNK):
        rank = start + torch.arange(CHUNK)
        listed = rank[None] < counts[:, None]  # (B, C): padding past a tile's list has no weight
        g = order[torch.clamp(starts[:, None] + rank[None], max=len(order) - 1)]
        d = pixels[:, :, None, :] - mean2d[g][:, None]  # (B, P, C, 2)
        q = conic[g][:, None]
        sigma = 0.5 * (q[..., 0] * d[..., 0] ** 2 + q[..., 2] * d[..., 1] ** 2) + q[..., 1] * d[..., 0] * d[..., 1]
        # alpha >= ALPHA_MIN needs sigma <= log(255): clamping sigma first keeps exp() out of the denormal
        # range, where CPU float arithmetic is a hundred times slower, without changing any kept alpha.
        alpha = torch.clamp(opacity[g][:, None] * torch.exp(-torch.clamp(sigma, max=SIGMA_MAX)), max=ALPHA_MAX)
        alpha = alpha * ((sigma >= 0) & (alpha >= ALPHA_MIN) & listed[:, None] & ~done[..., None])
        after = transmittance[..., None] * torch.cumprod(1.0 - alpha, -1)
        # A Gaussian that would bring the pixel's transmittance to the limit is not blended, and the pixel
        # is finished: after is non-increasing, so `included` is a prefix of each pixel's list, and the pixel
        # is finished exactly when the last `after` is at the limit.
        included = after > TRANSMITTANCE_MIN
        before = torch.cat([transmittance[..., None], after[..., :-1]], -1)
        blended += torch.einsum("bpc,bck->bpk", alpha * before * included, features[g])
        transmittance = torch.minimum(transmittance, after.masked_fill(~included, 1.0).amin(-1))
        done |= ~included[..., -1]
        if bool(done.all()):
            break
    return blended, 1.0 - transmittance


def observed_from_first_view(depth: np.ndarray, path: CameraPath, tolerance: float = 0.05) -> np.ndarray:
    """(N, H, W) bool: pixels showing a surface point the first frame (the input image) saw.

    Frame 0 is the input image itself, so all of it is observed. In later frames a pixel is observed when
    its depth point projects into frame 0 and lies within `tolerance` (relative) of the depth frame 0 has
    there: neither hidden behind what frame 0 saw nor in front of it (new geometry). "There" is the span of
    the four pixel centres around the projection, so surfaces seen at a grazing angle, whose depth changes
    fast from pixel to pixel, still match. Everything else the generator made up.
    """
    n, h, w = depth.shape
    observed = np.zeros(depth.shape, bool)
    observed[0] = True
    first_near = np.where(depth[0] > 0, depth[0], np.inf)  # unknown depth matches nothing: inf for the
    first_far = depth[0]  # nearest of the four, 0 for the farthest
    for i in range(1, n):
        valid = depth[i] > 0
        cam = pixel_rays(path.K[i], w, h)[valid] * depth[i][valid, None]
        world = cam @ path.c2w[i, :3, :3].T + path.c2w[i, :3, 3]
        uv, z = project(path.K[0], path.w2c[0], world)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        col = np.clip(np.floor(np.nan_to_num(uv[:, 0]) - 0.5), 0, w - 2).astype(int)
        row = np.clip(np.floor(np.nan_to_num(uv[:, 1]) - 0.5), 0, h - 2).astype(int)
        corners = [(row, col), (row, col + 1), (row + 1, col), (row + 1, col + 1)]
        near = np.min([first_near[r, c] for r, c in corners], axis=0)
        far = np.max([first_far[r, c] for r, c in corners], axis=0)
        observed[i][valid] = inside & (z >= near * (1 - tolerance)) & (z <= far * (1 + tolerance))
    return observed
