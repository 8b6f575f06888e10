"""Render the example concept image, examples/corridor.png: a procedural stone corridor in one-point
perspective, drawn with the layout generator's own box renderer plus depth fog for a painted look.

    python examples/make_example.py [out.png]
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from lyra_assets.generators.layout import Room, build_atlas, render
from lyra_assets.trajectory import intrinsics_from_fov

WIDTH, HEIGHT, HFOV = 960, 540, 60.0


def paint(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Procedural materials by position: tiled floor, panelled walls with doors, lit ceiling, arch."""
    x, y, z = q[..., 0], q[..., 1], q[..., 2]
    rng = np.random.default_rng(7)
    noise = cv2.resize(rng.random((32, 32)).astype(np.float32), q.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    colour = np.zeros(q.shape, np.float64)
    floor, ceiling = y > 1.59, y < -1.39
    wall = (np.abs(np.abs(x) - 1.6) < 1e-3) & ~floor & ~ceiling
    back = (z > 13.99) & ~floor & ~ceiling & ~wall
    tile = ((np.floor(x / 0.8) + np.floor(z / 0.8)) % 2)[..., None]
    grout = ((np.abs((x / 0.8) % 1 - 0.5) > 0.47) | (np.abs((z / 0.8) % 1 - 0.5) > 0.47))[..., None]
    colour = np.where(floor[..., None], np.where(grout, [60, 52, 45], [150, 120, 90] + tile * [30, 25, 15]), colour)
    panel = ((z % 2.5) < 0.12)[..., None]
    door = (((z % 5.0) > 2.9) & ((z % 5.0) < 4.0) & (y > -0.6))[..., None]
    wainscot = (y > 0.7)[..., None]
    wall_colour = np.where(door, [70, 45, 30], np.where(panel, [90, 80, 70],
                           np.where(wainscot, [110, 85, 60], [185, 170, 140])))
    colour = np.where(wall[..., None], wall_colour, colour)
    light = ((np.abs(x) < 0.35) & ((z % 3.0) < 0.9))[..., None]
    colour = np.where(ceiling[..., None], np.where(light, [255, 245, 215], [120, 115, 110]), colour)
    arch = ((np.abs(x) < 0.7) & (y > -0.4)) | (np.hypot(x, y + 0.4) < 0.7)
    colour = np.where(back[..., None], np.where(arch[..., None], [255, 225, 160], [160, 145, 120]), colour)
    colour *= (0.92 + 0.14 * noise)[..., None]
    return np.clip(colour, 0, 255).astype(np.uint8), np.ones(q.shape[:2], bool)


def make_example(out: Path) -> None:
    room = Room(np.eye(3), np.array([-1.6, -1.4, -2.0]), np.array([1.6, 1.6, 14.0]))
    atlas = build_atlas(room, 120.0, paint)
    K = intrinsics_from_fov(HFOV, WIDTH, HEIGHT)
    pose = np.eye(4)
    pose[:3, 3] = [0.25, 0.0, 0.0]  # slightly off-centre: the vanishing point is not the image centre
    frame, depth, _ = render(room, atlas, K, pose, WIDTH, HEIGHT)
    fog = np.clip(depth / 18.0, 0, 1)[..., None] ** 1.3
    image = frame * (1 - fog) + np.array([230, 205, 160]) * fog
    cv2.imwrite(str(out), np.clip(image, 0, 255).astype(np.uint8)[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    make_example(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("corridor.png"))
