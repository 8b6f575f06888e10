"""Spatial memory of the depth generator: the world seen so far as coloured points, rendered into any camera.

Every pixel a frame adds (the concept image's, or a hole the generator filled) becomes one point: its world
position, colour, two labels (the input image saw it; it is sky, far away and no surface), the frame that
added it, and its footprint: the 3D steps to
its neighbouring pixels along the image rows and columns (so a floor seen at a grazing angle knows it is long
along the columns). Rendering projects those steps and splats each point as a rectangle of the point
spacing they project to, with bilinear ("tent") weights: a surface seen up close is interpolated on its own
grid, not cracked.

Visibility, per pixel: the nearest splat sets the depth; splats within `DEPTH_TOLERANCE` of it are the same
surface; of those, the points of the earliest frame win and their weighted average is the pixel. Earliest
wins so that what was seen first is never replaced by what was generated later: a revisited pose renders
what it rendered the first time. At the pose a point was added from it covers exactly its own pixel (the
tent is a hair narrower than the pixel pitch), so a frame renders back from memory bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from ..trajectory import pixel_rays

DEPTH_TOLERANCE = 0.02  # relative: splats this close to the nearest one are the same surface
NEAR_M = 0.05  # points closer to the camera than this are not drawn
# Half-width cap of a splat. A near surface must occlude what is behind it however close the camera comes,
# and splatting costs the area covered, not the splat size (magnified points are few), so the cap is high.
MAX_SPLAT_PX = 64.0
TENT = 0.98  # tent half-width in units of the point spacing: neighbours at exactly one pitch get no weight
MAX_FOOTPRINT_RATIO = 4.0  # a step to a neighbour is at most this many times the facing pixel size


@dataclass
class Rendered:
    colour: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 metres along the camera z, 0 where nothing is remembered
    observed: np.ndarray  # (H, W) bool: the input image saw this pixel's surface
    sky: np.ndarray  # (H, W) bool: this pixel shows the sky (its depth is only a far stand-in)
    covered: np.ndarray  # (H, W) bool: memory has something here (the rest are holes to generate)


class PointMemory:
    """Coloured points in the world frame, in the order they were added."""

    def __init__(self) -> None:
        self._chunks: list[tuple[np.ndarray, ...]] = []
        self._joined: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return sum(len(c[0]) for c in self._chunks)

    def add(self, colour: np.ndarray, depth: np.ndarray, observed: np.ndarray, sky: np.ndarray, mask: np.ndarray,
            K: np.ndarray, c2w: np.ndarray, frame: int) -> None:
        """Lift the pixels under `mask` (with depth > 0) of one RGB-D frame into the memory."""
        rays = pixel_rays(K, depth.shape[1], depth.shape[0])
        cam = rays * depth[..., None].astype(np.float64)
        keep = mask & (depth > 0)
        if not keep.any():
            return
        facing = depth / K[0, 0]  # the pixel's size on a surface facing the camera
        R, t = c2w[:3, :3], c2w[:3, 3]
        steps = [_neighbour_step(cam, axis, facing)[keep] @ R.T for axis in (1, 0)]  # along rows, along columns
        labels = np.stack([observed[keep], sky[keep]], axis=1).astype(np.float64)
        self._chunks.append(((cam[keep] @ R.T + t).astype(np.float32), steps[0].astype(np.float32),
                             steps[1].astype(np.float32), facing[keep].astype(np.float32),
                             colour[keep].astype(np.uint8), labels, np.full(int(keep.sum()), frame, np.int32)))
        self._joined = None

    def render(self, K: np.ndarray, c2w: np.ndarray, width: int, height: int) -> Rendered:
        if not self._chunks:
            nothing = np.zeros((height, width), bool)
            return Rendered(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.float32),
                            nothing, nothing, nothing)
        if self._joined is None:
            self._joined = tuple(np.concatenate(parts) for parts in zip(*self._chunks))
        points, along_row, along_column, facing, colour, labels, frame = self._joined
        w2c = np.linalg.inv(c2w)
        R, t = w2c[:3, :3].astype(np.float32), w2c[:3, 3].astype(np.float32)
        cam = points @ R.T + t
        front = cam[:, 2] > NEAR_M
        cam = cam[front].astype(np.float64)
        u, v = _pixels(K, cam)
        # Each point is a small plane patch: its grid steps, projected, give its spacing here (the tent's
        # half-widths, never below the pitch its facing size projects to, so a step shortened at a depth
        # edge leaves no crack) and the slope of its inverse depth across the screen (affine for a plane),
        # so a floor seen at a grazing angle keeps its depth between its points.
        moved = [cam + (step[front] @ R.T) for step in (along_row, along_column)]
        du, dv, dq = (np.stack(x) for x in zip(*[(_pixels(K, m)[0] - u, _pixels(K, m)[1] - v,
                                                   1 / np.maximum(m[:, 2], NEAR_M) - 1 / cam[:, 2])
                                                  for m in moved]))
        pitch = facing[front] * K[0, 0] / cam[:, 2]
        half_x = np.minimum(TENT * np.maximum(np.abs(du).max(axis=0), pitch), MAX_SPLAT_PX)
        half_y = np.minimum(TENT * np.maximum(np.abs(dv).max(axis=0), pitch), MAX_SPLAT_PX)
        det = du[0] * dv[1] - dv[0] * du[1]
        flat = np.abs(det) < 1e-6
        det = np.where(flat, 1.0, det)
        slope_x = np.where(flat, 0.0, (dq[0] * dv[1] - dq[1] * dv[0]) / det)
        slope_y = np.where(flat, 0.0, (du[0] * dq[1] - du[1] * dq[0]) / det)
        out_colour, out_depth, out_labels, weight = _splat(
            u, v, cam[:, 2], slope_x, slope_y, half_x, half_y, frame[front], colour[front], labels[front],
            width, height, DEPTH_TOLERANCE)
        covered = weight > 0
        return Rendered(np.clip(out_colour + 0.5, 0, 255).astype(np.uint8), out_depth.astype(np.float32),
                        out_labels[..., 0] & covered, out_labels[..., 1] & covered, covered)


def _pixels(K: np.ndarray, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.maximum(cam[:, 2], NEAR_M)
    return K[0, 0] * cam[:, 0] / z + K[0, 2], K[1, 1] * cam[:, 1] / z + K[1, 2]


def _neighbour_step(cam: np.ndarray, axis: int, facing: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame step from each pixel to its nearer neighbour along one image axis, shortened to
    MAX_FOOTPRINT_RATIO times the facing size so that points either side of a depth edge are not joined."""
    gap = np.diff(cam, axis=axis)
    pad_before, pad_after = [(0, 0)] * 3, [(0, 0)] * 3
    pad_before[axis], pad_after[axis] = (1, 0), (0, 1)
    # Pixels on the image border have a neighbour on one side only: the missing side never counts as nearer.
    before = np.pad(gap, pad_before, constant_values=np.inf)
    after = np.pad(gap, pad_after, constant_values=np.inf)
    # Towards the neighbour itself (-before points back to the previous pixel): under perspective, only the
    # neighbour's own position projects exactly one pixel away from the capturing camera.
    step = np.where((np.linalg.norm(before, axis=-1) < np.linalg.norm(after, axis=-1))[..., None], -before, after)
    length = np.linalg.norm(step, axis=-1)
    limit = MAX_FOOTPRINT_RATIO * facing
    return step * np.where(length > limit, limit / np.maximum(length, 1e-12), 1.0)[..., None]


