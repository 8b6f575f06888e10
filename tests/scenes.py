"""Ground-truth test scenes: axis-aligned boxes with procedural colour, ray cast to exact RGB-D.

A scene is a room (seen from inside) plus solid blocks standing in it. Colour is a smooth function of the
3D surface point, so any stage's output can be compared with the truth at any point. Rendering uses the
project's own pixel convention (`pixel_rays`), so these frames are what a perfect generator would produce.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, pixel_rays
from lyra_assets.walkthrough import Walkthrough


@dataclass
class BoxScene:
    room_min: np.ndarray = field(default_factory=lambda: np.array([-2.0, -1.2, -1.5]))  # OpenCV axes, y down
    room_max: np.ndarray = field(default_factory=lambda: np.array([2.0, 1.6, 6.0]))  # floor at y = +1.6
    blocks: list[tuple[np.ndarray, np.ndarray]] = field(
        default_factory=lambda: [(np.array([0.4, 0.6, 2.5]), np.array([1.2, 1.6, 3.3]))]
    )

    def colour(self, points: np.ndarray) -> np.ndarray:
        """Smooth procedural RGB in 0..1 at surface points (..., 3)."""
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        r = 0.5 + 0.35 * np.sin(2 * np.pi * x / 0.9) * np.cos(2 * np.pi * z / 1.3)
        g = 0.5 + 0.35 * np.sin(2 * np.pi * (y + z) / 1.1)
        b = 0.5 + 0.35 * np.cos(2 * np.pi * (x - y) / 0.8)
        return np.stack([r, g, b], axis=-1)

    def raycast(self, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """Ray parameter t of the first hit (dirs need not be unit; depth = t when dirs have z = 1)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            t1, t2 = (self.room_min - origins) * inv, (self.room_max - origins) * inv
            t = np.min(np.maximum(t1, t2), axis=-1)  # exit the room from inside
            for lo, hi in self.blocks:
                a, b = (lo - origins) * inv, (hi - origins) * inv
                near = np.max(np.minimum(a, b), axis=-1)
                far = np.min(np.maximum(a, b), axis=-1)
                hit = (near <= far) & (near > 1e-6)
                t = np.where(hit & (near < t), near, t)
        return t

    def render(self, path: CameraPath) -> Walkthrough:
        n, h, w = len(path), path.height, path.width
        frames = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        for i in range(n):
            rays = pixel_rays(path.K[i], w, h)
            dirs = rays @ path.c2w[i, :3, :3].T
            origins = np.broadcast_to(path.c2w[i, :3, 3], dirs.shape)
            t = self.raycast(origins, dirs)
            points = origins + t[..., None] * dirs
            frames[i] = np.clip(self.colour(points) * 255 + 0.5, 0, 255).astype(np.uint8)
            depth[i] = t
        image = frames[0].copy()
        return Walkthrough(frames, depth, np.ones((n, h, w), bool), path, image,
                           {"generator": {"name": "test-boxscene"}})

    def mesh(self) -> trimesh.Trimesh:
        """The true surfaces (room inverted so normals face into the room, blocks facing out)."""
        room = trimesh.creation.box(bounds=np.stack([self.room_min, self.room_max]))
        room.invert()
        parts = [room] + [trimesh.creation.box(bounds=np.stack([lo, hi])) for lo, hi in self.blocks]
        return trimesh.util.concatenate(parts)


def forward_path(frames: int = 9, distance: float = 1.5, width: int = 160, height: int = 96,
                 hfov_deg: float = 70.0, sway_deg: float = 25.0) -> CameraPath:
    """A short walk forward that also turns left and right, so the walls are seen from several angles."""
    c2w = np.repeat(np.eye(4)[None], frames, axis=0)
    for i, s in enumerate(np.linspace(0.0, 1.0, frames)):
        yaw = np.radians(sway_deg) * np.sin(2 * np.pi * s)
        c, si = np.cos(yaw), np.sin(yaw)
        c2w[i, :3, :3] = [[c, 0, si], [0, 1, 0], [-si, 0, c]]
        c2w[i, :3, 3] = [0.3 * np.sin(np.pi * s), 0.0, distance * s]
    return CameraPath(c2w, intrinsics_from_fov(hfov_deg, width, height), width, height)


