"""A walkthrough folder as points and camera frustums in an imported level's Blender frame.

Plain Python and numpy, no bpy (the caller reads the frames' colours and makes the objects). The walkthrough
(lyra_assets/walkthrough.py) holds depth.npz (N,H,W metres along the camera's z, 0 = unknown) and
trajectory.npz (w2c in OpenCV axes, the world being its first camera); camera_path.OPENCV_WORLD_TO_BLENDER
turns that world into the level's Blender frame, as the glTF export and import do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .camera_path import OPENCV_WORLD_TO_BLENDER

FRAME_NAME = "{:06d}.png"


@dataclass(frozen=True)
class Points:
    positions: np.ndarray  # (M, 3) float32, Blender axes, metres, in the level's frame
    frame: np.ndarray  # (M,) which frame each point comes from
    pixel: np.ndarray  # (M, 2) its (row, col) there, to take its colour from
    total: int  # pixels with depth in the whole walkthrough, of which len(positions) are shown


def cameras(walkthrough_dir: str) -> tuple[np.ndarray, np.ndarray, int, int]:
    """c2w (N,4,4) in OpenCV axes and the walkthrough's world, K (N,3,3), width, height."""
    with np.load(os.path.join(walkthrough_dir, "trajectory.npz")) as data:
        c2w = np.linalg.inv(data["w2c"].astype(np.float64))
        return c2w, data["intrinsics"].astype(np.float64), int(data["image_width"]), int(data["image_height"])


def walkthrough_points(walkthrough_dir: str, max_points: int) -> Points:
    """Every pixel with depth, back-projected; a random sample of max_points of them if there are more (the
    same sample every time; every k-th pixel instead would show as stripes)."""
    c2w, K, _, _ = cameras(walkthrough_dir)
    with np.load(os.path.join(walkthrough_dir, "depth.npz")) as data:
        depth = data["depth"]
    valid = np.flatnonzero(depth > 0)
    chosen = valid
    if len(valid) > max_points:
        chosen = np.sort(np.random.default_rng(0).choice(valid, size=max(1, max_points), replace=False))
    frame, row, col = np.unravel_index(chosen, depth.shape)
    z = depth.reshape(-1)[chosen].astype(np.float64)
    x = (col + 0.5 - K[frame, 0, 2]) / K[frame, 0, 0] * z
    y = (row + 0.5 - K[frame, 1, 2]) / K[frame, 1, 1] * z
    world = np.einsum("nij,nj->ni", c2w[frame, :3, :3], np.stack([x, y, z], axis=1)) + c2w[frame, :3, 3]
    blender = world @ OPENCV_WORLD_TO_BLENDER[:3, :3].T
    return Points(blender.astype(np.float32), frame, np.stack([row, col], axis=1), int(len(valid)))


def frustums(walkthrough_dir: str, depth_m: float = 0.3) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Each camera as a small pyramid (apex and the four image corners at depth_m): vertices in Blender
    axes and the edges between them."""
    c2w, K, width, height = cameras(walkthrough_dir)
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    vertices, edges = [], []
    for i in range(len(c2w)):
        rays = np.stack([(corners[:, 0] - K[i, 0, 2]) / K[i, 0, 0], (corners[:, 1] - K[i, 1, 2]) / K[i, 1, 1],
                         np.ones(4)], axis=1) * depth_m
        local = np.vstack([np.zeros(3), rays])
        base = len(vertices) * 5
        vertices.append(local @ c2w[i, :3, :3].T + c2w[i, :3, 3])
        edges += [(base, base + k) for k in range(1, 5)] + [(base + k, base + k % 4 + 1) for k in range(1, 5)]
    world = np.concatenate(vertices) if vertices else np.zeros((0, 3))
    return (world @ OPENCV_WORLD_TO_BLENDER[:3, :3].T).astype(np.float32), edges


def frame_file(walkthrough_dir: str, index: int) -> str:
    return os.path.join(walkthrough_dir, "frames", FRAME_NAME.format(index))
