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