@numba.njit(cache=True)
def _splat(u, v, z, slope_x, slope_y, half_x, half_y, frame, colour, labels, width, height, tolerance):
    """Three passes over the splats: nearest depth, earliest frame at that depth, tent-weighted average.
    A splat's depth at a pixel follows its inverse-depth slope from its centre."""
    n = len(u)
    zmin = np.full((height, width), np.inf)
    first = np.full((height, width), np.iinfo(np.int32).max, np.int32)
    acc = np.zeros((height, width, 3))
    acc_z = np.zeros((height, width))
    acc_labels = np.zeros((height, width, labels.shape[1]))
    weight = np.zeros((height, width))
    for stage in range(3):
        for i in range(n):
            rx, ry = half_x[i], half_y[i]
            x0 = max(int(np.ceil(u[i] - rx - 0.5)), 0)
            x1 = min(int(np.floor(u[i] + rx - 0.5)), width - 1)
            y0 = max(int(np.ceil(v[i] - ry - 0.5)), 0)
            y1 = min(int(np.floor(v[i] + ry - 0.5)), height - 1)
            for y in range(y0, y1 + 1):
                wy = 1.0 - abs(y + 0.5 - v[i]) / ry
                if wy <= 0.0:
                    continue
                for x in range(x0, x1 + 1):
                    wx = 1.0 - abs(x + 0.5 - u[i]) / rx
                    if wx <= 0.0:
                        continue
                    q = 1.0 / z[i] + slope_x[i] * (x + 0.5 - u[i]) + slope_y[i] * (y + 0.5 - v[i])
                    if q <= 0.0:
                        continue
                    zz = 1.0 / q
                    if stage == 0:
                        zmin[y, x] = min(zmin[y, x], zz)
                    elif zz <= zmin[y, x] * (1.0 + tolerance):
                        if stage == 1:
                            first[y, x] = min(first[y, x], frame[i])
                        elif frame[i] == first[y, x]:
                            w = wx * wy
                            for c in range(3):
                                acc[y, x, c] += w * colour[i, c]
                            acc_z[y, x] += w * q  # inverse depth: affine across a plane's image
                            for k in range(labels.shape[1]):
                                acc_labels[y, x, k] += w * labels[i, k]
                            weight[y, x] += w
    out_colour = np.zeros((height, width, 3))
    out_depth = np.zeros((height, width))
    out_labels = np.zeros((height, width, labels.shape[1]), np.bool_)
    for y in range(height):
        for x in range(width):
            if weight[y, x] > 0.0:
                for c in range(3):
                    out_colour[y, x, c] = acc[y, x, c] / weight[y, x]
                out_depth[y, x] = weight[y, x] / acc_z[y, x]
                for k in range(labels.shape[1]):
                    out_labels[y, x, k] = acc_labels[y, x, k] >= 0.5 * weight[y, x]  # the weighted majority
    return out_colour, out_depth, out_labels, weight