@dataclass
class OpenGroundScene:
    """Outdoors: tiled ground `eye_height` below the camera, blocks standing on it, and a sky (depth 0).

    Blocks are (lo, hi) boxes in OpenCV axes (y down); their bottoms should sit on the ground (y = eye
    height). The camera may be pitched down by `pitch_deg` (an aerial view when eye_height is large)."""

    eye_height: float = 1.6
    tile_m: float = 1.0  # ground tile size; larger for views from high up, so the tiles don't alias
    blocks: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=lambda: [
        (np.array([-3.5, -1.4, 7.0]), np.array([-1.5, 1.6, 8.5])),
        (np.array([1.0, -0.6, 11.0]), np.array([4.0, 1.6, 12.0])),
    ])

    def _colour(self, points: np.ndarray, sky: np.ndarray, block: np.ndarray, elevation: np.ndarray) -> np.ndarray:
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        t = self.tile_m
        grout = (np.abs((x + t / 2) % t - t / 2) < 0.03 * t) | (np.abs((z + t / 2) % t - t / 2) < 0.03 * t)
        ground = np.where(grout[..., None], [0.35, 0.33, 0.3], [0.62, 0.55, 0.45])
        ground = ground * (0.9 + 0.1 * np.sin(7.1 * x) * np.cos(5.3 * z))[..., None]
        course = np.floor(y / 0.25)
        mortar = (np.abs((y + 0.125) % 0.25 - 0.125) < 0.02) | (
            np.abs(((x + z) + 0.25 * course) % 0.5 - 0.25) < 0.02)
        tint = np.array([[0.7, 0.3, 0.25], [0.3, 0.4, 0.65], [0.35, 0.6, 0.3]])[np.maximum(block, 0) % 3]
        wall = np.where(mortar[..., None], 0.85, tint)
        blue = np.stack([0.45 - 0.25 * elevation, 0.65 - 0.2 * elevation, 0.95 - 0.05 * elevation], -1)
        out = np.where((block >= 0)[..., None], wall, ground)
        return np.where(sky[..., None], blue, out)

    def render(self, path: CameraPath) -> Walkthrough:
        n, h, w = len(path), path.height, path.width
        frames = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        for i in range(n):
            dirs = pixel_rays(path.K[i], w, h) @ path.c2w[i, :3, :3].T
            origin = path.c2w[i, :3, 3]
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(dirs[..., 1] > 1e-9, (self.eye_height - origin[1]) / dirs[..., 1], np.inf)
                t[t <= 0] = np.inf
                block = np.full(t.shape, -1)
                for k, (lo, hi) in enumerate(self.blocks):
                    a, b = (lo - origin) / dirs, (hi - origin) / dirs
                    near = np.max(np.minimum(a, b), axis=-1)
                    far = np.min(np.maximum(a, b), axis=-1)
                    hit = (near <= far) & (near > 1e-6) & (near < t)
                    t = np.where(hit, near, t)
                    block = np.where(hit, k, block)
            sky = ~np.isfinite(t)
            points = origin + np.where(sky, 1.0, t)[..., None] * dirs
            elevation = np.clip(-dirs[..., 1] / np.linalg.norm(dirs, axis=-1), 0, 1)
            frames[i] = np.clip(self._colour(points, sky, block, elevation) * 255 + 0.5, 0, 255).astype(np.uint8)
            depth[i] = np.where(sky, 0.0, t)
        return Walkthrough(frames, depth, np.ones((n, h, w), bool), path, frames[0].copy(),
                           {"generator": {"name": "test-open-ground"}})


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(P, C) floats 0..1: a GPU's bilinear lookup of a uint8 texture at glTF UVs (texel (col, row) centred
    at ((col + .5) / S, (row + .5) / S), clamped at the edges)."""
    size = image.shape[0]
    x, y = uv[:, 0] * size - 0.5, uv[:, 1] * size - 0.5
    x0 = np.clip(np.floor(x).astype(int), 0, size - 2)
    y0 = np.clip(np.floor(y).astype(int), 0, size - 2)
    fx, fy = np.clip(x - x0, 0, 1)[:, None], np.clip(y - y0, 0, 1)[:, None]
    img = image.astype(np.float64) / 255.0
    return ((1 - fx) * (1 - fy) * img[y0, x0] + fx * (1 - fy) * img[y0, x0 + 1]
            + (1 - fx) * fy * img[y0 + 1, x0] + fx * fy * img[y0 + 1, x0 + 1])
